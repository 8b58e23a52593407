package rules

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

// steady is a rule with samples that keep it evaluating without a
// transition (transitions render messages and allocate; evaluations must
// not).
type steady struct {
	name  string
	rules []Rule
	scan  func(i int) *ferry.Scan
}

func oneSample(dev, pt string, vals []ferry.Value) func(int) *ferry.Scan {
	s := &ferry.Scan{Device: dev, Samples: []ferry.Sample{{Device: dev, Point: pt}}}
	return func(i int) *ferry.Scan {
		s.Samples[0].Value = vals[i%len(vals)]
		return s
	}
}

func noise(n int, mean, sd float64) []ferry.Value {
	rng := rand.New(rand.NewPCG(7, 7))
	out := make([]ferry.Value, n)
	for i := range out {
		out[i] = ferry.FloatValue(mean + rng.NormFloat64()*sd)
	}
	return out
}

func steadyCases() []steady {
	an := func(method string) *Anomaly {
		a := &Anomaly{}
		a.SetDefaults()
		a.Method, a.Window, a.MinSamples, a.Threshold = method, time.Minute, 10, 6
		return a
	}
	low := noise(1024, 50, 1)
	return []steady{
		{"threshold", []Rule{{When: "press3.oil_temp > 80"}}, oneSample("press3", "oil_temp", low)},
		{"hysteresis", []Rule{{When: "press3.oil_temp > 80", Clear: "press3.oil_temp < 75", For: time.Second}}, oneSample("press3", "oil_temp", low)},
		{"arithmetic", []Rule{{When: "abs(press3.oil_temp - 50) * 2 > 40 || press3.oil_temp < -100"}}, oneSample("press3", "oil_temp", low)},
		{"bool", []Rule{{When: "not press3.running"}}, oneSample("press3", "running", []ferry.Value{ferry.BoolValue(true)})},
		{"string", []Rule{{When: `env.state == "ALARM"`}}, oneSample("env", "state", []ferry.Value{ferry.StringValue("RUN"), ferry.StringValue("IDLE")})},
		{"two points", []Rule{{When: "press3.oil_temp > 80 and press3.running"}}, func() func(int) *ferry.Scan {
			s := &ferry.Scan{Device: "press3", Samples: []ferry.Sample{{Point: "oil_temp"}, {Point: "running", Value: ferry.BoolValue(true)}}}
			return func(i int) *ferry.Scan { s.Samples[0].Value = low[i%len(low)]; return s }
		}()},
		{"rate", []Rule{{Point: "press3.oil_temp", Rate: &Rate{Window: time.Minute, Per: "minute", Above: f64(1e9)}}}, oneSample("press3", "oil_temp", low)},
		{"stale", []Rule{{Point: "press3.oil_temp", Stale: time.Hour}}, oneSample("press3", "oil_temp", low)},
		{"flatline", []Rule{{Point: "press3.oil_temp", Flatline: &Flatline{Duration: time.Hour, Epsilon: 0.01}}}, oneSample("press3", "oil_temp", low)},
		{"zscore", []Rule{{Point: "press3.oil_temp", Anomaly: an("zscore")}}, oneSample("press3", "oil_temp", low)},
		{"ewma", []Rule{{Point: "press3.oil_temp", Anomaly: an("ewma")}}, oneSample("press3", "oil_temp", low)},
	}
}

