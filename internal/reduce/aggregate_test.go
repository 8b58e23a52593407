package reduce

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
)

// aggConfig aggregates d1.p1 over 10s windows.
func aggConfig(keepRaw bool, fns ...string) Config {
	return Config{Points: []Point{{Match: "d1.p1", Aggregate: &Aggregate{Window: 10 * time.Second, Functions: fns, KeepRaw: keepRaw}}}}
}

// feed applies one scan per sample of d1.p1 at t0+at and returns what
// went upstream.
func feed(r *Reducer, samples ...ferry.Sample) []ferry.Sample {
	var out []ferry.Sample
	for _, s := range samples {
		s.Device, s.Point = "d1", "p1"
		sc := ferry.Scan{Device: "d1", Time: s.Time, Samples: []ferry.Sample{s}}
		if r.Apply(&sc) {
			out = append(out, sc.Samples...)
		}
	}
	return out
}

func at(sec float64, v ferry.Value) ferry.Sample {
	return ferry.Sample{Value: v, Time: t0.Add(time.Duration(sec * float64(time.Second)))}
}

func fl(sec, v float64) ferry.Sample { return at(sec, ferry.FloatValue(v)) }

// show renders samples as "point=value quality @offset" lines, sorted.
func show(samples []ferry.Sample) string {
	var lines []string
	for _, s := range samples {
		lines = append(lines, fmt.Sprintf("%s=%s %s @%v", s.Point, s.Value, s.Quality, s.Time.Sub(t0)))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func scansSamples(scans []ferry.Scan) []ferry.Sample {
	var out []ferry.Sample
	for _, s := range scans {
		out = append(out, s.Samples...)
	}
	return out
}

func TestAggregateWindows(t *testing.T) {
	r, clk, _ := newReducer(t, aggConfig(false, "min", "max", "mean", "sum", "count", "first", "last"))
	// Window [0s,10s): 4, 2, 6, a Bad sample, a string; it is emitted when
	// the first sample of [10s,20s) arrives, with the window's end as its
	// time. The raw samples do not go upstream.
	out := feed(r, fl(0, 4), fl(3, 2), at(5, ferry.Value{}), fl(9.9, 6))
	out = append(out, feed(r, ferry.Sample{Time: t0.Add(6 * time.Second), Quality: ferry.BadQuality("timeout")}, at(7, ferry.StringValue("x")))...)
	if len(out) != 0 {
		t.Fatalf("raw samples or early aggregates went upstream:\n%s", show(out))
	}
	out = feed(r, fl(10, 100), fl(19, 50))
	want := `p1.count=3 good @10s
p1.first=4 good @10s
p1.last=6 good @10s
p1.max=6 good @10s
p1.mean=4 good @10s
p1.min=2 good @10s
p1.sum=12 good @10s`
	if got := show(out); got != want {
		t.Fatalf("window [0,10):\n%s\nwant\n%s", got, want)
	}
	// [10s,20s) has had no later sample: Flush emits it once its end is
	// Grace past, not before.
	clk.t = t0.Add(20*time.Second + Grace - time.Millisecond)
	if s := r.Flush(); len(s) != 0 {
		t.Fatalf("flushed before the grace: %v", s)
	}
	clk.t = t0.Add(20*time.Second + Grace)
	scans := r.Flush()
	if len(scans) != 1 || scans[0].Device != "d1" || !scans[0].Time.Equal(clk.t) {
		t.Fatalf("flush: %+v", scans)
	}
	if got := show(scans[0].Samples); !strings.Contains(got, "p1.count=2 good @20s") || !strings.Contains(got, "p1.mean=75 good @20s") {
		t.Fatalf("window [10,20):\n%s", got)
	}
	// A late sample of a window already emitted is excluded and counted,
	// never emitted a second time.
	if out := feed(r, fl(15, 1)); len(out) != 0 {
		t.Fatalf("a late sample went upstream: %s", show(out))
	}
	if s := r.Close(); len(s) != 0 {
		t.Fatalf("close with no open window: %v", s)
	}
	// A window holding nothing but Bad samples: count 0, the rest Bad with
	// their reason; still emitted.
	out = feed(r, ferry.Sample{Time: t0.Add(31 * time.Second), Quality: ferry.BadQuality("timeout")}, fl(40, 1))
	want = `p1.count=0 good @40s
p1.first= bad: timeout @40s
p1.last= bad: timeout @40s
p1.max= bad: timeout @40s
p1.mean= bad: timeout @40s
p1.min= bad: timeout @40s
p1.sum= bad: timeout @40s`
	if got := show(out); got != want {
		t.Fatalf("window [30,40) of Bad samples:\n%s\nwant\n%s", got, want)
	}
	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"aggregated", testutil.ToFloat64(r.m.aggregated.WithLabelValues("d1")), 6},
		{"excluded bad", testutil.ToFloat64(r.m.excluded.WithLabelValues("d1", "bad")), 2},
		{"excluded not_number", testutil.ToFloat64(r.m.excluded.WithLabelValues("d1", "not_number")), 2},
		{"excluded late", testutil.ToFloat64(r.m.excluded.WithLabelValues("d1", "late")), 1},
		{"windows", testutil.ToFloat64(r.m.windows.WithLabelValues("d1")), 3},
		{"partial windows", testutil.ToFloat64(r.m.partial.WithLabelValues("d1")), 0},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestAggregateAligned(t *testing.T) {
	for _, tc := range []struct {
		t      time.Time
		w      time.Duration
		starts time.Time
	}{
		{t0.Add(7 * time.Second), 10 * time.Second, t0},
		{t0.Add(59 * time.Second), time.Minute, t0},
		{t0.Add(61 * time.Second), time.Minute, t0.Add(time.Minute)},
		{t0.Add(90 * time.Minute).In(time.FixedZone("x", 5*3600+1800)), time.Hour, t0.Add(time.Hour)},
		{time.Unix(-5, 0), 10 * time.Second, time.Unix(-10, 0)},
	} {
		if got := alignedStart(tc.t, tc.w); !got.Equal(tc.starts) {
			t.Errorf("alignedStart(%v, %v) = %v, want %v", tc.t, tc.w, got, tc.starts)
		}
	}
}

func TestAggregateKeepRaw(t *testing.T) {
	cfg := aggConfig(true, "count")
	cfg.Points[0].Deadband = f64(1)
	r, _, _ := newReducer(t, cfg)
	out := feed(r, fl(0, 1), fl(1, 1.5), fl(2, 3), fl(10, 3))
	want := `p1.count=3 good @10s
p1=1 good @0s
p1=3 good @2s`
	if got := show(out); got != want {
		t.Fatalf("keep_raw:\n%s\nwant\n%s", got, want)
	}
}

// TestAggregateAcrossRestart stops a reducer in the middle of a window
// and starts another, as a restart does: the window is emitted partial at
// the shutdown (timed at the shutdown), the new reducer continues it as a
// new partial one (timed at the window's end), every sample is counted in
// exactly one of them, and the next window is whole again.
func TestAggregateAcrossRestart(t *testing.T) {
	cfg := aggConfig(false, "count", "sum", "mean")
	a, clk, _ := newReducer(t, cfg)
	// The reducer started at t0-30s: [0,10) is seen from its start.
	a.since = t0.Add(-30 * time.Second)
	feed(a, fl(1, 1), fl(2, 2), fl(3, 3), fl(4, 4))
	clk.t = t0.Add(4500 * time.Millisecond)
	closed := a.Close()
	want := `p1.count=4 uncertain: partial window @4.5s
p1.mean=2.5 uncertain: partial window @4.5s
p1.sum=10 uncertain: partial window @4.5s`
	if got := show(scansSamples(closed)); got != want {
		t.Fatalf("at shutdown:\n%s\nwant\n%s", got, want)
	}
	if v := testutil.ToFloat64(a.m.partial.WithLabelValues("d1")); v != 1 {
		t.Errorf("partial windows of the first reducer: %v", v)
	}

	// The restart: a new reducer, started at 5s.
	b, clk2, _ := newReducer(t, cfg)
	clk2.t = t0.Add(5 * time.Second)
	b.since = clk2.t
	out := feed(b, fl(5, 5), fl(6, 6), fl(7, 7), fl(8, 8), fl(9, 9))
	if len(out) != 0 {
		t.Fatalf("before the window's end: %s", show(out))
	}
	out = feed(b, fl(10, 10))
	want = `p1.count=5 uncertain: partial window @10s
p1.mean=7 uncertain: partial window @10s
p1.sum=35 uncertain: partial window @10s`
	if got := show(out); got != want {
		t.Fatalf("after the restart:\n%s\nwant\n%s", got, want)
	}
	for i := 11; i < 20; i++ {
		feed(b, fl(float64(i), float64(i)))
	}
	out = feed(b, fl(20, 20))
	want = `p1.count=10 good @20s
p1.mean=14.5 good @20s
p1.sum=145 good @20s`
	if got := show(out); got != want {
		t.Fatalf("the next window:\n%s\nwant\n%s", got, want)
	}

	// A shutdown after a window's end but before its flush: the window is
	// whole, emitted at its end, not partial.
	clk2.t = t0.Add(30*time.Second + time.Second/2)
	feed(b, fl(29, 1))
	want = `p1.count=2 good @30s
p1.mean=10.5 good @30s
p1.sum=21 good @30s`
	if got := show(scansSamples(b.Close())); got != want {
		t.Fatalf("closed after the end:\n%s\nwant\n%s", got, want)
	}
}

// TestUpdate checks a reload: unchanged points keep their state, a
// changed one starts afresh (its open window emitted partial and
// continued as a new partial one, its next sample sent).
func TestUpdate(t *testing.T) {
	cfg := Config{Points: []Point{
		{Match: "d1.p1", Aggregate: &Aggregate{Window: 10 * time.Second, Functions: []string{"count"}}},
		{Match: "d1.p2", Deadband: f64(10)},
		{Match: "d1.p3", Deadband: f64(10)},
	}}
	r, clk, _ := newReducer(t, cfg)
	r.since = t0.Add(-time.Minute)
	apply := func(sec float64, v float64) []ferry.Sample {
		tm := t0.Add(time.Duration(sec * float64(time.Second)))
		sc := ferry.Scan{Device: "d1", Time: tm}
		for _, p := range []string{"p1", "p2", "p3"} {
			sc.Samples = append(sc.Samples, ferry.Sample{Device: "d1", Point: p, Value: ferry.FloatValue(v), Time: tm})
		}
		r.Apply(&sc)
		return sc.Samples
	}
	if got := show(apply(1, 1)); got != "p2=1 good @1s\np3=1 good @1s" {
		t.Fatalf("first scan:\n%s", got)
	}
	apply(2, 2)
	// Unchanged config: nothing happens.
	clk.t = t0.Add(3 * time.Second)
	if s, err := r.Update(cfg); err != nil || len(s) != 0 {
		t.Fatalf("update with the same config: %v %v", s, err)
	}
	if got := show(apply(3, 3)); got != "" {
		t.Fatalf("after an unchanged update:\n%s", got)
	}
	// p1's window and p3's deadband change; p2 stays.
	changed := Config{Points: []Point{
		{Match: "d1.p1", Aggregate: &Aggregate{Window: 10 * time.Second, Functions: []string{"count", "max"}}},
		{Match: "d1.p2", Deadband: f64(10)},
		{Match: "d1.p3", Deadband: f64(20)},
	}}
	clk.t = t0.Add(3500 * time.Millisecond)
	s, err := r.Update(changed)
	if err != nil {
		t.Fatal(err)
	}
	if got := show(scansSamples(s)); got != "p1.count=3 uncertain: partial window @3.5s" {
		t.Fatalf("update emitted:\n%s", got)
	}
	if got := show(apply(4, 4)); got != "p3=4 good @4s" {
		t.Fatalf("after the update:\n%s", got)
	}
	if got := show(apply(10, 5)); got != "p1.count=1 uncertain: partial window @10s\np1.max=4 uncertain: partial window @10s" {
		t.Fatalf("the window continued after the update:\n%s", got)
	}
}
