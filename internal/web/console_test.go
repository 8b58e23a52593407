package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/devstat"
	"github.com/ferry-edge/ferry/internal/sinks"
	"github.com/ferry-edge/ferry/rules"
)

// newConsole returns a server of opts on a loopback address (not
// listening: tests serve its Handler with httptest); sparklines default to
// DefaultSparklines.
func newConsole(t *testing.T, cat Catalog, opts Options) *Server {
	t.Helper()
	opts.Catalog = cat
	opts.Config.Listen = "127.0.0.1:0"
	if opts.Config.Sparklines == 0 {
		opts.Config.Sparklines = DefaultSparklines
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fixedAlerts is an Alerts whose active alerts never change.
type fixedAlerts []ferry.Alert

func (f fixedAlerts) Active() []ferry.Alert { return f }

func (f fixedAlerts) Ack(id, by string) (ferry.Alert, error) {
	return ferry.Alert{}, ferry.ErrAlertNotFound
}

// getJSON fetches url and decodes its JSON into v; it returns the status.
func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q", url, ct)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v: %s", url, err, b)
		}
	}
	return resp.StatusCode
}

func TestDevicesAPI(t *testing.T) {
	clk := &testClock{t0}
	m := devstat.NewMetrics(prometheus.NewRegistry())
	press := m.Device("modbus", "press1", "tcp://10.0.0.21:502", nil, clk.Now)
	press.Connected()
	press.Polled(t0, 1500*time.Microsecond, nil)
	press.Error("illegal data address", errors.New("exception 0x02"))
	clk.t = t0.Add(time.Minute)
	env := m.Device("mqtt", "env", "tcp://broker:1883 sensors/env", nil, clk.Now)
	env.Lost(fmt.Errorf("dial: %w", syscall.ECONNREFUSED))
	extra := m.Device("opcua", "boiler", "opc.tcp://boiler:4840", nil, clk.Now) // not in the catalog: still listed

	cat := testCatalog()
	cat.Devices = append(cat.Devices, DeviceInfo{Name: "spare", Protocol: "modbus"}) // configured, no driver
	c := newConsole(t, cat, Options{
		Now:     clk.Now,
		Devices: func() []ferry.DeviceStatus { return []ferry.DeviceStatus{env.Status(), extra.Status(), press.Status()} },
		Alerts:  fixedAlerts{{ID: "a", Device: "press1"}, {ID: "b", Device: "press1"}, {ID: "c", Device: "env"}},
	})
	c.Observe(scan("press1", t0,
		ferry.Sample{Point: "oil_temp", Value: ferry.FloatValue(61)},
		ferry.Sample{Point: "running", Value: ferry.BoolValue(true)},
		ferry.Sample{Point: "label", Quality: ferry.BadQuality("illegal data address")},
	))
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()

	var devs []Device
	if code := getJSON(t, srv.URL+"/api/devices", &devs); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	want := []struct {
		name, state, protocol string
		points, alerts        int
		quality               Counts
		errors                map[string]uint64
	}{
		{"press1", "connected", "modbus", 3, 2, Counts{2, 0, 1}, map[string]uint64{"illegal data address": 1}},
		{"env", "lost", "mqtt", 1, 1, Counts{}, map[string]uint64{ferry.ReasonConnRefused: 1}},
		{"spare", "not running", "modbus", 0, 0, Counts{}, nil},
		{"boiler", "connecting", "opcua", 0, 0, Counts{}, nil},
	}
	if len(devs) != len(want) {
		t.Fatalf("got %d devices, want %d: %+v", len(devs), len(want), devs)
	}
	for i, w := range want {
		d := devs[i]
		if d.Device != w.name || d.State != w.state || d.Protocol != w.protocol || d.Points != w.points || d.Alerts != w.alerts || d.Quality != w.quality {
			t.Errorf("device %d: %+v, want %+v", i, d, w)
		}
		if fmt.Sprint(d.Errors) != fmt.Sprint(w.errors) {
			t.Errorf("%s errors %v, want %v", d.Device, d.Errors, w.errors)
		}
	}
	if p := devs[0]; p.PollMS != 1.5 || !p.LastPoll.Equal(t0) || p.Description != "hydraulic press" || p.Endpoint != "tcp://10.0.0.21:502" || p.Scans != 1 {
		t.Errorf("press1: poll %v ms at %v, description %q, endpoint %q, scans %d", p.PollMS, p.LastPoll, p.Description, p.Endpoint, p.Scans)
	}
	if e := devs[1]; !e.Since.Equal(t0.Add(time.Minute)) || !strings.Contains(e.LastError, "connection refused") {
		t.Errorf("env: since %v, last error %q", e.Since, e.LastError)
	}
}

