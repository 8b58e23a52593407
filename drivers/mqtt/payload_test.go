package mqtt

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/label"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// want is the expected sample of one point: a value, or a Bad reason.
type want struct {
	v   ferry.Value
	bad string
}

func checkSamples(t *testing.T, got []ferry.Sample, device string, wantTime time.Time, w map[string]want) {
	t.Helper()
	if len(got) != len(w) {
		t.Fatalf("got %d samples, want %d: %+v", len(got), len(w), got)
	}
	for _, s := range got {
		ww, ok := w[s.Point]
		if !ok {
			t.Errorf("unexpected point %q", s.Point)
			continue
		}
		if s.Device != device {
			t.Errorf("%s: device %q, want %q", s.Point, s.Device, device)
		}
		if ww.bad != "" {
			if s.Quality != ferry.BadQuality(ww.bad) || !s.Value.IsNone() {
				t.Errorf("%s: %v %v, want bad: %s", s.Point, s.Value, s.Quality, ww.bad)
			}
		} else if !s.Quality.IsGood() || !s.Value.Equal(ww.v) {
			t.Errorf("%s: %v (%s) %v, want %v (%s)", s.Point, s.Value, s.Value.Kind(), s.Quality, ww.v, ww.v.Kind())
		}
		if !wantTime.IsZero() && !s.Time.Equal(wantTime) {
			t.Errorf("%s: time %v, want %v", s.Point, s.Time, wantTime)
		}
	}
}

