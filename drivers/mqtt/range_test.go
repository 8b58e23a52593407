package mqtt

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/label"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// TestOutOfRangeNumbers publishes numbers beyond float64 (1e400, a
// 400-digit integer, as JSON numbers, as text and as a `value` payload)
// through a real broker: each gives a Bad sample with reason "out of
// range", counted in ferry_mqtt_payload_errors_total; a float or untyped
// point keeps the ±Inf, an int point gets no value; an underflow (1e-400)
// is a Good 0 (issue 21 item 8).
func TestOutOfRangeNumbers(t *testing.T) {
	b := testpeer.Broker(t)
	reg := prometheus.NewRegistry()
	store := newCommitStore(t)
	opts := testOptions(reg)
	js := jsonDevice("env", b.URL(), "r/env",
		Point{Name: "huge", Path: "huge"},
		Point{Name: "neg", Path: "neg", Type: "float"},
		Point{Name: "text", Path: "text", Type: "float"},
		Point{Name: "digits", Path: "digits", Type: "int"},
		Point{Name: "digitsf", Path: "digits"},
		Point{Name: "tiny", Path: "tiny"},
		Point{Name: "ok", Path: "ok"},
	)
	val := jsonDevice("level", b.URL(), "r/level", Point{Name: "value"})
	val.Config.Format = FormatValue
	r := start(t, []Device{js, val}, opts, store.emit)
	r.waitSubscribed(t, b, 2)

	digits := strings.Repeat("9", 400)
	n := len(store.committed())
	b.Publish(t, "r/env", []byte(`{"huge":1e400,"neg":-1e400,"text":"1e999","digits":`+digits+`,"tiny":1e-400,"ok":21.5}`), 1, false)
	waitFor(t, "scan", 5*time.Second, func() bool { return len(store.committed()) > n })
	inf, ninf := ferry.FloatValue(math.Inf(1)), ferry.FloatValue(math.Inf(-1))
	want := map[string]struct {
		v   ferry.Value
		bad bool
	}{
		"huge": {inf, true}, "neg": {ninf, true}, "text": {inf, true}, "digits": {ferry.Value{}, true},
		"digitsf": {inf, true}, "tiny": {ferry.FloatValue(0), false}, "ok": {ferry.FloatValue(21.5), false},
	}
	check := func(s ferry.Sample) {
		t.Helper()
		w := want[s.Point]
		switch {
		case w.bad && (s.Quality != ferry.BadQuality(reasonOutOfRange) || !s.Value.Equal(w.v)):
			t.Errorf("%s: %v %v, want Bad %q with %v", s.Point, s.Value, s.Quality, reasonOutOfRange, w.v)
		case !w.bad && (!s.Quality.IsGood() || !s.Value.Equal(w.v)):
			t.Errorf("%s: %v %v, want Good %v", s.Point, s.Value, s.Quality, w.v)
		}
	}
	for _, s := range store.committed()[n].Samples {
		check(s)
	}
	if got := testutil.ToFloat64(opts.Metrics.payloadErrs.WithLabelValues("env", label.Code(reasonOutOfRange))); got != 5 {
		t.Errorf("payload_errors_total{env, out of range} = %v, want 5", got)
	}

	want["value"] = want["huge"]
	for _, p := range []string{"1e400", digits} {
		n := len(store.committed())
		b.Publish(t, "r/level", []byte(p), 1, false)
		waitFor(t, "scan", 5*time.Second, func() bool { return len(store.committed()) > n })
		check(store.committed()[n].Samples[0])
	}
	if got := testutil.ToFloat64(opts.Metrics.payloadErrs.WithLabelValues("level", label.Code(reasonOutOfRange))); got != 2 {
		t.Errorf("payload_errors_total{level, out of range} = %v, want 2", got)
	}
}