func TestPointsAPI(t *testing.T) {
	clk := &testClock{t0}
	c := newConsole(t, testCatalog(), Options{Now: clk.Now, Step: time.Second, Config: Config{Sparklines: 30 * time.Second}})
	c.store.Points("", true) // viewed: the points get sparklines
	for i := range 5 {
		at := t0.Add(time.Duration(i) * time.Second)
		c.Observe(scan("press1", at, ferry.Sample{Point: "oil_temp", Value: ferry.FloatValue(60 + float64(i))}))
	}
	clk.t = t0.Add(4 * time.Second)
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()

	tests := []struct {
		name      string
		query     string
		wantCode  int
		wantN     int
		wantSpark bool
	}{
		{"all", "", http.StatusOK, 4, true},
		{"one device", "?device=press1", http.StatusOK, 3, true},
		{"no sparklines", "?device=press1&spark=0", http.StatusOK, 3, false},
		{"unknown device", "?device=nope", http.StatusNotFound, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var raw json.RawMessage
			code := getJSON(t, srv.URL+"/api/points"+tt.query, &raw)
			if code != tt.wantCode {
				t.Fatalf("status %d, want %d: %s", code, tt.wantCode, raw)
			}
			if code != http.StatusOK {
				if !strings.Contains(string(raw), `unknown device \"nope\"`) {
					t.Errorf("error body %s", raw)
				}
				return
			}
			var pts []struct {
				Device, Point, Quality, Unit string
				Seen                         bool
				Value                        any
				Spark                        *struct {
					StepMS         int64 `json:"step_ms"`
					Min, Max, Last []*float64
				}
			}
			if err := json.Unmarshal(raw, &pts); err != nil {
				t.Fatal(err)
			}
			if len(pts) != tt.wantN {
				t.Fatalf("%d points, want %d", len(pts), tt.wantN)
			}
			oil := pts[0]
			if oil.Point != "oil_temp" || oil.Value != 64.0 || oil.Quality != "good" || oil.Unit != "degC" || !oil.Seen {
				t.Errorf("oil_temp: %+v", oil)
			}
			if (oil.Spark != nil) != tt.wantSpark {
				t.Fatalf("spark present %v, want %v", oil.Spark != nil, tt.wantSpark)
			}
			if oil.Spark != nil {
				sp := oil.Spark
				if sp.StepMS != 1000 || len(sp.Last) != 30 || sp.Last[0] != nil || sp.Last[29] == nil || *sp.Last[29] != 64 || *sp.Last[25] != 60 {
					t.Errorf("sparkline step %d, %d buckets, last %v", sp.StepMS, len(sp.Last), sp.Last[25:])
				}
			}
			if running := pts[1]; running.Seen || running.Value != nil || running.Quality != "" {
				t.Errorf("a point without samples: %+v", running)
			}
		})
	}
}

