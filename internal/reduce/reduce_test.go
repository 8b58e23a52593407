package reduce

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/setting"
)

// t0 is a window boundary for every window length the tests use.
var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

// clock is an injected clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newReducer(t *testing.T, cfg Config) (*Reducer, *clock, *prometheus.Registry) {
	t.Helper()
	c := &clock{t: t0}
	reg := prometheus.NewRegistry()
	r, err := New(cfg, Options{Registerer: reg, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return r, c, reg
}

func f64(v float64) *float64             { return &v }
func dur(d time.Duration) *time.Duration { return &d }

// step is one sample of point p1 of device d1, read at t0+at.
type step struct {
	at time.Duration
	v  ferry.Value
	q  ferry.Quality
}

func num(at time.Duration, v float64) step { return step{at: at, v: ferry.FloatValue(v)} }

func bad(at time.Duration) step { return step{at: at, q: ferry.BadQuality(ferry.ReasonTimeout)} }

// run applies each step as a scan of its own and returns, per step,
// whether its sample went upstream.
func run(t *testing.T, r *Reducer, steps []step) []bool {
	t.Helper()
	out := make([]bool, len(steps))
	for i, s := range steps {
		sc := ferry.Scan{Device: "d1", Time: t0.Add(s.at), Samples: []ferry.Sample{{Device: "d1", Point: "p1", Value: s.v, Quality: s.q, Time: t0.Add(s.at)}}}
		keep := r.Apply(&sc)
		if keep != (len(sc.Samples) > 0) {
			t.Fatalf("step %d: Apply returned %v with %d samples left", i, keep, len(sc.Samples))
		}
		if keep {
			if got := sc.Samples[0]; !got.Value.Equal(s.v) || got.Quality != s.q {
				t.Fatalf("step %d: sent %v %v, want the sample as read", i, got.Value, got.Quality)
			}
		}
		out[i] = keep
	}
	return out
}

func TestReportByException(t *testing.T) {
	s := time.Second
	tests := []struct {
		name   string
		policy Policy
		steps  []step
		want   []bool
	}{
		{"first value always, then on change", Policy{},
			[]step{num(0, 1), num(s, 1), num(2*s, 1.5), num(3*s, 1.5)},
			[]bool{true, false, true, false}},
		{"absolute deadband against the last sent, not the last read", Policy{Deadband: 0.5},
			[]step{num(0, 10), num(s, 10.3), num(2*s, 10.5), num(3*s, 10.6), num(4*s, 10.1), num(5*s, 9.4)},
			[]bool{true, false, false, true, false, true}},
		{"percent deadband of the last sent", Policy{DeadbandPercent: 10},
			[]step{num(0, 100), num(s, 109), num(2*s, 111), num(3*s, 121), num(4*s, 123.5)},
			[]bool{true, false, true, false, true}},
		{"both set: the move must exceed both (absolute is a floor near zero)", Policy{Deadband: 1, DeadbandPercent: 10},
			[]step{num(0, 0), num(s, 0.5), num(2*s, 1.5), num(3*s, 2.4), num(4*s, 2.6), num(5*s, 100), num(6*s, 105), num(7*s, 111)},
			[]bool{true, false, true, false, true, true, false, true}},
		{"quality change passes whatever the deadband", Policy{Deadband: 100},
			[]step{num(0, 1), bad(s), bad(2 * s), num(3*s, 1), num(4*s, 1), {at: 5 * s, v: ferry.FloatValue(1), q: ferry.UncertainQuality("stale")}, {at: 6 * s, v: ferry.FloatValue(1), q: ferry.UncertainQuality("sensor")}},
			[]bool{true, true, false, true, false, true, true}},
		{"value after a gap", Policy{Deadband: 100, Gap: 10 * s},
			[]step{num(0, 1), num(5*s, 1), num(14*s, 1), num(25*s, 1), num(26*s, 1)},
			[]bool{true, false, false, true, false}},
		{"a clock that goes back counts as a gap", Policy{Deadband: 100},
			[]step{num(10*s, 1), num(11*s, 1), num(5*s, 1), num(6*s, 1)},
			[]bool{true, false, true, false}},
		{"max_silence heartbeat since the last sent", Policy{Deadband: 100, MaxSilence: 5 * s},
			[]step{num(0, 1), num(2*s, 1), num(4*s, 1), num(5*s, 1), num(7*s, 1), num(9*s, 1), num(10*s, 1)},
			[]bool{true, false, false, true, false, false, true}},
		{"strings on change", Policy{Deadband: 100},
			[]step{{at: 0, v: ferry.StringValue("auto")}, {at: s, v: ferry.StringValue("auto")}, {at: 2 * s, v: ferry.StringValue("manual")}},
			[]bool{true, false, true}},
		{"bools on change, not by deadband", Policy{Deadband: 5},
			[]step{{at: 0, v: ferry.BoolValue(false)}, {at: s, v: ferry.BoolValue(false)}, {at: 2 * s, v: ferry.BoolValue(true)}, {at: 3 * s, v: ferry.BoolValue(true)}},
			[]bool{true, false, true, false}},
		{"a change of kind is a change", Policy{Deadband: 100},
			[]step{{at: 0, v: ferry.IntValue(3)}, {at: s, v: ferry.StringValue("3")}, {at: 2 * s, v: ferry.IntValue(3)}, {at: 3 * s, v: ferry.UintValue(4)}},
			[]bool{true, true, true, false}},
		{"NaN is a change, NaN again is not", Policy{Deadband: 100},
			[]step{num(0, 1), num(s, math.NaN()), num(2*s, math.NaN()), num(3*s, 1)},
			[]bool{true, true, false, true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.policy
			r, _, _ := newReducer(t, Config{Defaults: &p})
			got := run(t, r, tc.steps)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("sent %v, want %v", got, tc.want)
			}
			suppressed := 0
			for _, g := range got {
				if !g {
					suppressed++
				}
			}
			if v := testutil.ToFloat64(r.m.suppressed.WithLabelValues("d1")); v != float64(suppressed) {
				t.Errorf("ferry_reduce_suppressed_samples_total{device=d1} = %v, want %d", v, suppressed)
			}
		})
	}
}