// engine builds the case's engine. A test steps a fake clock 100 ms per
// call; a benchmark uses the real clock, as in production.
func (c steady) engine(tb testing.TB) *Engine {
	tb.Helper()
	for i := range c.rules {
		c.rules[i] = withDefaults(c.rules[i])
		c.rules[i].Name = "r" + strconv.Itoa(i)
	}
	now := t0
	clock := func() time.Time { now = now.Add(100 * time.Millisecond); return now }
	if _, bench := tb.(*testing.B); bench {
		clock = time.Now
	}
	e, err := New(c.rules, Options{
		Now:  clock,
		Emit: func(a ferry.Alert) { tb.Fatalf("%s: unexpected transition %+v", c.name, a) },
	})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// TestEvaluationDoesNotAllocate holds the engine to its promise: in
// steady state, evaluating a rule allocates nothing.
func TestEvaluationDoesNotAllocate(t *testing.T) {
	for _, c := range steadyCases() {
		t.Run(c.name, func(t *testing.T) {
			e := c.engine(t)
			for i := 0; i < 5000; i++ { // warm up: windows full, maps settled
				e.Process(c.scan(i))
			}
			i := 0
			allocs := testing.AllocsPerRun(2000, func() {
				e.Process(c.scan(i))
				i++
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per evaluation", allocs)
			}
			if !c.usesNative(e) {
				t.Fatal("expression fell back to expr's VM")
			}
		})
	}
}

func (c steady) usesNative(e *Engine) bool {
	for _, r := range e.g.rules {
		for _, p := range []*program{r.when, r.clear} {
			if p != nil && p.native == nil {
				return false
			}
		}
	}
	return true
}

func TestExprFallbackIsUsedAndCorrect(t *testing.T) {
	e, err := New([]Rule{withDefaults(Rule{When: `p.t in ["A", "B"]`})}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if e.g.rules[0].when.native != nil {
		t.Fatal("`in` compiled natively; this test needs a fallback expression")
	}
}

func benchSteady(b *testing.B, name string) {
	for _, c := range steadyCases() {
		if c.name != name {
			continue
		}
		e := c.engine(b)
		for i := 0; i < 5000; i++ {
			e.Process(c.scan(i))
		}
		before := e.evals.Load()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			e.Process(c.scan(i))
		}
		b.StopTimer()
		evals := e.evals.Load() - before
		b.ReportMetric(float64(evals)/b.Elapsed().Seconds(), "evals/s")
		return
	}
	b.Fatalf("no case %s", name)
}

// Benchmarks: one scan of one sample per op, through Process (lock, point
// lookup, evaluation). evals/s is per core: run with -cpu 1.
func BenchmarkThreshold(b *testing.B)  { benchSteady(b, "threshold") }
func BenchmarkHysteresis(b *testing.B) { benchSteady(b, "hysteresis") }
func BenchmarkArithmetic(b *testing.B) { benchSteady(b, "arithmetic") }
func BenchmarkRate(b *testing.B)       { benchSteady(b, "rate") }
func BenchmarkZscore(b *testing.B)     { benchSteady(b, "zscore") }
func BenchmarkEWMA(b *testing.B)       { benchSteady(b, "ewma") }

// BenchmarkThresholdScan: 100 threshold rules over the 100 points of one
// scan, the usual shape of a PLC poll.
func BenchmarkThresholdScan(b *testing.B) {
	var rules []Rule
	scan := &ferry.Scan{Device: "plc"}
	for i := 0; i < 100; i++ {
		pt := "p" + strconv.Itoa(i)
		rules = append(rules, withDefaults(Rule{Name: "r" + pt, When: "plc." + pt + " > 80"}))
		scan.Samples = append(scan.Samples, ferry.Sample{Point: pt, Value: ferry.FloatValue(float64(i % 70))})
	}
	e, err := New(rules, Options{})
	if err != nil {
		b.Fatal(err)
	}
	e.Process(scan)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Process(scan)
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "evals/s")
}

// BenchmarkZscoreScan: 100 z-score rules over the 100 points of one scan.
func BenchmarkZscoreScan(b *testing.B) {
	var rules []Rule
	scan := &ferry.Scan{Device: "plc"}
	for i := 0; i < 100; i++ {
		pt := "p" + strconv.Itoa(i)
		a := &Anomaly{}
		a.SetDefaults()
		a.Threshold = 1000
		rules = append(rules, withDefaults(Rule{Name: "r" + pt, Point: "plc." + pt, Anomaly: a}))
		scan.Samples = append(scan.Samples, ferry.Sample{Point: pt})
	}
	e, err := New(rules, Options{})
	if err != nil {
		b.Fatal(err)
	}
	vals := noise(4096, 20, 2)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range scan.Samples {
			scan.Samples[j].Value = vals[(i+j)%len(vals)]
		}
		e.Process(scan)
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "evals/s")
}

// BenchmarkExprFallback shows what an expression the native compiler
// does not cover costs on expr's VM.
func BenchmarkExprFallback(b *testing.B) {
	e, err := New([]Rule{withDefaults(Rule{When: `env.state in ["E1", "E2"]`})}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	scan := oneSample("env", "state", []ferry.Value{ferry.StringValue("RUN")})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Process(scan(i))
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "evals/s")
}

// BenchmarkUnwatchedPoint: a sample no rule reads.
func BenchmarkUnwatchedPoint(b *testing.B) {
	e, err := New([]Rule{withDefaults(Rule{When: "press3.oil_temp > 80"})}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	scan := oneSample("press3", "other", []ferry.Value{ferry.FloatValue(1)})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		e.Process(scan(i))
	}
}