// TestAlertsAPI serves the console and the alert API on a real rule
// engine: the alert list, acknowledge and the
// console's history of transitions.
func TestAlertsAPI(t *testing.T) {
	var c *Server
	eng, err := rules.New([]rules.Rule{{Name: "oil_hot", When: "press1.oil_temp > 80", Clear: "press1.oil_temp < 75", Severity: "critical"}},
		rules.Options{Emit: func(a ferry.Alert) { c.Alert(a) }})
	if err != nil {
		t.Fatal(err)
	}
	var skc sinks.Config
	skc.SetDefaults()
	skc.Log.Enabled = false
	sk, err := sinks.New(skc, sinks.Options{Gateway: "gw1"})
	if err != nil {
		t.Fatal(err)
	}
	c = newConsole(t, testCatalog(), Options{Gateway: "gw1", Alerts: eng, Stream: func() AlertStream { return sk.Stream() }, History: 3})
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()

	process := func(v float64) {
		sc := scan("press1", time.Now(), ferry.Sample{Point: "oil_temp", Value: ferry.FloatValue(v)})
		c.Observe(sc)
		eng.Process(sc)
	}
	process(85)
	var active []ferry.AlertJSON
	getJSON(t, srv.URL+"/api/alerts", &active)
	if len(active) != 1 || active[0].Rule != "oil_hot" || active[0].State != "raised" || active[0].Gateway != "gw1" {
		t.Fatalf("active alerts: %+v", active)
	}
	id := active[0].ID

	// The devices page counts it.
	var devs []Device
	getJSON(t, srv.URL+"/api/devices", &devs)
	if devs[0].Device != "press1" || devs[0].Alerts != 1 {
		t.Errorf("press1 alerts %d, want 1", devs[0].Alerts)
	}

	ack := func(id, body string) (int, ferry.AlertJSON) {
		resp, err := http.Post(srv.URL+"/api/alerts/"+id+"/ack", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a ferry.AlertJSON
		_ = json.NewDecoder(resp.Body).Decode(&a)
		return resp.StatusCode, a
	}
	if code, _ := ack("nope", `{"by":"x"}`); code != http.StatusNotFound {
		t.Errorf("ack unknown id: %d, want 404", code)
	}
	code, a := ack(id, `{"by":"line tech"}`)
	if code != http.StatusOK || a.State != "acknowledged" || a.Labels[rules.AckLabel] != "line tech" {
		t.Fatalf("ack: %d %+v", code, a)
	}
	process(70) // cleared

	var hist []ferry.AlertJSON
	getJSON(t, srv.URL+"/api/alerts/history", &hist)
	var states []string
	for _, h := range hist {
		if h.ID != id || h.Gateway != "gw1" {
			t.Errorf("history entry %+v", h)
		}
		states = append(states, h.State)
	}
	if got := strings.Join(states, ","); got != "cleared,acknowledged,raised" {
		t.Errorf("history states %s, want newest first", got)
	}

	// The history is bounded (3 here): the oldest goes.
	process(85)
	getJSON(t, srv.URL+"/api/alerts/history", &hist)
	if len(hist) != 3 || hist[0].State != "raised" || hist[0].ID == id || hist[2].State != "acknowledged" {
		t.Errorf("bounded history: %+v", hist)
	}
}

func TestHistoryRing(t *testing.T) {
	h := NewHistory(3)
	if got := h.List(); len(got) != 0 {
		t.Fatalf("empty history: %v", got)
	}
	for i := range 5 {
		h.Add(ferry.Alert{ID: fmt.Sprint(i)})
		got := h.List()
		var ids []string
		for _, a := range got {
			ids = append(ids, a.ID)
		}
		want := []string{"0"}
		switch i {
		case 1:
			want = []string{"1", "0"}
		case 2:
			want = []string{"2", "1", "0"}
		case 3:
			want = []string{"3", "2", "1"}
		case 4:
			want = []string{"4", "3", "2"}
		}
		if strings.Join(ids, ",") != strings.Join(want, ",") {
			t.Errorf("after %d adds: %v, want %v", i+1, ids, want)
		}
	}
}

func TestPageAndAssets(t *testing.T) {
	c := newConsole(t, Catalog{}, Options{})
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	tests := []struct {
		name, method, path string
		header             map[string]string
		wantCode           int
		wantType, wantBody string
	}{
		{"page", "GET", "/", nil, 200, "text/html; charset=utf-8", "<title>ferry console</title>"},
		{"script", "GET", "/assets/app.js", nil, 200, "text/javascript; charset=utf-8", "EventSource"},
		{"style", "GET", "/assets/style.css", nil, 200, "text/css; charset=utf-8", "@media (max-width: 720px)"},
		{"icon", "GET", "/assets/icon.svg", nil, 200, "image/svg+xml", "<svg"},
		{"head", "HEAD", "/", nil, 200, "text/html; charset=utf-8", ""},
		{"unknown asset", "GET", "/assets/nope.js", nil, 404, "text/plain; charset=utf-8", "not found"},
		{"not the root", "GET", "/nope", nil, 404, "text/plain; charset=utf-8", "not found"},
		{"post refused", "POST", "/", nil, 405, "text/plain; charset=utf-8", ""},
		{"revalidated", "GET", "/assets/app.js", map[string]string{"If-None-Match": c.assets["app.js"].etag}, 304, "text/javascript; charset=utf-8", ""},
		{"changed", "GET", "/assets/app.js", map[string]string{"If-None-Match": `"0000"`}, 200, "text/javascript; charset=utf-8", "EventSource"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantCode)
			}
			// (net/http sends no Content-Type with a 304.)
			if ct := resp.Header.Get("Content-Type"); tt.wantCode != 405 && tt.wantCode != 304 && ct != tt.wantType {
				t.Errorf("Content-Type %q, want %q", ct, tt.wantType)
			}
			if !strings.Contains(string(b), tt.wantBody) {
				t.Errorf("body does not contain %q", tt.wantBody)
			}
			if tt.wantCode == 200 {
				if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "script-src 'self'") {
					t.Errorf("Content-Security-Policy %q", csp)
				}
				if resp.Header.Get("ETag") == "" || resp.Header.Get("Cache-Control") != "no-cache" {
					t.Errorf("ETag %q, Cache-Control %q", resp.Header.Get("ETag"), resp.Header.Get("Cache-Control"))
				}
			}
		})
	}
}

