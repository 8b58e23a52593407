package web

import (
	"encoding/json"
	"math"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testutil"
)

var t0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

// testClock is a settable clock.
type testClock struct{ t time.Time }

func (c *testClock) Now() time.Time { return c.t }

func testCatalog() Catalog {
	return Catalog{
		Devices: []DeviceInfo{
			{Name: "press1", Protocol: "modbus", Description: "hydraulic press"},
			{Name: "env", Protocol: "mqtt"},
		},
		Points: []ferry.PointInfo{
			{Device: "press1", Point: "oil_temp", Protocol: "modbus", Source: "holding 0", Unit: "degC"},
			{Device: "press1", Point: "running", Protocol: "modbus", Source: "coil 0"},
			{Device: "press1", Point: "label", Protocol: "modbus", Source: "holding 34"},
			{Device: "env", Point: "humidity", Protocol: "mqtt", Source: "sensors/env hum", Unit: "%"},
		},
	}
}

func scan(dev string, at time.Time, samples ...ferry.Sample) *ferry.Scan {
	for i := range samples {
		if samples[i].Device == "" {
			samples[i].Device = dev
		}
		if samples[i].Time.IsZero() {
			samples[i].Time = at
		}
	}
	return &ferry.Scan{Device: dev, Time: at, Samples: samples}
}

func pointByName(t *testing.T, pts []Point, dev, name string) Point {
	t.Helper()
	for _, p := range pts {
		if p.Device == dev && p.Point == name {
			return p
		}
	}
	t.Fatalf("no point %s.%s in %+v", dev, name, pts)
	return Point{}
}

func TestStoreCurrentValues(t *testing.T) {
	clk := &testClock{t0}
	s := NewStore(testCatalog(), time.Second, 10, clk.Now)
	s.Points("", true)                     // viewed: the points get sparklines
	src := t0.Add(-300 * time.Millisecond) // the device's own time stamp
	s.Observe(scan("press1", t0,
		ferry.Sample{Point: "oil_temp", Value: ferry.FloatValue(61.5), Time: src},
		ferry.Sample{Point: "running", Value: ferry.BoolValue(true)},
		ferry.Sample{Point: "label", Value: ferry.StringValue("PRESS-1")},
		ferry.Sample{Point: "nope", Value: ferry.IntValue(1)},               // not configured
		ferry.Sample{Device: "ghost", Point: "x", Value: ferry.IntValue(1)}, // unknown device
	))
	// The next poll fails: Bad samples without a value keep the last good one.
	clk.t = t0.Add(time.Second)
	s.Observe(scan("press1", clk.t,
		ferry.Sample{Point: "oil_temp", Quality: ferry.BadQuality(ferry.ReasonTimeout)},
	))
	s.Observe(scan("env", clk.t, ferry.Sample{Point: "humidity", Value: ferry.FloatValue(math.NaN()), Quality: ferry.UncertainQuality("sensor warming up")}))

	if got := s.Unknown(); got != 2 {
		t.Errorf("Unknown() = %d, want 2", got)
	}
	pts, ok := s.Points("", true)
	if !ok || len(pts) != 4 {
		t.Fatalf("Points(all) = %d points, %v; want 4", len(pts), ok)
	}
	tests := []struct {
		name                   string
		dev, point             string
		wantValue              any
		wantQuality, wantReson string
		wantLastGood           any
		wantSpark              bool
	}{
		{"bad keeps last good", "press1", "oil_temp", nil, "bad", ferry.ReasonTimeout, 61.5, true},
		{"bool", "press1", "running", true, "good", "", nil, true},
		{"string has no sparkline", "press1", "label", "PRESS-1", "good", "", nil, false},
		{"NaN as a string", "env", "humidity", "NaN", "uncertain", "sensor warming up", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pointByName(t, pts, tt.dev, tt.point)
			if !p.Seen || p.Value != tt.wantValue || p.Quality != tt.wantQuality || p.Reason != tt.wantReson || p.LastGood != tt.wantLastGood {
				t.Errorf("got seen %v value %#v quality %q reason %q last good %#v; want %#v %q %q %#v",
					p.Seen, p.Value, p.Quality, p.Reason, p.LastGood, tt.wantValue, tt.wantQuality, tt.wantReson, tt.wantLastGood)
			}
			if (p.Spark != nil) != tt.wantSpark {
				t.Errorf("spark %v, want %v", p.Spark != nil, tt.wantSpark)
			}
		})
	}
	oil := pointByName(t, pts, "press1", "oil_temp")
	if !oil.LastGoodTime.Equal(src) || !oil.Updated.Equal(t0.Add(time.Second)) || oil.Unit != "degC" {
		t.Errorf("oil_temp last good time %v (want %v), updated %v, unit %q", oil.LastGoodTime, src, oil.Updated, oil.Unit)
	}
	if _, err := json.Marshal(pts); err != nil {
		t.Fatalf("points do not encode: %v", err)
	}

	// One device, without sparklines; an unknown device.
	pts, ok = s.Points("env", false)
	if !ok || len(pts) != 1 || pts[0].Spark != nil {
		t.Errorf("Points(env, no spark) = %+v, %v", pts, ok)
	}
	if _, ok := s.Points("ghost", true); ok {
		t.Error("Points(ghost) ok, want not found")
	}
}

