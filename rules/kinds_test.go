package rules

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

// step is one moment of a rule test: at `at`, a sample of ref (the rule's
// point when empty) arrives, or, when v is nil, the engine ticks. want is
// the transitions that moment must emit ("" for none, "raised",
// "cleared", or several joined by commas).
type step struct {
	at   time.Duration
	v    any
	want string
	ref  string
	q    ferry.Quality
	tick bool // tick after the sample too
}

func sec(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func tickAt(s float64, want string) step { return step{at: sec(s), want: want} }

func at(s float64, v any, want string) step { return step{at: sec(s), v: v, want: want} }

func bad(s float64, q ferry.Quality, want string) step {
	return step{at: sec(s), v: 0.0, q: q, want: want}
}

func runSteps(t *testing.T, r Rule, steps []step) {
	t.Helper()
	h := newHarness(t, []Rule{r}, nil)
	for i, s := range steps {
		h.at(s.at)
		if s.v != nil {
			ref := s.ref
			if ref == "" {
				ref = r.Point
			}
			h.send(ref, value(s.v), s.q)
		}
		if s.v == nil || s.tick {
			h.e.Tick()
		}
		if got := states(h.take()); got != s.want {
			t.Fatalf("step %d (t=%v, v=%v, q=%v): emitted %q, want %q", i, s.at, s.v, s.q, got, s.want)
		}
	}
}

func withDefaults(r Rule) Rule {
	if r.Severity == "" {
		r.Severity = "warning"
	}
	if r.Name == "" {
		r.Name = "r"
	}
	return r
}

// series returns steps sampling f every dt from start to end (exclusive),
// expecting nothing, except want at the step where index == at.
func series(start, end, dt float64, f func(t float64) float64) []step {
	var out []step
	for x := start; x < end-1e-9; x += dt {
		out = append(out, at(x, f(x), ""))
	}
	return out
}

// expect sets the wanted transition of the first step at or after s.
func expect(steps []step, s float64, want string) []step {
	for i := range steps {
		if steps[i].at >= sec(s) {
			steps[i].want = want
			return steps
		}
	}
	panic("no step at " + fmt.Sprint(s))
}

func TestRuleKinds(t *testing.T) {
	badQ := ferry.BadQuality(ferry.ReasonTimeout)
	uncertain := ferry.UncertainQuality("sensor")
	noisy := func(seed uint64, mean, sd float64) func(float64) float64 {
		rng := rand.New(rand.NewPCG(seed, 1))
		return func(float64) float64 { return mean + rng.NormFloat64()*sd }
	}

	tests := []struct {
		name  string
		rule  Rule
		steps []step
	}{
		{"when raises and clears without clear expr",
			Rule{When: "p.t > 80"},
			[]step{at(0, 70.0, ""), at(1, 81.0, "raised"), at(2, 85.0, ""), at(3, 80.0, "cleared"), at(4, 79.0, "")}},
		{"when/clear hysteresis: no flapping around the threshold",
			Rule{When: "p.t > 80", Clear: "p.t < 75"},
			[]step{at(0, 79.9, ""), at(1, 80.1, "raised"), at(2, 79.9, ""), at(3, 80.1, ""), at(4, 76.0, ""),
				at(5, 80.5, ""), at(6, 74.9, "cleared"), at(7, 79.9, ""), at(8, 80.1, "raised")}},
		{"for: noise around the threshold never raises",
			Rule{When: "p.t > 80", For: 10 * time.Second},
			[]step{at(0, 80.1, ""), at(1, 79.9, ""), at(2, 80.1, ""), tickAt(11, ""), at(12, 79.9, ""), at(13, 80.1, ""),
				tickAt(22.9, ""), at(23, 79.9, ""), tickAt(40, "")}},
		{"for: on-delay honoured by the ticker without new samples",
			Rule{When: "p.t > 80", For: 10 * time.Second},
			[]step{at(0, 85.0, ""), tickAt(5, ""), tickAt(9.9, ""), tickAt(10, "raised"), tickAt(11, ""), at(12, 70.0, "cleared")}},
		{"for: on-delay honoured by a late sample",
			Rule{When: "p.t > 80", For: 10 * time.Second},
			[]step{at(0, 85.0, ""), at(4, 86.0, ""), at(10.5, 87.0, "raised")}},
		{"clear_for: off-delay, reset by a relapse",
			Rule{When: "p.t > 80", ClearFor: 5 * time.Second},
			[]step{at(0, 85.0, "raised"), at(10, 70.0, ""), at(12, 85.0, ""), at(13, 70.0, ""), tickAt(17.9, ""),
				tickAt(18, "cleared"), tickAt(30, "")}},
		{"for and clear_for together",
			Rule{When: "p.t > 80", For: 3 * time.Second, ClearFor: 3 * time.Second},
			[]step{at(0, 85.0, ""), tickAt(3, "raised"), at(4, 70.0, ""), tickAt(6.9, ""), tickAt(7, "cleared")}},
		{"for and clear_for: the README timeline",
			Rule{When: "p.t > 80", For: 10 * time.Second, ClearFor: 30 * time.Second},
			[]step{at(0, 85.0, ""), at(2, 85.0, ""), at(4, 79.0, ""), at(6, 85.0, ""), at(8, 85.0, ""), at(10, 85.0, ""),
				at(12, 85.0, ""), at(14, 85.0, ""), at(16, 85.0, "raised"), at(18, 85.0, ""), at(40, 70.0, ""), at(50, 85.0, ""),
				at(60, 70.0, ""), at(70, 70.0, ""), at(80, 70.0, ""), tickAt(89.9, ""), tickAt(90, "cleared")}},
		{"when ignores Bad samples and holds state",
			Rule{When: "p.t > 80"},
			[]step{at(0, 70.0, ""), bad(1, badQ, ""), {at: sec(2), v: 90.0, q: badQ}, at(3, 90.0, "raised"),
				{at: sec(4), v: 10.0, q: uncertain}, at(5, 10.0, "cleared")}},
		{"when over a bool point",
			Rule{When: "p.t"},
			[]step{at(0, false, ""), at(1, true, "raised"), at(2, false, "cleared")}},
		{"when over a string point",
			Rule{When: `p.t == "ALARM"`},
			[]step{at(0, "RUN", ""), at(1, "ALARM", "raised"), at(2, "RUN", "cleared"), at(3, 5.0, "")}},
		{"when with expr fallback (in)",
			Rule{When: `p.t in ["E1", "E2"]`},
			[]step{at(0, "OK", ""), at(1, "E2", "raised"), at(2, "E1", ""), at(3, "OK", "cleared")}},

		{"rate above: slow rise holds, fast rise raises, flat clears",
			Rule{Point: "p.t", Rate: &Rate{Window: 10 * time.Second, Per: "second", Above: f64(2)}},
			func() []step {
				s := series(0, 30, 1, func(x float64) float64 { return x }) // 1/s
				s = append(s, series(30, 50, 1, func(x float64) float64 { return 30 + 3*(x-30) })...)
				// over the last 10s: at 35s (45-25)/10 = 2.0, at 36s (48-26)/10 = 2.2
				s = expect(s, 36, "raised")
				s = append(s, series(50, 70, 1, func(float64) float64 { return 90 })...)
				// at 53s (90-69)/10 = 2.1, at 54s (90-72)/10 = 1.8
				return expect(s, 54, "cleared")
			}()},
		{"rate below per minute: a fall raises, not before half the window",
			Rule{Point: "p.t", Rate: &Rate{Window: time.Minute, Per: "minute", Below: f64(-10)}},
			func() []step {
				s := series(0, 29, 1, func(x float64) float64 { return 100 - x }) // -60/min but window not half full
				s = append(s, at(30, 70.0, "raised"))
				s = append(s, series(31, 200, 1, func(float64) float64 { return 70 })...)
				// rate at T is (70 - (160-T))/60s = T-90 per minute: -10 at 80s
				return expect(s, 80, "cleared")
			}()},

		{"stale: no Good sample for the duration",
			Rule{Point: "p.t", Stale: 30 * time.Second},
			[]step{at(0, 1.0, ""), tickAt(29.9, ""), bad(29.95, badQ, ""), tickAt(30, "raised"), tickAt(40, ""),
				bad(41, badQ, ""), at(42, 2.0, "cleared"), tickAt(71.9, ""), tickAt(72, "raised")}},
		{"stale: a point never seen raises after the duration",
			Rule{Point: "p.t", Stale: 30 * time.Second},
			[]step{tickAt(29, ""), tickAt(30, "raised"), at(31, 1.0, "cleared")}},
		{"stale with clear_for",
			Rule{Point: "p.t", Stale: 10 * time.Second, ClearFor: 5 * time.Second},
			[]step{tickAt(10, "raised"), at(11, 1.0, ""), at(13, 1.0, ""), tickAt(15.9, ""), tickAt(16, "cleared")}},

		{"quality: Bad or Uncertain for the duration",
			Rule{Point: "p.t", Quality: 10 * time.Second},
			[]step{at(0, 1.0, ""), bad(1, badQ, ""), tickAt(10.9, ""), {at: sec(11), v: 0.0, q: uncertain, want: "raised"},
				bad(12, badQ, ""), at(15, 1.0, "cleared"), bad(16, badQ, ""), at(17, 1.0, ""), tickAt(40, "")}},

		{"flatline: stuck within epsilon raises, a move clears",
			Rule{Point: "p.t", Flatline: &Flatline{Duration: time.Minute, Epsilon: 0.1}},
			func() []step {
				s := series(0, 70, 5, func(x float64) float64 { return 5 + 0.05*math.Sin(x) })
				s = expect(s, 60, "raised")
				return append(s, at(71, 5.5, "cleared"), at(80, 5.5, ""))
			}()},
		{"flatline: a dead device is not flat",
			Rule{Point: "p.t", Flatline: &Flatline{Duration: time.Minute}},
			[]step{at(0, 3.0, ""), bad(10, badQ, ""), tickAt(100, ""), at(101, 3.0, ""), tickAt(120, ""), at(121, 4.0, "")}},

		{"anomaly zscore: nothing during warm-up, outlier raises, normal clears",
			Rule{Point: "p.t", Anomaly: &Anomaly{Method: "zscore", Window: 60 * time.Second, Threshold: 4,
				Warmup: 30 * time.Second, MinSamples: 20, Lambda: 0.2, Direction: "both"}},
			func() []step {
				n := noisy(1, 50, 1)
				s := series(0, 5, 1, n)
				s = append(s, at(5, 500.0, "")) // huge outlier during warm-up: not judged
				s = append(s, series(6, 120, 1, n)...)
				s = append(s, at(120, 70.0, "raised"), at(121, 72.0, ""), at(122, 50.0, "cleared"))
				return append(s, series(123, 130, 1, n)...)
			}()},
		{"anomaly zscore direction below ignores spikes up",
			Rule{Point: "p.t", Anomaly: &Anomaly{Method: "zscore", Window: 60 * time.Second, Threshold: 4,
				MinSamples: 20, Lambda: 0.2, Direction: "below"}},
			func() []step {
				n := noisy(2, 50, 1)
				s := series(0, 70, 1, n)
				return append(s, at(70, 90.0, ""), at(71, 50.0, ""), at(72, 10.0, "raised"), at(73, 50.0, "cleared"))
			}()},
		{"anomaly ewma: a step change raises, the baseline adapts and it clears",
			Rule{Point: "p.t", Anomaly: &Anomaly{Method: "ewma", Window: 30 * time.Second, Threshold: 3,
				MinSamples: 20, Lambda: 0.3, Direction: "both"}},
			func() []step {
				n := noisy(3, 20, 0.5)
				s := series(0, 100, 1, n)
				up := noisy(4, 30, 0.5)
				s = append(s, series(100, 300, 1, up)...)
				return s
			}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := withDefaults(tc.rule)
			if r.Point == "" && r.When != "" {
				r.Point = "p.t"
			}
			if err := Validate([]Rule{r}, nil); err != nil {
				t.Fatalf("rule invalid: %v", err)
			}
			if strings.Contains(tc.name, "ewma") {
				runEWMA(t, r, tc.steps)
				return
			}
			runSteps(t, r, tc.steps)
		})
	}
}

