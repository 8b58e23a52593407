package modbus

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
)

// TestNonFiniteFloats: float registers holding a NaN or an infinity (and
// a scale that overflows) give Bad samples with reason "out of range" that
// keep the decoded value, counted in ferry_modbus_out_of_range_total; the
// finite points of the same request stay Good (issue 21 item 8).
func TestNonFiniteFloats(t *testing.T) {
	b := newBank()
	nan32 := math.Float32bits(float32(math.NaN()))
	inf32 := math.Float32bits(float32(math.Inf(-1)))
	inf64 := math.Float64bits(math.Inf(1))
	b.setRegs(1, false, 0, uint16(nan32>>16), uint16(nan32))
	b.setRegs(1, false, 2, uint16(inf32>>16), uint16(inf32))
	b.setRegs(1, false, 4, uint16(inf64>>48), uint16(inf64>>32), uint16(inf64>>16), uint16(inf64))
	b.setRegs(1, false, 8, 0x4120, 0x0000) // 10.0
	b.setRegs(1, false, 10, 0x7fff)        // 32767 × 1e308 overflows
	srv := startServer(t, b)
	big := hr("big", 10, "int16")
	big.Scale = 1e308
	d := dev("plc", "tcp://"+srv.Addr(), 1, 20*time.Millisecond,
		hr("nan", 0, "float32"), hr("neginf", 2, "float32"), hr("inf", 4, "float64"), hr("ten", 8, "float32"), big)
	m := NewMetrics(prometheus.NewRegistry())
	drv := newDriver(t, Options{Metrics: m}, d)
	col := newCollector()
	stop := run(t, drv, col)
	s := col.next(t, "plc")
	stop()

	want := map[string]func(float64) bool{
		"nan":    math.IsNaN,
		"neginf": func(f float64) bool { return math.IsInf(f, -1) },
		"inf":    func(f float64) bool { return math.IsInf(f, 1) },
		"big":    func(f float64) bool { return math.IsInf(f, 1) },
	}
	for _, x := range s.Samples {
		if x.Point == "ten" {
			if !x.Quality.IsGood() || x.Value.Float64() != 10 {
				t.Errorf("ten: %v %v, want Good 10", x.Value, x.Quality)
			}
			continue
		}
		if x.Quality.Status != ferry.Bad || x.Quality.Reason != reasonOutOfRange {
			t.Errorf("%s: quality %v, want Bad %q", x.Point, x.Quality, reasonOutOfRange)
		}
		if x.Value.Kind() != ferry.KindFloat || !want[x.Point](x.Value.Float64()) {
			t.Errorf("%s: value %v, want the decoded value kept", x.Point, x.Value)
		}
	}
	if got := testutil.ToFloat64(m.outOfRange.WithLabelValues("plc")); got < 4 {
		t.Errorf("ferry_modbus_out_of_range_total = %v, want ≥ 4 after one poll", got)
	}
	if got := testutil.ToFloat64(m.decodeErr.WithLabelValues("plc")); got != 0 {
		t.Errorf("ferry_modbus_decode_errors_total = %v, want 0", got)
	}
}
