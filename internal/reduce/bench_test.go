package reduce

import (
	"strconv"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

// BenchmarkApply measures Apply on 50-point scans: every point under a
// deadband (most samples suppressed), or aggregated over 10s windows.
func BenchmarkApply(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"deadband", Config{Defaults: &Policy{Deadband: 0.5, MaxSilence: time.Minute}}},
		{"aggregate", Config{Points: []Point{{Match: "d1.*", Aggregate: &Aggregate{Window: 10 * time.Second, Functions: []string{"min", "max", "mean", "count", "last"}}}}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r, err := New(bc.cfg, Options{})
			if err != nil {
				b.Fatal(err)
			}
			names := make([]string, 50)
			for i := range names {
				names[i] = "p" + strconv.Itoa(i)
			}
			samples := make([]ferry.Sample, 50)
			b.ReportAllocs()
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				tm := t0.Add(time.Duration(n) * 100 * time.Millisecond)
				for i := range samples {
					samples[i] = ferry.Sample{Device: "d1", Point: names[i], Value: ferry.FloatValue(float64(n%7) * 0.1), Time: tm}
				}
				sc := ferry.Scan{Device: "d1", Time: tm, Samples: samples}
				r.Apply(&sc)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*50), "ns/sample")
		})
	}
}