// sparkOf returns the last values of a point's sparkline, NaN as -1.
func sparkOf(t *testing.T, s *Store, dev, point string) (min, max, last []float32) {
	t.Helper()
	pts, _ := s.Points(dev, true)
	p := pointByName(t, pts, dev, point)
	if p.Spark == nil {
		t.Fatalf("%s.%s has no sparkline", dev, point)
	}
	conv := func(fs floats) []float32 {
		out := make([]float32, len(fs))
		for i, f := range fs {
			if f != f {
				f = -1
			}
			out[i] = f
		}
		return out
	}
	return conv(p.Spark.Min), conv(p.Spark.Max), conv(p.Spark.Last)
}

func eq(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestStoreSparkline(t *testing.T) {
	clk := &testClock{t0}
	s := NewStore(testCatalog(), time.Second, 4, clk.Now)
	s.Points("press1", true) // viewed: its points get sparklines
	obs := func(at time.Duration, v float64) {
		s.Observe(scan("press1", t0.Add(at), ferry.Sample{Point: "oil_temp", Value: ferry.FloatValue(v)}))
	}
	obs(0, 10)
	obs(300*time.Millisecond, 14) // same bucket: min 10, max 14, last 14
	obs(600*time.Millisecond, 12)
	obs(2*time.Second, 20) // bucket 1 stays empty
	clk.t = t0.Add(2500 * time.Millisecond)
	min, max, last := sparkOf(t, s, "press1", "oil_temp")
	if want := []float32{-1, 10, -1, 20}; !eq(last, []float32{-1, 12, -1, 20}) || !eq(min, want) || !eq(max, []float32{-1, 14, -1, 20}) {
		t.Fatalf("sparkline min %v max %v last %v", min, max, last)
	}
	pts, _ := s.Points("press1", true)
	if sp := pointByName(t, pts, "press1", "oil_temp").Spark; sp.StepMS != 1000 || !sp.End.Equal(t0.Add(3*time.Second)) {
		t.Errorf("spark step %d ms, end %v", sp.StepMS, sp.End)
	}

	// The clock steps back a little: folded into the newest bucket.
	obs(1500*time.Millisecond, 5)
	_, _, last = sparkOf(t, s, "press1", "oil_temp")
	if min, _, _ := sparkOf(t, s, "press1", "oil_temp"); !eq(last, []float32{-1, 12, -1, 5}) || min[3] != 5 {
		t.Errorf("after a small step back: last %v min %v", last, min)
	}

	// A silent device: the line runs out as time passes.
	clk.t = t0.Add(4500 * time.Millisecond)
	_, _, last = sparkOf(t, s, "press1", "oil_temp")
	if !eq(last, []float32{-1, 5, -1, -1}) {
		t.Errorf("two seconds later: last %v", last)
	}

	// Far ahead: the ring starts over; far back (an hour): starts over too.
	obs(time.Hour, 30)
	clk.t = t0.Add(time.Hour)
	if _, _, last = sparkOf(t, s, "press1", "oil_temp"); !eq(last, []float32{-1, -1, -1, 30}) {
		t.Errorf("an hour later: last %v", last)
	}
	obs(0, 40)
	clk.t = t0
	if _, _, last = sparkOf(t, s, "press1", "oil_temp"); !eq(last, []float32{-1, -1, -1, 40}) {
		t.Errorf("back an hour: last %v", last)
	}
}

func TestStoreSetCatalog(t *testing.T) {
	clk := &testClock{t0}
	s := NewStore(testCatalog(), time.Second, 4, clk.Now)
	s.Points("press1", true) // viewed: kept across the reload
	s.Observe(scan("press1", t0, ferry.Sample{Point: "oil_temp", Value: ferry.FloatValue(60)}, ferry.Sample{Point: "running", Value: ferry.BoolValue(true)}))

	// Reload: running is removed, vibration added, oil_temp kept with its unit changed.
	cat := testCatalog()
	cat.Points = []ferry.PointInfo{
		{Device: "press1", Point: "vibration", Protocol: "modbus", Unit: "mm/s"},
		{Device: "press1", Point: "oil_temp", Protocol: "modbus", Unit: "°C"},
	}
	s.SetCatalog(cat)
	pts, _ := s.Points("press1", true)
	if len(pts) != 2 || pts[0].Point != "vibration" || pts[1].Point != "oil_temp" {
		t.Fatalf("points after reload: %+v", pts)
	}
	if oil := pts[1]; oil.Value != 60.0 || oil.Unit != "°C" || oil.Spark == nil {
		t.Errorf("oil_temp after reload: value %v unit %q spark %v; want its value and sparkline kept", oil.Value, oil.Unit, oil.Spark != nil)
	}
	if pts[0].Seen {
		t.Error("new point vibration is seen before any sample")
	}
	s.Observe(scan("press1", t0, ferry.Sample{Point: "running", Value: ferry.BoolValue(false)}))
	if got := s.Unknown(); got != 1 {
		t.Errorf("a removed point's sample: Unknown() = %d, want 1", got)
	}
	// env has no points left but stays a configured device.
	if ds := s.devices(); len(ds) != 2 || ds[1].info.Name != "env" || ds[1].points != 0 {
		t.Errorf("devices after reload: %+v", ds)
	}
}

// Observe runs for every scan on the pipeline goroutine: once every
// point has its ring it must not allocate.
func TestStoreObserveDoesNotAllocate(t *testing.T) {
	s := NewStore(testCatalog(), time.Second, DefaultSlots, nil)
	at := t0
	sc := scan("press1", at,
		ferry.Sample{Point: "oil_temp", Value: ferry.FloatValue(61.5)},
		ferry.Sample{Point: "running", Value: ferry.BoolValue(true)},
		ferry.Sample{Point: "label", Value: ferry.StringValue("PRESS-1")},
	)
	s.Observe(sc) // allocates the rings
	allocs := testing.AllocsPerRun(1000, func() {
		at = at.Add(300 * time.Millisecond)
		sc.Time = at
		sc.Samples[0].Value = ferry.FloatValue(float64(at.UnixNano() % 100))
		s.Observe(sc)
	})
	if allocs != 0 {
		t.Errorf("Observe allocates %v times per scan, want 0", allocs)
	}
}

func BenchmarkObserve(b *testing.B) {
	const n = 50
	cat := Catalog{Devices: []DeviceInfo{{Name: "press1", Protocol: "modbus"}}}
	sc := &ferry.Scan{Device: "press1"}
	for i := range n {
		name := "p" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		cat.Points = append(cat.Points, ferry.PointInfo{Device: "press1", Point: name})
		sc.Samples = append(sc.Samples, ferry.Sample{Device: "press1", Point: name, Value: ferry.FloatValue(float64(i))})
	}
	s := NewStore(cat, DefaultStep, DefaultSlots, nil)
	at := t0
	b.ReportAllocs()
	for b.Loop() {
		at = at.Add(100 * time.Millisecond)
		sc.Time = at
		s.Observe(sc)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/sample")
}

// With sparklines off the store keeps values and qualities but no rings.
func TestStoreSparklinesOff(t *testing.T) {
	clk := &testClock{t0}
	s := NewStore(testCatalog(), 0, -1, clk.Now)
	if s.Slots() != 0 {
		t.Fatalf("Slots() = %d, want 0", s.Slots())
	}
	for i := range 10 {
		s.Observe(scan("press1", t0.Add(time.Duration(i)*time.Second), ferry.Sample{Point: "oil_temp", Value: ferry.FloatValue(float64(i))}))
	}
	clk.t = t0.Add(10 * time.Second)
	pts, ok := s.Points("press1", true)
	if !ok {
		t.Fatal("press1 unknown")
	}
	p := pointByName(t, pts, "press1", "oil_temp")
	if p.Spark != nil {
		t.Errorf("spark %+v, want none", p.Spark)
	}
	if !p.Seen || p.Value != 9.0 {
		t.Errorf("value %v (seen %v), want 9", p.Value, p.Seen)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.devs {
		for _, ps := range d.points {
			if ps.ring != nil {
				t.Errorf("%s: a ring of %d buckets", ps.info.Point, len(ps.ring.buckets))
			}
		}
	}
}

// TestStoreRingsOnView: a device nobody has looked at keeps values but
// allocates no sparkline ring; its first view with sparklines starts them
// (that answer has none yet), and they fill from then on. Another device
// stays without.
func TestStoreRingsOnView(t *testing.T) {
	clk := &testClock{t0}
	s := NewStore(testCatalog(), time.Second, 4, clk.Now)
	rings := func() (n int) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, d := range s.order {
			for _, p := range d.points {
				if p.ring != nil {
					n++
				}
			}
		}
		return n
	}
	s.Observe(scan("press1", t0, ferry.Sample{Point: "oil_temp", Value: ferry.FloatValue(60)}))
	s.Observe(scan("env", t0, ferry.Sample{Point: "humidity", Value: ferry.FloatValue(40)}))
	if n := rings(); n != 0 {
		t.Fatalf("%d rings before any view, want 0", n)
	}
	if pts, _ := s.Points("press1", false); pts[0].Value != 60.0 || rings() != 0 {
		t.Fatalf("a view without sparklines: value %v, %d rings; want 60 and none", pts[0].Value, rings())
	}
	if pts, _ := s.Points("press1", true); pts[0].Spark != nil || pts[0].Value != 60.0 {
		t.Fatalf("first view: spark %v value %v; want no sparkline yet and the value", pts[0].Spark, pts[0].Value)
	}
	clk.t = t0.Add(time.Second)
	s.Observe(scan("press1", clk.t, ferry.Sample{Point: "oil_temp", Value: ferry.FloatValue(61)}))
	s.Observe(scan("env", clk.t, ferry.Sample{Point: "humidity", Value: ferry.FloatValue(41)}))
	if n := rings(); n != 1 {
		t.Fatalf("%d rings after press1 was viewed, want 1 (oil_temp)", n)
	}
	if _, _, last := sparkOf(t, s, "press1", "oil_temp"); !eq(last, []float32{-1, -1, -1, 61}) {
		t.Errorf("sparkline after the view: last %v", last)
	}
}

// TestStoreTimes: the packed times read back as the same instants, a UTC
// time stays in UTC, a zero time stays zero, and times outside the range
// of int64 nanoseconds (a device with a wild clock) survive.
func TestStoreTimes(t *testing.T) {
	clk := &testClock{t0}
	s := NewStore(testCatalog(), time.Second, 4, clk.Now)
	local := time.Date(2026, 3, 1, 9, 30, 0, 123456789, time.FixedZone("plant", 3600))
	tests := []struct {
		name     string
		point    string
		src      time.Time
		wantUTC  bool
		wantZero bool
	}{
		{"UTC source time", "oil_temp", time.Date(2026, 3, 1, 7, 59, 59, 999999999, time.UTC), true, false},
		{"other zone reads back in Local", "running", local, false, false},
		{"year 9999", "label", time.Date(9999, 12, 31, 23, 59, 59, 1, time.UTC), true, false},
		{"before 1678", "humidity", time.Date(1601, 1, 1, 0, 0, 0, 0, time.UTC), true, false},
	}
	for _, tt := range tests {
		dev := "press1"
		if tt.point == "humidity" {
			dev = "env"
		}
		s.Observe(&ferry.Scan{Device: dev, Time: t0, Samples: []ferry.Sample{{Device: dev, Point: tt.point, Value: ferry.IntValue(1), Time: tt.src}}})
	}
	pts, _ := s.Points("", false)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := "press1"
			if tt.point == "humidity" {
				dev = "env"
			}
			p := pointByName(t, pts, dev, tt.point)
			if !p.Time.Equal(tt.src) || (p.Time.Location() == time.UTC) != tt.wantUTC {
				t.Errorf("time %v (%v), want %v in UTC %v", p.Time, p.Time.Location(), tt.src, tt.wantUTC)
			}
			if !p.Updated.Equal(t0) || p.Updated.Location() != time.UTC {
				t.Errorf("updated %v (%v), want %v in UTC", p.Updated, p.Updated.Location(), t0)
			}
		})
	}
	// A sample without a time, then Bad: the last good time is zero too.
	s.Observe(scan("env", t0, ferry.Sample{Point: "humidity", Value: ferry.FloatValue(40)}))
	s.Observe(&ferry.Scan{Device: "env", Time: t0, Samples: []ferry.Sample{{Device: "env", Point: "humidity", Quality: ferry.BadQuality(ferry.ReasonTimeout)}}})
	pts, _ = s.Points("env", false)
	if p := pts[0]; !p.Time.IsZero() || !p.LastGoodTime.Equal(t0) || p.LastGood != 40.0 {
		t.Errorf("humidity: time %v last good %v at %v; want zero, 40 at %v", p.Time, p.LastGood, p.LastGoodTime, t0)
	}
	b, err := json.Marshal(pts[0])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["time"]; ok {
		t.Errorf("a zero time is encoded: %s", b)
	}
}