// The gateway has no internet: the page may load nothing from elsewhere
// (no CDN, no web font), and every asset it names must be embedded.
func TestAssetsSelfContained(t *testing.T) {
	url := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s"'<>)]*`)
	ref := regexp.MustCompile(`(?:src|href)="(/assets/[^"]+)"`)
	var total int
	err := fs.WalkDir(assetFS, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assetFS.ReadFile(p)
		if err != nil {
			return err
		}
		total += len(b)
		for _, u := range url.FindAllString(string(b), -1) {
			if u != "http://www.w3.org/2000/svg" {
				t.Errorf("%s refers to %s: the console must not load anything from outside", p, u)
			}
		}
		for _, m := range ref.FindAllStringSubmatch(string(b), -1) {
			if _, err := fs.Stat(assetFS, strings.TrimPrefix(m[1], "/")); err != nil {
				t.Errorf("%s refers to %s, which is not embedded", p, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("embedded assets: %d bytes", total)
}

// TestHealthAPI feeds the health page from a registry holding the series
// ferry's parts register (same names, same types) and checks the rates,
// the latency estimate and the drops computed between two reads.
func TestHealthAPI(t *testing.T) {
	reg := prometheus.NewRegistry()
	acked := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_uplink_acked_total"}, []string{"lane"})
	published := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_uplink_published_total"}, []string{"lane"})
	samples := prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_uplink_samples_total"})
	pipeSamples := prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_pipeline_samples_total"})
	pipeDropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_pipeline_dropped_scans_total"})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_buffer_dropped_total"}, []string{"lane", "reason"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_uplink_errors_total"}, []string{"reason"})
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ferry_uplink_ack_latency_seconds",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}})
	reg.MustRegister(acked, published, samples, pipeSamples, pipeDropped, dropped, errs, latency)
	dropped.WithLabelValues("telemetry", "size") // zero: not reported

	clk := &testClock{t0}
	oldest := t0.Add(-90 * time.Second)
	c := newConsole(t, Catalog{}, Options{Now: clk.Now, Gatherer: reg, Status: func() Status {
		return Status{
			Version: "1.2.3", Gateway: "gw1", Started: t0.Add(-time.Hour),
			Config: ConfigStatus{File: "/etc/ferry/ferry.yaml", Version: "abc", Reload: &Reload{Time: t0, OK: false, Error: "ferry.yaml:3:3: nope"}},
			Buffer: BufferStatus{Lanes: []LaneStatus{{Lane: "alerts"}, {Lane: "telemetry", Records: 10, Bytes: 4096, Oldest: oldest}}},
			Uplink: UplinkStatus{Configured: true, Connected: false, Error: "not connected"},
		}
	}})
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()

	acked.WithLabelValues("telemetry").Add(100)
	var h Health
	getJSON(t, srv.URL+"/api/health", &h)
	if h.Traffic.AckedPerSecond != nil || h.Traffic.Acked != 100 || h.UptimeSeconds != 3600 || h.Config.Reload == nil || h.Config.Reload.OK {
		t.Errorf("first read: %+v", h)
	}
	if l := h.Buffer.Lanes[1]; l.OldestAgeSeconds != 90 || h.Buffer.Lanes[0].OldestAgeSeconds != 0 {
		t.Errorf("lane ages: %+v", h.Buffer.Lanes)
	}

	// Ten seconds later: 50 more messages (one alert) with 400 samples,
	// 100 acks at 1..2 ms and 10 at 0.1..0.25 s; 3 telemetry drops.
	clk.t = t0.Add(10 * time.Second)
	acked.WithLabelValues("telemetry").Add(49)
	acked.WithLabelValues("alerts").Add(1)
	published.WithLabelValues("telemetry").Add(50)
	samples.Add(400)
	pipeSamples.Add(1000)
	pipeDropped.Add(2)
	dropped.WithLabelValues("telemetry", "size").Add(3)
	errs.WithLabelValues("timeout").Inc()
	for range 100 {
		latency.Observe(0.0015)
	}
	for range 10 {
		latency.Observe(0.2)
	}
	getJSON(t, srv.URL+"/api/health", &h)
	tr := h.Traffic
	check := func(name string, got *float64, want float64) {
		t.Helper()
		if got == nil || *got < want-1e-9 || *got > want+1e-9 {
			t.Errorf("%s = %v, want %v", name, deref(got), want)
		}
	}
	check("acked/s", tr.AckedPerSecond, 5)
	check("published/s", tr.PublishedPerSecond, 5)
	check("samples/s", tr.SamplesPerSecond, 40)
	check("pipeline samples/s", h.Pipeline.SamplesPerSecond, 100)
	check("mean latency ms", tr.AckLatencyMeanMS, (100*1.5+10*200)/110.0)
	// The 95th percentile (rank 104.5 of 110) falls in the 0.1..0.25 s
	// bucket, 4.5 of its 10 observations in: 0.1 + 0.15*0.45 s.
	check("p95 latency ms", tr.AckLatencyP95MS, 167.5)
	if tr.WindowSeconds != 10 || h.Pipeline.DroppedScans != 2 || h.Buffer.DroppedTotal != 3 || h.Buffer.Dropped["telemetry"]["size"] != 3 || tr.Errors["timeout"] != 1 {
		t.Errorf("window %v, pipeline drops %d, buffer drops %d %v, errors %v", tr.WindowSeconds, h.Pipeline.DroppedScans, h.Buffer.DroppedTotal, h.Buffer.Dropped, tr.Errors)
	}
	if !h.Uplink.Configured || h.Uplink.Connected || h.Uplink.Error != "not connected" || h.Config.Reload.Error != "ferry.yaml:3:3: nope" {
		t.Errorf("status not passed through: %+v", h.Status)
	}

	// Rates are taken over the last minute only: at 75 s the readings of
	// 0 s and 10 s are forgotten, the one of 40 s is the base.
	clk.t = t0.Add(40 * time.Second)
	getJSON(t, srv.URL+"/api/health", &h)
	clk.t = t0.Add(75 * time.Second)
	acked.WithLabelValues("telemetry").Add(140)
	getJSON(t, srv.URL+"/api/health", &h)
	check("acked/s over the window", h.Traffic.AckedPerSecond, 4)
	if h.Traffic.WindowSeconds != 35 {
		t.Errorf("window %v s, want 35", h.Traffic.WindowSeconds)
	}
	if h.Traffic.AckLatencyMeanMS != nil {
		t.Errorf("no acks in the window: mean latency %v, want null", *h.Traffic.AckLatencyMeanMS)
	}
}

func deref(f *float64) any {
	if f == nil {
		return nil
	}
	return *f
}

func TestQuantile(t *testing.T) {
	b := func(pairs ...float64) []latBucket {
		var out []latBucket
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, latBucket{pairs[i], pairs[i+1]})
		}
		return out
	}
	tests := []struct {
		name      string
		cur, prev []latBucket
		n, q      float64
		want      float64
		wantOK    bool
	}{
		{"first bucket", b(1, 10, 2, 10), nil, 10, 0.5, 0.5, true},
		{"second bucket", b(1, 0, 2, 10), nil, 10, 0.5, 1.5, true},
		{"delta", b(1, 10, 2, 20), b(1, 10, 2, 10), 10, 0.5, 1.5, true},
		{"above the last bound", b(1, 0, 2, 0), nil, 10, 0.95, 2, true},
		{"no observations", b(1, 0), nil, 0, 0.5, 0, false},
		{"no buckets", nil, nil, 10, 0.5, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := quantile(tt.q, tt.cur, tt.prev, tt.n)
			if ok != tt.wantOK || got != tt.want {
				t.Errorf("quantile = %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// TestStatusAPI: GET /api/status summarises Status for scripts, with the
// server's version and the uplink as one word or its error.
func TestStatusAPI(t *testing.T) {
	oldest := t0.Add(-time.Minute)
	for _, tc := range []struct {
		name   string
		uplink UplinkStatus
		want   string
	}{
		{"none", UplinkStatus{}, "not configured"},
		{"up", UplinkStatus{Configured: true, Connected: true}, "connected"},
		{"down", UplinkStatus{Configured: true, Error: "dial tcp: connection refused"}, "dial tcp: connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newConsole(t, Catalog{}, Options{Version: "1.2.3", Status: func() Status {
				return Status{
					Version: "ignored", Gateway: "gw1", Site: "plant",
					Config: ConfigStatus{File: "/etc/ferry/ferry.yaml", Version: "abc"},
					Buffer: BufferStatus{Lanes: []LaneStatus{{Lane: "alerts"}, {Lane: "telemetry", Records: 2, Bytes: 300, Oldest: oldest, InFlight: 1}}, FileBytes: 32768, QueueLength: 4},
					Uplink: tc.uplink,
				}
			}})
			srv := httptest.NewServer(c.Handler())
			defer srv.Close()
			resp, err := http.Get(srv.URL + "/api/status")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			want := `{
  "version": "1.2.3",
  "gateway": "gw1",
  "site": "plant",
  "config_file": "/etc/ferry/ferry.yaml",
  "config_version": "abc",
  "buffer": {
    "lanes": [
      {
        "records": 0,
        "bytes": 0,
        "in_flight": 0
      },
      {
        "records": 2,
        "bytes": 300,
        "oldest": "2026-03-01T07:59:00Z",
        "in_flight": 1
      }
    ],
    "file_bytes": 32768,
    "free_bytes": 0,
    "queue_length": 4
  },
  "uplink": ` + quote(tc.want) + "\n}\n"
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || string(b) != want {
				t.Errorf("/api/status = %d %s\n%s\nwant\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), b, want)
			}
		})
	}
}
