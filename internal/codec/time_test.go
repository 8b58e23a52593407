package codec

import (
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

func TestSampleTimeFarFromScan(t *testing.T) {
	scan := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		in   time.Time
		want time.Time
	}{
		{"1678", time.Date(1678, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1678, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"2262", time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"1900", time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"9999", time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), time.Unix(0, 1<<63-1)},
		{"1601", time.Date(1601, 1, 1, 0, 0, 0, 0, time.UTC), time.Unix(0, -1<<63)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scans := []ferry.Scan{{Device: "d", Time: scan, Samples: []ferry.Sample{{Point: "p", Value: ferry.IntValue(1), Time: tc.in}}}}
			got, err := DecodeTelemetry(AppendTelemetry(nil, "v", "d", scans))
			if err != nil {
				t.Fatal(err)
			}
			if g := got.Scans[0].Samples[0].Time; !g.Equal(tc.want) {
				t.Fatalf("sample time %v came back as %v, want %v", tc.in, g, tc.want)
			}
		})
	}
}
