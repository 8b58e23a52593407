package modbus

import (
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	mbserver "github.com/simonvetter/modbus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/devstat"
	ftest "github.com/ferry-edge/ferry/internal/testutil"
)

func plannedRequests(drv *Driver) []RequestPlan {
	var out []RequestPlan
	for _, lp := range drv.Plan() {
		for _, dp := range lp.Devices {
			out = append(out, dp.Requests...)
		}
	}
	return out
}

func sameRequests(t *testing.T, got []seenReq, want []RequestPlan) {
	t.Helper()
	key := func(unit uint8, table string, a, n uint16) string {
		return RequestPlan{Unit: unit, Table: table, Start: a, Count: n}.String()
	}
	var g, w []string
	for _, r := range got {
		g = append(g, key(r.unit, r.table, r.addr, r.qty))
	}
	for _, r := range want {
		w = append(w, key(r.Unit, r.Table, r.Start, r.Count))
	}
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Fatalf("requests on the wire:\n  %v\nplanned:\n  %v", g, w)
	}
}

// TestScanCostsPlannedRequests: every scan costs exactly the planned
// requests, which are the ones the server sees.
func TestScanCostsPlannedRequests(t *testing.T) {
	b := newBank()
	b.fill(1, 0, 400, func(a int) uint16 { return uint16(a) })
	b.setRegs(1, true, 0, 1, 2, 3, 4)
	b.setBits(1, true, 0, true, false, true, true, false, true, false, true, true, true)
	srv := startServer(t, b)
	points := []Point{
		hr("a", 0, "uint16"), hr("b", 1, "float32"), hr("c", 8, "uint16"), // one request 0..8
		hr("d", 100, "uint32"), hr("e", 200, "uint16"), // far apart: two more
		hr("f", 300, "string"), // string of 20 registers at 300
		{Name: "g", Table: "input", Address: 2},
		{Name: "h", Table: "coil", Address: 1}, {Name: "i", Table: "coil", Address: 9},
	}
	points[5].Length = 20
	const scans = 5
	counts := make([]int, 0, scans)
	var mu sync.Mutex
	col := newCollector()
	col.hook = func(s ferry.Scan) {
		mu.Lock()
		counts = append(counts, b.count())
		mu.Unlock()
	}
	drv := newDriver(t, Options{}, dev("plc", srv.URL(), 1, 20*time.Millisecond, points...))
	planned := plannedRequests(drv)
	if len(planned) != 6 {
		t.Fatalf("planned %d requests, want 6: %v", len(planned), planned)
	}
	stop := run(t, drv, col)
	for i := 0; i < scans; i++ {
		if s := col.next(t, "plc"); !allGood(s) {
			t.Fatalf("scan %d not all good: %+v", i, s.Samples)
		}
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < scans; i++ {
		if counts[i] != (i+1)*len(planned) {
			t.Fatalf("after scan %d the server saw %d requests, want %d (counts %v)", i+1, counts[i], (i+1)*len(planned), counts)
		}
	}
	sameRequests(t, b.requests()[:len(planned)], planned)
}

// TestHoleOnlyHolePointsBad: a merged request over an unmapped range is
// split; only the points inside are Bad; from the next poll on the request
// count is minimal and the device sees no more exceptions.
func TestHoleOnlyHolePointsBad(t *testing.T) {
	b := newBank()
	b.fill(1, 0, 20, func(a int) uint16 { return uint16(1000 + a) })
	b.fill(1, 30, 50, func(a int) uint16 { return uint16(1000 + a) })
	srv := startServer(t, b)
	points := []Point{
		hr("a", 0, "uint16"), hr("b", 5, "uint32"), hr("c", 18, "uint16"),
		hr("hole1", 22, "uint16"), hr("hole2", 25, "uint32"),
		hr("d", 30, "uint16"), hr("e", 35, "uint32"), hr("f", 41, "uint16"),
	}
	d := dev("press", srv.URL(), 1, 20*time.Millisecond, points...)
	d.Config.MaxGap = 20
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	ds := devstat.NewMetrics(reg)
	drv := newDriver(t, Options{Metrics: m, Devices: ds}, d)
	if n := len(plannedRequests(drv)); n != 1 {
		t.Fatalf("planned %d requests, want the one merged request", n)
	}
	col := newCollector()
	counts := make(chan int, 100)
	col.hook = func(ferry.Scan) { counts <- b.count() }
	stop := run(t, drv, col)

	check := func(s ferry.Scan) {
		t.Helper()
		for _, x := range s.Samples {
			hole := x.Point == "hole1" || x.Point == "hole2"
			switch {
			case hole && (x.Quality.Status != ferry.Bad || x.Quality.Reason != ferry.ReasonIllegalAddress):
				t.Errorf("%s: %v, want bad: illegal data address", x.Point, x.Quality)
			case !hole && !x.Quality.IsGood():
				t.Errorf("%s: %v, want good", x.Point, x.Quality)
			}
		}
		if v := sample(t, s, "e").Value.Uint64(); v != uint64(1035)<<16|1036 {
			t.Errorf("e = %d", v)
		}
	}
	first := col.next(t, "press")
	check(first)
	firstCount := <-counts
	var steady int
	for i := 0; i < 3; i++ {
		check(col.next(t, "press"))
		n := <-counts
		if i > 0 && n-firstCount != steady*(i+1) {
			t.Errorf("poll %d cost %d requests, want %d", i+2, n-firstCount-steady*i, steady)
		}
		if i == 0 {
			steady = n - firstCount
		}
	}
	stop()
	if steady != 2 {
		t.Errorf("steady state: %d requests per poll, want 2 (0..18 and 30..42)", steady)
	}
	if got := len(plannedRequests(drv)); got != steady {
		t.Errorf("plan says %d requests, the device saw %d", got, steady)
	}
	for _, r := range b.requests()[firstCount:] {
		if r.err != nil {
			t.Errorf("steady state request %v got %v", r, r.err)
		}
	}
	bad := drv.Plan()[0].Devices[0].Bad
	if len(bad) != 2 || bad[0].Points[0] != "hole1" || bad[1].Points[0] != "hole2" {
		t.Errorf("learned bad ranges %v", bad)
	}
	if v := testutil.ToFloat64(m.badRanges.WithLabelValues("press")); v != 2 {
		t.Errorf("ferry_modbus_bad_ranges = %v, want 2", v)
	}
	if v := testutil.ToFloat64(m.splits.WithLabelValues("press")); v < 1 {
		t.Errorf("ferry_modbus_splits_total = %v", v)
	}
	if v := testutil.ToFloat64(m.planned.WithLabelValues("press")); v != 2 {
		t.Errorf("ferry_modbus_planned_requests = %v, want 2", v)
	}
}

// TestGapNotBridgedAgain: the device refuses a gap between points (no
// point inside): every point stays Good and the gap is not bridged again.
func TestGapNotBridgedAgain(t *testing.T) {
	b := newBank()
	b.fill(1, 0, 20, func(a int) uint16 { return uint16(a) })
	b.fill(1, 30, 50, func(a int) uint16 { return uint16(a) })
	srv := startServer(t, b)
	d := dev("press", srv.URL(), 1, 20*time.Millisecond, hr("a", 15, "uint16"), hr("b", 35, "uint16"), hr("c", 36, "uint16"))
	d.Config.MaxGap = 25
	drv := newDriver(t, Options{}, d)
	col := newCollector()
	stop := run(t, drv, col)
	for i := 0; i < 3; i++ {
		if s := col.next(t, "press"); !allGood(s) {
			t.Fatalf("scan %d: %+v", i, s.Samples)
		}
	}
	stop()
	dp := drv.Plan()[0].Devices[0]
	if len(dp.Requests) != 2 || len(dp.Bad) != 1 || !dp.Bad[0].Gap || dp.Bad[0].Start != 16 || dp.Bad[0].Count != 19 {
		t.Fatalf("plan %+v", dp)
	}
}

// TestDeviceRefusingLargeRequests: a device that answers "illegal data
// value" above 10 registers is read in smaller requests, all Good.
func TestDeviceRefusingLargeRequests(t *testing.T) {
	b := newBank()
	b.fill(1, 0, 60, func(a int) uint16 { return uint16(a) })
	b.maxRegs = 10
	srv := startServer(t, b)
	var points []Point
	for a := 0; a < 60; a += 2 {
		points = append(points, hr("r"+itoa(a), uint16(a), "uint32"))
	}
	drv := newDriver(t, Options{}, dev("meter", srv.URL(), 1, 20*time.Millisecond, points...))
	col := newCollector()
	stop := run(t, drv, col)
	for i := 0; i < 3; i++ {
		s := col.next(t, "meter")
		if !allGood(s) {
			t.Fatalf("scan %d: %+v", i, s.Samples)
		}
		if v := sample(t, s, "r58").Value.Uint64(); v != 58<<16|59 {
			t.Fatalf("r58 = %d", v)
		}
	}
	before := b.count()
	col.next(t, "meter")
	stop()
	plan := plannedRequests(drv)
	for _, r := range plan {
		if r.Count > 10 {
			t.Errorf("planned request of %d registers", r.Count)
		}
	}
	for _, r := range b.requests()[before:] {
		if r.err != nil {
			t.Errorf("steady state request %v: %v", r, r.err)
		}
	}
}

// TestReprobeFindsFixedRange: after the PLC maps the hole, a re-probe
// reads it and the plan is the merged one again.
func TestReprobeFindsFixedRange(t *testing.T) {
	b := newBank()
	b.fill(1, 0, 10, func(a int) uint16 { return uint16(a) })
	srv := startServer(t, b)
	d := dev("press", srv.URL(), 1, 20*time.Millisecond, hr("a", 0, "uint16"), hr("new", 12, "uint16"), hr("b", 9, "uint16"))
	d.Config.Reprobe = 150 * time.Millisecond
	drv := newDriver(t, Options{}, d)
	col := newCollector()
	run(t, drv, col)
	s := col.next(t, "press")
	if q := sample(t, s, "new").Quality; q.Reason != ferry.ReasonIllegalAddress {
		t.Fatalf("new: %v", q)
	}
	if n := len(plannedRequests(drv)); n != 1 {
		t.Fatalf("%d requests planned after learning, want 1 (0..9)", n)
	}
	b.fill(1, 10, 13, func(a int) uint16 { return 77 })
	s = col.waitFor(t, "press", "re-probe reads the fixed range", func(s ferry.Scan) bool { return sample(t, s, "new").Quality.IsGood() })
	if v := sample(t, s, "new").Value.Uint64(); v != 77 {
		t.Fatalf("new = %d", v)
	}
	dp := drv.Plan()[0].Devices[0]
	if len(dp.Requests) != 1 || dp.Requests[0].Count != 13 || len(dp.Bad) != 0 {
		t.Fatalf("plan after re-probe %+v", dp)
	}
}

// TestOtherExceptionsNotLearned: exceptions other than 0x02/0x03 make the
// request's points Bad with the exception's name, without splitting or
// learning; the device recovers when the exception stops.
func TestOtherExceptionsNotLearned(t *testing.T) {
	b := newBank()
	b.fill(1, 0, 10, func(a int) uint16 { return uint16(a) })
	srv := startServer(t, b)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	drv := newDriver(t, Options{Metrics: m}, dev("press", srv.URL(), 1, 20*time.Millisecond, hr("a", 0, "uint16"), hr("b", 5, "uint16")))
	b.setFail(mbserver.ErrServerDeviceBusy)
	col := newCollector()
	run(t, drv, col)
	for i := 0; i < 2; i++ {
		s := col.next(t, "press")
		for _, x := range s.Samples {
			if x.Quality.Reason != "server device busy" {
				t.Fatalf("%s: %v", x.Point, x.Quality)
			}
		}
	}
	if v := testutil.ToFloat64(m.splits.WithLabelValues("press")); v != 0 {
		t.Errorf("%v splits on device busy", v)
	}
	if dp := drv.Plan()[0].Devices[0]; len(dp.Bad) != 0 || len(dp.Requests) != 1 {
		t.Errorf("plan changed: %+v", dp)
	}
	b.setFail(nil)
	col.waitFor(t, "press", "recovery", allGood)
	if v := testutil.ToFloat64(m.requests.WithLabelValues("press", resultException)); v < 2 {
		t.Errorf("exception requests counted %v", v)
	}
}

// TestUnknownUnitIsTimeout: a gateway answering "target device failed to
// respond" (0x0B) makes the unit's points Bad with reason timeout.
func TestUnknownUnitIsTimeout(t *testing.T) {
	b := newBank()
	b.fill(1, 0, 10, func(a int) uint16 { return uint16(a) })
	srv := startServer(t, b)
	reg := prometheus.NewRegistry()
	ds := devstat.NewMetrics(reg)
	drv := newDriver(t, Options{Devices: ds}, dev("ghost", srv.URL(), 9, 20*time.Millisecond, hr("a", 0, "uint16")))
	col := newCollector()
	run(t, drv, col)
	s := col.next(t, "ghost")
	if q := s.Samples[0].Quality; q.Reason != ferry.ReasonTimeout {
		t.Fatalf("quality %v, want bad: timeout", q)
	}
	if st := drv.DeviceStatus()[0]; st.Connected || st.Errors[ferry.ReasonTimeout] == 0 {
		t.Fatalf("status %+v", st)
	}
}

// TestReprobeInconclusive: a re-probe that fails for another reason
// (the device is busy) proves nothing: the learned ranges are kept.
func TestReprobeInconclusive(t *testing.T) {
	b := newBank()
	b.fill(1, 0, 10, func(a int) uint16 { return uint16(a) })
	srv := startServer(t, b)
	d := dev("press", srv.URL(), 1, 20*time.Millisecond, hr("a", 0, "uint16"), hr("hole", 12, "uint16"))
	d.Config.Reprobe = 200 * time.Millisecond
	var logs ftest.SyncBuffer
	lg := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	drv := newDriver(t, Options{Metrics: m, Logger: lg}, d)
	col := newCollector()
	run(t, drv, col)
	col.next(t, "press") // learns the hole
	col.next(t, "press")
	if v := testutil.ToFloat64(m.reprobes.WithLabelValues("press")); v != 0 {
		t.Fatalf("re-probed %v times right after learning", v)
	}
	b.setFail(mbserver.ErrServerDeviceBusy)
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(m.reprobes.WithLabelValues("press")) < 1 {
		col.next(t, "press")
		if time.Now().After(deadline) {
			t.Fatal("no re-probe")
		}
	}
	col.next(t, "press")
	b.setFail(nil)
	s := col.waitFor(t, "press", "a good again", func(s ferry.Scan) bool { return sample(t, s, "a").Quality.IsGood() })
	if q := sample(t, s, "hole").Quality; q.Reason != ferry.ReasonIllegalAddress {
		t.Errorf("hole: %v", q)
	}
	if dp := drv.Plan()[0].Devices[0]; len(dp.Bad) != 1 || len(dp.Requests) != 1 {
		t.Errorf("plan after an inconclusive re-probe: %+v", dp)
	}
	if strings.Contains(logs.String(), "readable again") {
		t.Errorf("logged a range as readable after an inconclusive re-probe:\n%s", logs.String())
	}
}