// TestPointEntries checks matching (first entry wins, globs), inheritance
// of unset fields from defaults, and that points matched by nothing pass
// unreduced when there are no defaults.
func TestPointEntries(t *testing.T) {
	cfg := Config{
		Defaults: &Policy{Deadband: 100, Gap: time.Minute},
		Points: []Point{
			{Match: "d1.exact", Deadband: f64(0)},
			{Match: "d1.*", Deadband: f64(1)},
			{Match: "d1.never", Deadband: f64(0)}, // shadowed by d1.*
		},
	}
	r, _, _ := newReducer(t, cfg)
	for _, tc := range []struct {
		dev, point string
		want       rule
	}{
		{"d1", "exact", rule{reduce: true, policy: Policy{Deadband: 0, Gap: time.Minute}}},
		{"d1", "other", rule{reduce: true, policy: Policy{Deadband: 1, Gap: time.Minute}}},
		{"d1", "never", rule{reduce: true, policy: Policy{Deadband: 1, Gap: time.Minute}}},
		{"d2", "x", rule{reduce: true, policy: Policy{Deadband: 100, Gap: time.Minute}}},
	} {
		if got := r.resolve(tc.dev, tc.point); got != tc.want {
			t.Errorf("%s.%s: %+v, want %+v", tc.dev, tc.point, got, tc.want)
		}
	}

	// Without defaults: unmatched points are not reduced; entries take
	// the built-in defaults (gap 1m).
	r, _, _ = newReducer(t, Config{Points: []Point{{Match: "d1.p1", Deadband: f64(5)}}})
	if got := r.resolve("d1", "p1"); got != (rule{reduce: true, policy: Policy{Deadband: 5, Gap: time.Minute}}) {
		t.Errorf("d1.p1: %+v", got)
	}
	sc := ferry.Scan{Device: "d1", Time: t0, Samples: []ferry.Sample{
		{Device: "d1", Point: "p1", Value: ferry.FloatValue(1), Time: t0},
		{Device: "d1", Point: "p2", Value: ferry.FloatValue(1), Time: t0},
	}}
	r.Apply(&sc)
	for i := 0; i < 3; i++ {
		sc := ferry.Scan{Device: "d1", Time: t0, Samples: []ferry.Sample{
			{Device: "d1", Point: "p1", Value: ferry.FloatValue(2), Time: t0.Add(time.Second)},
			{Device: "d1", Point: "p2", Value: ferry.FloatValue(1), Time: t0.Add(time.Second)},
		}}
		if !r.Apply(&sc) || len(sc.Samples) != 1 || sc.Samples[0].Point != "p2" {
			t.Fatalf("scan %d: %+v, want p2 alone (p1 within its deadband, p2 unreduced)", i, sc.Samples)
		}
	}

	// An empty section reduces nothing.
	r, _, _ = newReducer(t, Config{})
	for i := 0; i < 3; i++ {
		sc := ferry.Scan{Device: "d1", Samples: []ferry.Sample{{Device: "d1", Point: "p1", Value: ferry.FloatValue(1)}}}
		if !r.Apply(&sc) || len(sc.Samples) != 1 {
			t.Fatalf("empty config: scan %d reduced to %v", i, sc.Samples)
		}
	}
}

