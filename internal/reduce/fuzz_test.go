package reduce

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
)

// FuzzApply feeds random sequences of samples (two report-by-exception
// points, one aggregated point, one unreduced) through a reducer and
// checks the invariants: the first sample of every point and every
// quality change go upstream; no point sends more samples than it read;
// every sample of the aggregated point is counted in exactly one window
// or excluded, across a Close.
func FuzzApply(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 200, 13, 77})
	f.Add([]byte{3, 3, 3, 3, 255, 0, 128, 64, 9, 9, 9, 1})
	f.Fuzz(checkApply)
}

// checkApply is FuzzApply's body.
func checkApply(t *testing.T, data []byte) {
	{
		cfg := Config{
			Defaults: &Policy{Deadband: 2, DeadbandPercent: 5, MaxSilence: 30 * time.Second, Gap: 20 * time.Second},
			Points: []Point{
				{Match: "d1.agg", Aggregate: &Aggregate{Window: 10 * time.Second, Functions: []string{"count", "mean"}}},
				{Match: "d1.pct", DeadbandPercent: f64(10), Deadband: f64(0)},
			},
		}
		r, clk, _ := newReducer(t, cfg)
		points := []string{"abs", "pct", "agg", "str"}
		in := map[string]int{}
		out := map[string]int{}
		lastQ := map[string]ferry.Quality{}
		var counted uint64
		now := t0
		for i := 0; i+1 < len(data); i += 2 {
			op, arg := data[i], data[i+1]
			now = now.Add(time.Duration(op%16) * time.Second / 2)
			clk.t = now
			if op%13 == 0 {
				for _, s := range scansSamples(r.Flush()) {
					if s.Point == "agg.count" {
						counted += s.Value.Uint64()
					}
				}
			}
			p := points[int(op>>4)%len(points)]
			smp := ferry.Sample{Device: "d1", Point: p, Time: now.Add(-time.Duration(arg%4) * time.Second)}
			switch {
			case arg > 240:
				smp.Quality = ferry.BadQuality("timeout")
			case arg > 230:
				smp.Quality = ferry.UncertainQuality("stale")
			}
			if p == "str" {
				smp.Value = ferry.StringValue(string(rune('a' + arg%3)))
			} else {
				smp.Value = ferry.FloatValue(float64(arg) / 3)
			}
			in[p]++
			sc := ferry.Scan{Device: "d1", Time: now, Samples: []ferry.Sample{smp}}
			keep := r.Apply(&sc)
			if keep != (len(sc.Samples) > 0) {
				t.Fatalf("Apply returned %v with %d samples", keep, len(sc.Samples))
			}
			sentRaw := false
			for _, s := range sc.Samples {
				switch s.Point {
				case "agg.count":
					counted += s.Value.Uint64()
				case p:
					sentRaw = true
					out[p]++
				}
			}
			if p != "agg" {
				if q, seen := lastQ[p]; (!seen || q != smp.Quality) && !sentRaw {
					t.Fatalf("sample %d of %s (%v) not sent: first or quality change", in[p], p, smp.Quality)
				}
				lastQ[p] = smp.Quality
			} else if sentRaw {
				t.Fatal("a raw sample of an aggregated point went upstream")
			}
		}
		for _, s := range scansSamples(r.Close()) {
			if s.Point == "agg.count" {
				counted += s.Value.Uint64()
			}
		}
		for p, n := range out {
			if n > in[p] {
				t.Fatalf("%s: %d samples sent of %d read", p, n, in[p])
			}
		}
		var excluded float64
		for _, reason := range []string{excludedBad, excludedNotNumber, excludedLate} {
			excluded += testutil.ToFloat64(r.m.excluded.WithLabelValues("d1", reason))
		}
		if got := float64(counted) + excluded; got != float64(in["agg"]) {
			t.Fatalf("aggregated point: %d counted in windows + %v excluded, %d read", counted, excluded, in["agg"])
		}
	}
}
