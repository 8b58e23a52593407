package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// bigCatalog is a gateway of devices×per points: "press3.temp_17" in °C,
// "press3.pressure_17" in bar, and so on.
func bigCatalog(devices, per int) Catalog {
	var cat Catalog
	kinds := []struct{ name, unit, desc string }{
		{"temp", "°C", "oil temperature"}, {"pressure", "bar", "hydraulic pressure"},
		{"speed", "rpm", "spindle speed"}, {"count", "", "parts made"},
	}
	for d := range devices {
		dev := fmt.Sprintf("press%d", d)
		cat.Devices = append(cat.Devices, DeviceInfo{Name: dev, Protocol: "modbus", Description: fmt.Sprintf("press line %d", d)})
		for p := range per {
			k := kinds[p%len(kinds)]
			cat.Points = append(cat.Points, ferry.PointInfo{
				Device: dev, Point: fmt.Sprintf("%s_%d", k.name, p), Protocol: "modbus", Unit: k.unit,
				Description: k.desc, Source: fmt.Sprintf("unit 1 holding %d", 100+p),
			})
		}
	}
	return cat
}

func TestSearchAPI(t *testing.T) {
	cat := bigCatalog(10, 40)
	cat.Points = append(cat.Points, ferry.PointInfo{Device: "press1", Point: "temp", Protocol: "modbus", Unit: "°C"})
	srv := newConsole(t, cat, Options{})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	get := func(t *testing.T, q string) (int, SearchResult) {
		t.Helper()
		resp, err := http.Get(ts.URL + "/api/search?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var res SearchResult
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, res
	}
	names := func(hits []SearchHit) []string {
		var out []string
		for _, h := range hits {
			out = append(out, h.Device+"."+h.Point)
		}
		return out
	}

	t.Run("name ranks first", func(t *testing.T) {
		_, res := get(t, "q=TEMP&limit=3")
		// 10 devices × 10 temp_N points, plus press1.temp.
		if res.Total != 101 || len(res.Points) != 3 || res.Points[0].Point != "temp" || res.Points[0].Device != "press1" {
			t.Fatalf("q=TEMP: total %d, %v", res.Total, names(res.Points))
		}
		if res.Points[1].Point != "temp_0" || res.Points[1].Device != "press0" {
			t.Errorf("second hit %v, want the first temp_N in catalog order", names(res.Points))
		}
	})
	t.Run("every word must match, in any field", func(t *testing.T) {
		_, res := get(t, "q=press3+bar")
		if res.Total != 10 {
			t.Fatalf("q=press3 bar: %d points, want press3's 10 pressure points: %v", res.Total, names(res.Points))
		}
		for _, h := range res.Points {
			if h.Device != "press3" || h.Unit != "bar" {
				t.Errorf("hit %+v", h)
			}
		}
		if len(res.Devices) != 0 {
			t.Errorf("devices %+v: no device has bar in its name or description", res.Devices)
		}
	})
	t.Run("dotted name, unit, source, description", func(t *testing.T) {
		for q, want := range map[string]string{
			"press7.speed_6":      "press7.speed_6",
			"rpm press2 speed_10": "press2.speed_10",
			"holding 139 press9":  "press9.count_39",
			"parts made press5 3": "press5.count_3",
		} {
			_, res := get(t, "q="+strings.ReplaceAll(q, " ", "+"))
			if len(res.Points) == 0 || res.Points[0].Device+"."+res.Points[0].Point != want {
				t.Errorf("q=%q: %v, want %s first", q, names(res.Points), want)
			}
		}
	})
	t.Run("devices", func(t *testing.T) {
		_, res := get(t, "q=line+4")
		if len(res.Devices) != 1 || res.Devices[0].Device != "press4" || res.Total != 0 {
			t.Errorf("q=line 4: devices %+v, %d points", res.Devices, res.Total)
		}
	})
	t.Run("nothing, empty, bad limit", func(t *testing.T) {
		if code, res := get(t, "q=nosuchthing"); code != 200 || res.Total != 0 || len(res.Points) != 0 {
			t.Errorf("no match: %d %+v", code, res)
		}
		if code, res := get(t, "q="); code != 200 || res.Total != 0 {
			t.Errorf("empty: %d %+v", code, res)
		}
		if code, _ := get(t, "q=a&limit=0"); code != http.StatusBadRequest {
			t.Errorf("limit=0: %d", code)
		}
		if code, _ := get(t, "q="+strings.Repeat("x", 201)); code != http.StatusBadRequest {
			t.Errorf("long q: %d", code)
		}
	})
	t.Run("reload replaces the index", func(t *testing.T) {
		srv.SetCatalog(Catalog{Points: []ferry.PointInfo{{Device: "mixer", Point: "torque", Unit: "Nm"}}})
		if _, res := get(t, "q=nm"); res.Total != 1 || res.Points[0].Point != "torque" {
			t.Errorf("after reload: %+v", res)
		}
		if _, res := get(t, "q=temp"); res.Total != 0 {
			t.Errorf("after reload, old points still found: %v", names(res.Points))
		}
	})
}

func TestDeviceAPI(t *testing.T) {
	cat := bigCatalog(2, 4)
	st := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	srv := newConsole(t, cat, Options{
		Devices: func() []ferry.DeviceStatus {
			return []ferry.DeviceStatus{{Device: "press0", Protocol: "modbus", Endpoint: "tcp://10.0.0.5:502", LastError: "i/o timeout",
				LastPoll: st, PollDuration: 12500 * time.Microsecond, Errors: map[string]uint64{"timeout": 3}}}
		},
		Plan: func(dev string) *DevicePlan {
			if dev != "press0" {
				return nil
			}
			return &DevicePlan{Interval: time.Second, Timeout: 500 * time.Millisecond,
				Requests: []string{"unit 1 holding 100..103 (4 registers) → 4 points: temp_0, pressure_1, speed_2, count_3"}}
		},
	})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	var got map[string]any
	resp, err := http.Get(ts.URL + "/api/devices/press0")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	plan, _ := got["plan"].(map[string]any)
	if got["device"] != "press0" || got["last_error"] != "i/o timeout" || got["poll_ms"] != 12.5 || got["state"] != "lost" || got["points"] != 4.0 ||
		plan == nil || plan["interval_ms"] != 1000.0 || len(plan["requests"].([]any)) != 1 {
		t.Errorf("press0: %v", got)
	}
	resp, err = http.Get(ts.URL + "/api/devices/press1")
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	_ = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if resp.StatusCode != 200 || got["plan"] != nil || got["state"] != "not running" {
		t.Errorf("press1 (no driver, no plan): %d %v", resp.StatusCode, got)
	}
	resp, err = http.Get(ts.URL + "/api/devices/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown device: %d", resp.StatusCode)
	}
}