// TestFullySuppressedScanIsFinishable checks what the pipeline relies on:
// a scan whose samples are all suppressed is reported as having nothing to
// store, and Apply leaves its Done to the caller (called exactly once,
// with nil, by the pipeline).
func TestFullySuppressedScanIsFinishable(t *testing.T) {
	r, _, _ := newReducer(t, Config{Defaults: &Policy{Deadband: 1}})
	var done []error
	mk := func(v float64) ferry.Scan {
		return ferry.Scan{Device: "d1", Time: t0, Done: func(err error) { done = append(done, err) }, Samples: []ferry.Sample{
			{Device: "d1", Point: "a", Value: ferry.FloatValue(v), Time: t0},
			{Device: "d1", Point: "b", Value: ferry.FloatValue(v), Time: t0},
		}}
	}
	first := mk(1)
	if !r.Apply(&first) || len(first.Samples) != 2 {
		t.Fatalf("first scan: %v", first.Samples)
	}
	second := mk(1.5)
	if r.Apply(&second) {
		t.Fatalf("a scan with every sample suppressed still holds %v", second.Samples)
	}
	if len(done) != 0 {
		t.Fatalf("Apply called Done: %v", done)
	}
	empty := ferry.Scan{Device: "d1"}
	if !r.Apply(&empty) {
		t.Fatal("a scan that came empty is reported as reduced away")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // path: message fragment
	}{
		{"empty is valid", Config{}, nil},
		{"full is valid", Config{Defaults: &Policy{Deadband: 1, DeadbandPercent: 2, MaxSilence: time.Minute, Gap: time.Minute},
			Points: []Point{{Match: "a.*", Deadband: f64(1), MaxSilence: dur(5 * time.Minute)}, {Match: "b.p", Aggregate: &Aggregate{Window: 10 * time.Second, Functions: []string{"min", "max", "mean", "count", "last"}}}}}, nil},
		{"bad values", Config{Defaults: &Policy{Deadband: -1, DeadbandPercent: math.NaN(), MaxSilence: time.Millisecond, Gap: -time.Second},
			Points: []Point{
				{Match: ""},
				{Match: "a[", Deadband: f64(-2), MaxSilence: dur(-time.Second)},
				{Match: "b.p", Aggregate: &Aggregate{Window: 100 * time.Millisecond, Functions: []string{"avg", "min", "min"}}},
				{Match: "c.p", Aggregate: &Aggregate{Window: time.Minute}},
				{Match: "d.p", MaxSilence: dur(time.Minute), Aggregate: &Aggregate{Window: time.Minute, Functions: []string{"count"}}},
				{Match: "e.p", MaxSilence: dur(time.Minute), Aggregate: &Aggregate{Window: time.Minute, Functions: []string{"count"}, KeepRaw: true}},
			}},
			[]string{
				"defaults.deadband: -1 must be 0 or more",
				"defaults.deadband_percent: NaN is outside",
				"defaults.max_silence: 1ms is outside",
				"defaults.gap: -1s is outside",
				"points[0].match: is required",
				"points[1].match: \"a[\" is not a valid glob",
				"points[1].deadband: -2",
				"points[1].max_silence: -1s",
				"points[2].aggregate.window: 100ms is outside 1s..24h0m0s",
				"points[2].aggregate.functions[0]: \"avg\" is not one of min, max, mean, sum, count, first, last",
				"points[2].aggregate.functions[2]: \"min\" is listed twice",
				"points[3].aggregate.functions: is required",
				"points[4].max_silence: has no effect: an aggregated point sends its raw samples only with aggregate.keep_raw: true",
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			fes := setting.Flatten(err)
			if len(fes) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(fes), len(tc.want), err)
			}
			for i, fe := range fes {
				if !strings.HasPrefix(fe.Error(), tc.want[i]) {
					t.Errorf("error %d: %q, want it to start %q", i, fe.Error(), tc.want[i])
				}
			}
			if err != nil {
				if _, nerr := New(tc.cfg, Options{}); nerr == nil {
					t.Error("New accepted an invalid config")
				}
				r, _, _ := newReducer(t, Config{})
				if _, uerr := r.Update(tc.cfg); uerr == nil {
					t.Error("Update accepted an invalid config")
				}
				var fe *setting.FieldError
				if !errors.As(err, &fe) {
					t.Errorf("error is not a FieldError: %v", err)
				}
			}
		})
	}
}