// TestJSONPayloads publishes JSON payloads through a real broker and
// checks the samples: nested paths, arrays, quoted keys, type coercion,
// timestamps in every layout, and bad payloads (Bad samples, counters, and
// the message still acknowledged).
func TestJSONPayloads(t *testing.T) {
	b := testpeer.Broker(t)
	reg := prometheus.NewRegistry()
	store := newCommitStore(t)
	received := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	opts := testOptions(reg)
	opts.Now = func() time.Time { return received }

	full := jsonDevice("env", b.URL(), "t/env",
		Point{Name: "temp", Path: "temp"},
		Point{Name: "hum", Path: "env.hum"},
		Point{Name: "first", Path: "readings[0].value"},
		Point{Name: "second", Path: "readings[1].value", Type: "float"},
		Point{Name: "odd", Path: `["a.b"].c`},
		Point{Name: "count", Path: "n", Type: "int"},
		Point{Name: "on", Path: "flags.on", Type: "bool"},
		Point{Name: "label", Path: "name"},
		Point{Name: "big", Path: "big"},
	)
	full.Config.Time = Time{Path: "ts", Layout: LayoutRFC3339}
	devs := []Device{full}
	layouts := []struct{ name, layout string }{
		{"ts_s", LayoutUnixS}, {"ts_ms", LayoutUnixMS}, {"ts_ns", LayoutUnixNS}, {"ts_go", "2006-01-02 15:04:05.000"},
	}
	for _, l := range layouts {
		d := jsonDevice(l.name, b.URL(), "t/"+l.name, Point{Name: "v", Path: "v"})
		d.Config.Time = Time{Path: "meta.t", Layout: l.layout}
		devs = append(devs, d)
	}
	r := start(t, devs, opts, store.emit)
	r.waitSubscribed(t, b, len(devs))

	tests := []struct {
		name     string
		topic    string
		payload  string
		device   string
		wantTime time.Time
		want     map[string]want
		errs     map[string]float64 // payload_errors_total by reason
	}{
		{
			name:  "all paths",
			topic: "t/env", device: "env",
			payload: `{"ts":"2024-05-06T07:08:09.5Z","temp":21.5,"env":{"hum":40},
			  "readings":[{"value":"x\u00e9y"},{"value":"2.5"}],"a.b":{"c":true},
			  "n":"7","flags":{"on":1},"name":"press \"3\"","big":18446744073709551615}`,
			wantTime: time.Date(2024, 5, 6, 7, 8, 9, 5e8, time.UTC),
			want: map[string]want{
				"temp": {v: ferry.FloatValue(21.5)}, "hum": {v: ferry.IntValue(40)},
				"first": {v: ferry.StringValue("xéy")}, "second": {v: ferry.FloatValue(2.5)},
				"odd": {v: ferry.BoolValue(true)}, "count": {v: ferry.IntValue(7)},
				"on": {v: ferry.BoolValue(true)}, "label": {v: ferry.StringValue(`press "3"`)},
				"big": {v: ferry.UintValue(math.MaxUint64)},
			},
		},
		{
			name:  "missing paths and wrong types",
			topic: "t/env", device: "env",
			payload:  `{"ts":"yesterday","temp":{"x":1},"env":{},"readings":[],"n":2.5,"flags":{"on":"maybe"},"name":null}`,
			wantTime: received,
			want: map[string]want{
				"temp": {bad: reasonWrongType}, "hum": {bad: reasonMissingPath},
				"first": {bad: reasonMissingPath}, "second": {bad: reasonMissingPath},
				"odd": {bad: reasonMissingPath}, "count": {bad: reasonWrongType},
				"on": {bad: reasonWrongType}, "label": {bad: reasonNull}, "big": {bad: reasonMissingPath},
			},
			errs: map[string]float64{reasonBadTime: 1, reasonWrongType: 3, reasonMissingPath: 5, reasonNull: 1},
		},
		{
			name:  "not json",
			topic: "t/env", device: "env",
			payload:  `{"temp": 21.5`,
			wantTime: received,
			want: map[string]want{
				"temp": {bad: reasonNotJSON}, "hum": {bad: reasonNotJSON}, "first": {bad: reasonNotJSON},
				"second": {bad: reasonNotJSON}, "odd": {bad: reasonNotJSON}, "count": {bad: reasonNotJSON},
				"on": {bad: reasonNotJSON}, "label": {bad: reasonNotJSON}, "big": {bad: reasonNotJSON},
			},
			errs: map[string]float64{reasonNotJSON: 1},
		},
		{
			name: "unix_s", topic: "t/ts_s", device: "ts_s",
			payload:  `{"v":1,"meta":{"t":1700000000.25}}`,
			wantTime: time.Unix(1700000000, 25e7).UTC(),
			want:     map[string]want{"v": {v: ferry.IntValue(1)}},
		},
		{
			name: "unix_ms", topic: "t/ts_ms", device: "ts_ms",
			payload:  `{"v":2,"meta":{"t":"1700000000123"}}`,
			wantTime: time.UnixMilli(1700000000123).UTC(),
			want:     map[string]want{"v": {v: ferry.IntValue(2)}},
		},
		{
			name: "unix_ns", topic: "t/ts_ns", device: "ts_ns",
			payload:  `{"v":3,"meta":{"t":1700000000123456789}}`,
			wantTime: time.Unix(0, 1700000000123456789).UTC(),
			want:     map[string]want{"v": {v: ferry.IntValue(3)}},
		},
		{
			name: "go layout", topic: "t/ts_go", device: "ts_go",
			payload:  `{"v":-4,"meta":{"t":"2024-02-29 23:59:58.125"}}`,
			wantTime: time.Date(2024, 2, 29, 23, 59, 58, 125e6, time.UTC),
			want:     map[string]want{"v": {v: ferry.IntValue(-4)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := map[string]float64{}
			for r := range tt.errs {
				before[r] = testutil.ToFloat64(opts.Metrics.payloadErrs.WithLabelValues(tt.device, label.Code(r)))
			}
			n := len(store.committed())
			b.Publish(t, tt.topic, []byte(tt.payload), 1, false)
			waitFor(t, "scan", 5*time.Second, func() bool { return len(store.committed()) > n })
			sc := store.committed()[n]
			checkSamples(t, sc.Samples, sc.Device, tt.wantTime, tt.want)
			if sc.Key == "" || sc.Redelivered {
				t.Errorf("QoS 1 scan: key %q redelivered %v", sc.Key, sc.Redelivered)
			}
			for r, w := range tt.errs {
				if got := testutil.ToFloat64(opts.Metrics.payloadErrs.WithLabelValues(tt.device, label.Code(r))) - before[r]; got != w {
					t.Errorf("payload_errors_total{reason=%q} grew by %v, want %v", r, got, w)
				}
			}
			// Good or bad, the message is acknowledged once committed.
			waitFor(t, "acknowledgement", 5*time.Second, func() bool { return b.Inflight(r.d.ClientID()) == 0 })
		})
	}
}

// TestValuePayloads checks the value format: the payload is one number,
// bool or string; a configured type converts it.
func TestValuePayloads(t *testing.T) {
	b := testpeer.Broker(t)
	store := newCommitStore(t)
	plain := jsonDevice("plain", b.URL(), "v/plain", Point{Name: "value"})
	plain.Config.Format = FormatValue
	typed := jsonDevice("typed", b.URL(), "v/typed", Point{Name: "level", Type: "float"})
	typed.Config.Format = FormatValue
	r := start(t, []Device{plain, typed}, testOptions(nil), store.emit)
	r.waitSubscribed(t, b, 2)

	tests := []struct {
		topic, payload string
		want           want
	}{
		{"v/plain", "21.5", want{v: ferry.FloatValue(21.5)}},
		{"v/plain", " 42\n", want{v: ferry.IntValue(42)}},
		{"v/plain", "-7", want{v: ferry.IntValue(-7)}},
		{"v/plain", "true", want{v: ferry.BoolValue(true)}},
		{"v/plain", "RUNNING", want{v: ferry.StringValue("RUNNING")}},
		{"v/plain", `"quoted \u0041"`, want{v: ferry.StringValue("quoted A")}},
		{"v/plain", "", want{bad: reasonBadValue}},
		{"v/plain", "\xff\xfe", want{bad: reasonBadValue}},
		{"v/typed", "3", want{v: ferry.FloatValue(3)}},
		{"v/typed", "1e3", want{v: ferry.FloatValue(1000)}},
		{"v/typed", "high", want{bad: reasonWrongType}},
	}
	for _, tt := range tests {
		n := len(store.committed())
		b.Publish(t, tt.topic, []byte(tt.payload), 0, false)
		waitFor(t, "scan of "+tt.payload, 5*time.Second, func() bool { return len(store.committed()) > n })
		sc := store.committed()[n]
		pt := "value"
		if tt.topic == "v/typed" {
			pt = "level"
		}
		checkSamples(t, sc.Samples, sc.Device, time.Time{}, map[string]want{pt: tt.want})
		if sc.Key != "" || sc.Done != nil {
			t.Errorf("QoS 0 scan has key %q / Done", sc.Key)
		}
	}
}