// TestStoreLookup: samples are found whatever their order in the scan (the
// slot after the last one found is only a first guess), a point of another
// device in the scan is found in its own device, a name configured twice
// keeps its first entry.
func TestStoreLookup(t *testing.T) {
	cat := Catalog{Devices: []DeviceInfo{{Name: "a", Protocol: "modbus"}, {Name: "b", Protocol: "modbus"}}}
	names := []string{"m", "c", "x", "a", "q", "b", "z", "k"}
	for _, n := range names {
		cat.Points = append(cat.Points, ferry.PointInfo{Device: "a", Point: n})
	}
	cat.Points = append(cat.Points, ferry.PointInfo{Device: "a", Point: "c", Unit: "second c"}, ferry.PointInfo{Device: "b", Point: "c", Unit: "b's c"})
	s := NewStore(cat, time.Second, 4, nil)
	orders := [][]string{
		names,                                    // configuration order
		{"k", "z", "b", "q", "a", "x", "c", "m"}, // reversed
		{"a", "b", "c", "k", "m", "q", "x", "z"}, // sorted
		{"q", "q", "m", "z", "nope", "c"},        // repeats and an unknown name
	}
	for round, order := range orders {
		sc := &ferry.Scan{Device: "a", Time: t0}
		for _, n := range order {
			sc.Samples = append(sc.Samples, ferry.Sample{Device: "a", Point: n, Value: ferry.IntValue(int64(round*100 + int(n[0])))})
		}
		sc.Samples = append(sc.Samples, ferry.Sample{Device: "b", Point: "c", Value: ferry.IntValue(int64(round))})
		s.Observe(sc)
		pts, _ := s.Points("a", false)
		if len(pts) != len(names) {
			t.Fatalf("device a has %d points, want %d (the second c dropped)", len(pts), len(names))
		}
		for _, n := range order {
			if n == "nope" {
				continue
			}
			p := pointByName(t, pts, "a", n)
			if want := int64(round*100 + int(n[0])); p.Value != want {
				t.Errorf("round %d: a.%s = %v, want %v", round, n, p.Value, want)
			}
		}
		if c := pointByName(t, pts, "a", "c"); c.Unit != "" {
			t.Errorf("a.c has unit %q: the duplicate replaced the first entry", c.Unit)
		}
		bp, _ := s.Points("b", false)
		if len(bp) != 1 || bp[0].Value != int64(round) || bp[0].Unit != "b's c" {
			t.Errorf("round %d: b = %+v", round, bp)
		}
	}
	if got := s.Unknown(); got != 1 {
		t.Errorf("Unknown() = %d, want 1", got)
	}
}