// BenchmarkSearch10k: one op is one search over 10,000 points (100
// devices of 100), as the search box sends it while an operator types.
func BenchmarkSearch10k(b *testing.B) {
	var x searchIndex
	x.set(bigCatalog(100, 100))
	// What the client would fetch to search on its own: every point.
	all := x.search("", 0)
	for _, p := range x.data().points {
		all.Points = append(all.Points, pointHit(*p.info))
	}
	js, _ := json.Marshal(all)
	b.Logf("the whole list as JSON: %d bytes for %d points", len(js), len(all.Points))
	for _, q := range []string{"temp", "press42 bar", "holding 1999", "zzz"} {
		b.Run(strings.ReplaceAll(q, " ", "_"), func(b *testing.B) {
			for b.Loop() {
				x.search(q, 20)
			}
		})
	}
}

// TestSearchIndexBytesPerPoint bounds the search index's memory for
// 10,000 points, the catalog not counted (the configuration holds it):
// nothing per point until the first search, at most 180 bytes after it.
func TestSearchIndexBytesPerPoint(t *testing.T) {
	cat := bigCatalog(100, 100)
	perPoint := func(from uint64) float64 {
		return (float64(testutil.LiveHeap()) - float64(from)) / float64(len(cat.Points))
	}
	before := testutil.LiveHeap()
	var x searchIndex
	x.set(cat)
	unsearched := perPoint(before)
	if res := x.search("press42 pressure_1", 5); len(res.Points) != 3 || res.Points[0] != (SearchHit{Device: "press42", Point: "pressure_1", Protocol: "modbus", Unit: "bar", Description: "hydraulic pressure", Source: "unit 1 holding 101"}) {
		t.Errorf("search: %+v", res.Points)
	}
	searched := perPoint(before)
	runtime.KeepAlive(cat)
	runtime.KeepAlive(&x)
	t.Logf("%.1f bytes per point before the first search, %.0f after", unsearched, searched)
	if unsearched > 1 {
		t.Errorf("the search index holds %.1f bytes per point before any search, want none", unsearched)
	}
	if searched > 180 {
		t.Errorf("the search index holds %.0f bytes per point, want at most 180", searched)
	}
	// A new catalog drops the old index; the next search builds the new one.
	cat2 := bigCatalog(2, 3)
	x.set(cat2)
	if res := x.search("press1 pressure_1", 5); res.Total != 1 || res.Points[0].Device != "press1" {
		t.Errorf("search after set: %+v", res)
	}
	if res := x.search("press42", 5); res.Total != 0 {
		t.Errorf("the old catalog still answers: %+v", res)
	}
}

// BenchmarkSearchFirst10k: one op is the first search after a catalog of
// 10,000 points is set, which builds the index.
func BenchmarkSearchFirst10k(b *testing.B) {
	cat := bigCatalog(100, 100)
	var x searchIndex
	for b.Loop() {
		x.set(cat)
		x.search("temp", 20)
	}
}