// runEWMA checks the EWMA case: exactly one raise at the step, then
// exactly one clear some time later while the baseline adapts.
func runEWMA(t *testing.T, r Rule, steps []step) {
	t.Helper()
	h := newHarness(t, []Rule{r}, nil)
	var seq []string
	var clearedAt time.Duration
	for _, s := range steps {
		h.at(s.at)
		h.send(r.Point, value(s.v), s.q)
		for _, a := range h.take() {
			seq = append(seq, a.State.String())
			if a.State == ferry.AlertCleared {
				clearedAt = s.at
			}
			if a.State == ferry.AlertRaised && s.at != sec(100) {
				t.Fatalf("raised at %v, want at the step (100s)", s.at)
			}
		}
	}
	if strings.Join(seq, ",") != "raised,cleared" {
		t.Fatalf("transitions %v, want raised then cleared", seq)
	}
	if clearedAt < sec(110) || clearedAt > sec(250) {
		t.Fatalf("cleared at %v, want after the baseline adapted (110s..250s)", clearedAt)
	}
}

func TestMultiPointWhenEvaluatesOncePerScan(t *testing.T) {
	h := newHarness(t, []Rule{withDefaults(Rule{When: "a.x > 1 and a.y > 1"})}, nil)
	scan := func(x, y float64) {
		h.e.Process(&ferry.Scan{Device: "a", Samples: []ferry.Sample{
			{Point: "x", Value: ferry.FloatValue(x)}, {Point: "y", Value: ferry.FloatValue(y)}}})
	}
	scan(2, 0)
	scan(0, 2) // x drops in the same scan as y rises: never both > 1
	if got := states(h.take()); got != "" {
		t.Fatalf("emitted %q on an intermediate state", got)
	}
	scan(2, 2)
	got := h.take()
	if states(got) != "raised" || got[0].Device != "" || got[0].Point != "" {
		t.Fatalf("got %+v", got)
	}
	if !strings.Contains(got[0].Message, "a.x = 2") || !strings.Contains(got[0].Message, "a.y = 2") {
		t.Errorf("message %q does not show both points", got[0].Message)
	}
}