// TestStoreBytesPerPoint bounds the store's memory for 10,000 points with
// values (no sparklines: nobody looked), the catalog not counted (the
// configuration holds it). Issue 20: the layout before (a slot of 344
// bytes with a copy of the point's info, a map entry and a pointer per
// point) measured 417 bytes per point here; this one 152.
func TestStoreBytesPerPoint(t *testing.T) {
	const devices, perDevice = 20, 500
	cat := Catalog{}
	scans := make([]*ferry.Scan, devices)
	for d := range devices {
		dev := "press" + strconv.Itoa(d)
		cat.Devices = append(cat.Devices, DeviceInfo{Name: dev, Protocol: "modbus"})
		scans[d] = &ferry.Scan{Device: dev, Time: t0}
		for i := range perDevice {
			name := "p" + strconv.Itoa(i)
			cat.Points = append(cat.Points, ferry.PointInfo{Device: dev, Point: name, Protocol: "modbus", Source: "holding " + strconv.Itoa(i)})
			scans[d].Samples = append(scans[d].Samples, ferry.Sample{Device: dev, Point: name, Value: ferry.FloatValue(float64(i)), Time: t0})
		}
	}
	before := testutil.LiveHeap()
	s := NewStore(cat, DefaultStep, DefaultSlots, nil)
	for _, sc := range scans {
		s.Observe(sc)
	}
	after := testutil.LiveHeap()
	runtime.KeepAlive(scans) // not counted: the scans are the drivers'
	runtime.KeepAlive(cat)   // nor the catalog: the configuration's
	per := float64(after-before) / (devices * perDevice)
	t.Logf("%.0f bytes per point", per)
	if per > 200 {
		t.Errorf("the store holds %.0f bytes per point, want at most 200", per)
	}
	if pts, _ := s.Points("press7", false); len(pts) != perDevice || pts[42].Value != 42.0 {
		t.Fatalf("press7: %d points", len(pts))
	}
}