func TestAlertFieldsAndMessageTemplate(t *testing.T) {
	r := withDefaults(Rule{
		Name: "oil_hot", When: "press3.oil_temp > 80", Severity: "critical",
		Message: `{{.Point}} at {{printf "%.1f" .Value.Float64}} degC ({{.State}}, line {{.Labels.line}})`,
		Labels:  map[string]string{"line": "3"},
	})
	h := newHarness(t, []Rule{r}, nil)
	h.at(time.Second)
	h.send("press3.oil_temp", ferry.FloatValue(83.25), ferry.GoodQuality)
	h.at(5 * time.Second)
	h.send("press3.oil_temp", ferry.FloatValue(70), ferry.GoodQuality)
	got := h.take()
	if len(got) != 2 {
		t.Fatalf("got %d transitions", len(got))
	}
	up, down := got[0], got[1]
	if up.ID == "" || up.ID != down.ID || !strings.HasPrefix(up.ID, "oil_hot-") {
		t.Errorf("ids %q %q: want one stable id per episode", up.ID, down.ID)
	}
	if up.Rule != "oil_hot" || up.Device != "press3" || up.Point != "oil_temp" || up.Severity != ferry.SeverityCritical {
		t.Errorf("raised alert %+v", up)
	}
	if !up.Since.Equal(t0.Add(time.Second)) || !up.Time.Equal(up.Since) || !down.Since.Equal(up.Since) || !down.Time.Equal(t0.Add(5*time.Second)) {
		t.Errorf("times: raised %v/%v cleared %v/%v", up.Since, up.Time, down.Since, down.Time)
	}
	if up.Message != "oil_temp at 83.2 degC (raised, line 3)" && up.Message != "oil_temp at 83.3 degC (raised, line 3)" {
		t.Errorf("message %q", up.Message)
	}
	if down.Message != "oil_temp at 70.0 degC (cleared, line 3)" || down.Value.Float64() != 70 {
		t.Errorf("cleared: message %q value %v", down.Message, down.Value)
	}
	// A second episode gets a new id.
	h.at(6 * time.Second)
	h.send("press3.oil_temp", ferry.FloatValue(90), ferry.GoodQuality)
	if again := h.take(); len(again) != 1 || again[0].ID == up.ID {
		t.Fatalf("second episode %+v reuses id %s", again, up.ID)
	}
}

func TestIDsUniqueWhenRaisedAtTheSameInstant(t *testing.T) {
	h := newHarness(t, []Rule{withDefaults(Rule{When: "p.t > 1"})}, nil)
	ids := map[string]bool{}
	for i := 0; i < 5; i++ {
		h.send("p.t", ferry.FloatValue(2), ferry.GoodQuality)
		h.send("p.t", ferry.FloatValue(0), ferry.GoodQuality)
	}
	for _, a := range h.take() {
		if a.State == ferry.AlertRaised {
			if ids[a.ID] {
				t.Fatalf("id %s reused", a.ID)
			}
			ids[a.ID] = true
		}
	}
	if len(ids) != 5 {
		t.Fatalf("%d episodes", len(ids))
	}
}

// A Good sample may carry NaN or ±Inf (an OPC UA or Sparkplug float, an
// MQTT number beyond float64): it is not a measurement, and must neither
// poison a rule's statistics nor clear or raise its alert.
func TestNonFiniteValuesDoNotFeedStatistics(t *testing.T) {
	nan := math.NaN()
	noisy := func(seed uint64, mean, sd float64) func(float64) float64 {
		rng := rand.New(rand.NewPCG(seed, 1))
		return func(float64) float64 { return mean + rng.NormFloat64()*sd }
	}
	t.Run("rate: NaN does not clear an active alert", func(t *testing.T) {
		r := withDefaults(Rule{Point: "p.t", Rate: &Rate{Window: 10 * time.Second, Per: "second", Above: f64(2)}})
		s := series(0, 20, 1, func(x float64) float64 { return 5 * x })
		s = expect(s, 5, "raised")
		s = append(s, at(20.5, nan, ""), at(20.7, math.Inf(1), ""))
		s = append(s, series(21, 40, 1, func(x float64) float64 { return 5 * x })...)
		runSteps(t, r, s)
	})
	t.Run("flatline: a moving value after NaN is not flat", func(t *testing.T) {
		r := withDefaults(Rule{Point: "p.t", Flatline: &Flatline{Duration: time.Minute, Epsilon: 0.1}})
		s := []step{at(0, nan, "")}
		s = append(s, series(1, 90, 1, func(x float64) float64 { return x })...)
		runSteps(t, r, s)
	})
	t.Run("zscore: an outlier after NaN raises", func(t *testing.T) {
		r := withDefaults(Rule{Point: "p.t", Anomaly: &Anomaly{Method: "zscore", Window: 60 * time.Second, Threshold: 4,
			Warmup: 30 * time.Second, MinSamples: 20, Lambda: 0.2, Direction: "both"}})
		n := noisy(1, 50, 1)
		s := series(0, 50, 1, n)
		s = append(s, at(50.5, nan, ""), at(50.7, math.Inf(-1), ""))
		s = append(s, series(51, 90, 1, n)...)
		s = append(s, at(90, 70.0, "raised"))
		runSteps(t, r, s)
	})
	t.Run("ewma: a NaN before the step does not blind the chart", func(t *testing.T) {
		r := withDefaults(Rule{Point: "p.t", Anomaly: &Anomaly{Method: "ewma", Window: 30 * time.Second, Threshold: 3,
			MinSamples: 20, Lambda: 0.3, Direction: "both"}})
		s := series(0, 50, 1, noisy(3, 20, 0.5))
		s = append(s, at(50.5, nan, ""))
		s = append(s, series(51, 100, 1, noisy(3, 20, 0.5))...)
		s = append(s, series(100, 300, 1, noisy(4, 30, 0.5))...)
		runEWMA(t, r, s)
	})
}

// The ticker finishes an on- or off-delay when no sample arrives (a point
// published on change), but not while the point is Bad: its value is then
// unknown, and a dead PLC must neither clear nor raise an alert.
func TestDelaysHoldWhileThePointIsBad(t *testing.T) {
	badQ := ferry.BadQuality(ferry.ReasonTimeout)
	t.Run("clear_for", func(t *testing.T) {
		r := withDefaults(Rule{Point: "p.t", When: "p.t > 80", Clear: "p.t < 75", ClearFor: 30 * time.Second})
		runSteps(t, r, []step{at(0, 85.0, "raised"), at(10, 70.0, ""), bad(11, badQ, ""),
			tickAt(41, ""), tickAt(100, ""), at(101, 70.0, "cleared")})
	})
	t.Run("for", func(t *testing.T) {
		r := withDefaults(Rule{Point: "p.t", When: "p.t > 80", For: 10 * time.Second})
		runSteps(t, r, []step{at(0, 85.0, ""), bad(1, badQ, ""), tickAt(11, ""), tickAt(60, ""), at(61, 85.0, "raised")})
	})
}
