package codec

import (
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

var t0 = time.Date(2026, 11, 24, 10, 0, 0, 123456789, time.UTC)

func testScans() []ferry.Scan {
	return []ferry.Scan{
		{Device: "press3", Time: t0, Samples: []ferry.Sample{
			{Device: "press3", Point: "oil_temp", Value: ferry.FloatValue(81.25), Time: t0},
			{Device: "press3", Point: "pressure", Value: ferry.FloatValue(0.1), Time: t0.Add(-time.Millisecond)},
			{Device: "press3", Point: "count", Value: ferry.IntValue(-42), Time: t0},
			{Device: "press3", Point: "total", Value: ferry.UintValue(math.MaxUint64), Time: t0},
			{Device: "press3", Point: "running", Value: ferry.BoolValue(true), Time: t0},
			{Device: "press3", Point: "name", Value: ferry.StringValue("Presse 3 – Öl"), Time: t0},
			{Device: "press3", Point: "dead", Quality: ferry.BadQuality(ferry.ReasonTimeout), Time: t0},
			{Device: "press3", Point: "maybe", Value: ferry.FloatValue(1), Quality: ferry.UncertainQuality("sensor cal"), Time: t0},
		}},
		{Device: "press3", Time: t0.Add(time.Second), Samples: []ferry.Sample{
			{Device: "press3", Point: "oil_temp", Value: ferry.FloatValue(math.Inf(-1)), Time: t0.Add(time.Second)},
			{Device: "press3", Point: "running", Value: ferry.BoolValue(false), Time: t0.Add(time.Second)},
		}},
	}
}

func TestTelemetryRoundTrip(t *testing.T) {
	scans := testScans()
	var e Encoder
	data := e.AppendTelemetry(nil, "cfg-1", "press3", scans)
	got, err := DecodeTelemetry(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.ConfigVersion != "cfg-1" || got.Device != "press3" || got.Kind != KindTelemetry || got.Version != Version {
		t.Fatalf("header = %+v, device %q", got.Header, got.Device)
	}
	if len(got.Scans) != len(scans) {
		t.Fatalf("%d scans, want %d", len(got.Scans), len(scans))
	}
	for i := range scans {
		if !got.Scans[i].Time.Equal(scans[i].Time) {
			t.Errorf("scan %d time %v, want %v", i, got.Scans[i].Time, scans[i].Time)
		}
		for j, w := range scans[i].Samples {
			g := got.Scans[i].Samples[j]
			if g.Device != w.Device || g.Point != w.Point || !g.Value.Equal(w.Value) || g.Quality != w.Quality || !g.Time.Equal(w.Time) {
				t.Errorf("scan %d sample %d:\n got %+v\nwant %+v", i, j, g, w)
			}
		}
	}
	// Encoding twice with one Encoder gives the same bytes (the dictionary is reset).
	again := e.AppendTelemetry(nil, "cfg-1", "press3", scans)
	if string(again) != string(data) {
		t.Fatal("second encoding differs")
	}
}

func TestTelemetryEncodingIsCompact(t *testing.T) {
	// 50 float32-exact points, 10 scans of one device: each sample should
	// cost 1 (index) + 1 (flags) + 4 (value) bytes.
	var scans []ferry.Scan
	for i := 0; i < 10; i++ {
		sc := ferry.Scan{Device: "d", Time: t0.Add(time.Duration(i) * time.Second)}
		for p := 0; p < 50; p++ {
			sc.Samples = append(sc.Samples, ferry.Sample{Point: "p" + string(rune('A'+p)), Value: ferry.FloatValue(float64(p) + 0.5), Time: sc.Time})
		}
		scans = append(scans, sc)
	}
	data := AppendTelemetry(nil, "v", "d", scans)
	perSample := float64(len(data)) / 500
	if perSample > 6.5 {
		t.Fatalf("%.2f bytes per sample, want ≤ 6.5 (total %d)", perSample, len(data))
	}
	t.Logf("%d bytes, %.2f bytes/sample", len(data), perSample)
}

func TestAlertRoundTrip(t *testing.T) {
	a := ferry.Alert{
		ID: "oil_hot/press3.oil_temp/1", Rule: "oil_hot", Device: "press3", Point: "oil_temp",
		Severity: ferry.SeverityCritical, State: ferry.AlertRaised, Value: ferry.FloatValue(81.3),
		Message: "oil 81.3 > 80", Labels: map[string]string{"line": "3", "area": "press"},
		Since: t0, Time: t0.Add(time.Second),
	}
	data := AppendAlert(nil, "cfg", &a)
	h, got, err := DecodeAlert(data)
	if err != nil {
		t.Fatal(err)
	}
	if h.Kind != KindAlert || h.ConfigVersion != "cfg" {
		t.Fatalf("header %+v", h)
	}
	if !got.Since.Equal(a.Since) || !got.Time.Equal(a.Time) || !got.Value.Equal(a.Value) {
		t.Fatalf("got %+v", got)
	}
	got.Since, got.Time, got.Value = a.Since, a.Time, a.Value
	if !reflect.DeepEqual(got, a) {
		t.Fatalf("got  %+v\nwant %+v", got, a)
	}
	if _, err := DecodeTelemetry(data); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("DecodeTelemetry(alert) = %v, want ErrCorrupt", err)
	}
}

func TestDecodeRefusesDamage(t *testing.T) {
	data := AppendTelemetry(nil, "v", "d", testScans())
	for n := 0; n < len(data); n++ {
		if _, err := DecodeTelemetry(data[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: err = %v, want ErrCorrupt", n, err)
		}
	}
	bad := append([]byte{}, data...)
	bad[0] = 99
	if _, err := DecodeTelemetry(bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("unknown version: %v", err)
	}
	if _, err := DecodeTelemetry(append(data, 0)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("trailing byte: %v", err)
	}
}

func TestAppendTelemetryMaxSplits(t *testing.T) {
	// Scans with every kind of value, shared and new point names, reasons
	// and source times: each record holds the longest prefix that fits, is
	// byte for byte what AppendTelemetry writes for it, and the records
	// together hold every scan in order.
	var scans []ferry.Scan
	for i := 0; i < 40; i++ {
		sc := testScans()[i%2]
		sc.Time = t0.Add(time.Duration(i*i) * time.Millisecond)
		for j := range sc.Samples {
			sc.Samples[j].Time = sc.Time.Add(time.Duration(j%3) * time.Microsecond)
		}
		if i%7 == 0 {
			sc.Samples = append(sc.Samples, ferry.Sample{Point: "extra" + string(rune('a'+i%26)), Value: ferry.IntValue(int64(i) << 40)})
		}
		scans = append(scans, sc)
	}
	for _, maxBytes := range []int{0, 1, 40, 100, 257, 1000, 4000, 1 << 20} {
		var e Encoder
		var got []ferry.Scan
		for rest := scans; len(rest) > 0; {
			rec, n := e.AppendTelemetryMax(nil, "cfg", "press3", rest, maxBytes)
			if n < 1 || n > len(rest) {
				t.Fatalf("max %d: n = %d of %d", maxBytes, n, len(rest))
			}
			if n > 1 && len(rec) > maxBytes {
				t.Fatalf("max %d: %d scans take %d bytes", maxBytes, n, len(rec))
			}
			if n < len(rest) {
				if longer := AppendTelemetry(nil, "cfg", "press3", rest[:n+1]); len(longer) <= maxBytes {
					t.Fatalf("max %d: stopped at %d scans, but %d fit in %d bytes", maxBytes, n, n+1, len(longer))
				}
			}
			if want := AppendTelemetry(nil, "cfg", "press3", rest[:n]); string(rec) != string(want) {
				t.Fatalf("max %d: record differs from AppendTelemetry of the same %d scans", maxBytes, n)
			}
			tel, err := DecodeTelemetry(rec)
			if err != nil {
				t.Fatalf("max %d: %v", maxBytes, err)
			}
			got = append(got, tel.Scans...)
			rest = rest[n:]
		}
		if len(got) != len(scans) {
			t.Fatalf("max %d: %d scans back, want %d", maxBytes, len(got), len(scans))
		}
		for i := range got {
			if !got[i].Time.Equal(scans[i].Time) || len(got[i].Samples) != len(scans[i].Samples) {
				t.Fatalf("max %d: scan %d differs", maxBytes, i)
			}
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(AppendTelemetry(nil, "v", "d", testScans()))
	f.Add(AppendAlert(nil, "v", &ferry.Alert{ID: "x", Labels: map[string]string{"a": "b"}}))
	f.Add([]byte{1, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		if tel, err := DecodeTelemetry(data); err == nil {
			// A record that decodes re-encodes to something that decodes the same.
			again, err := DecodeTelemetry(AppendTelemetry(nil, tel.ConfigVersion, tel.Device, tel.Scans))
			if err != nil || len(again.Scans) != len(tel.Scans) {
				t.Fatalf("re-encode: %v", err)
			}
			// Split into records of a third of the size: each decodes,
			// and together they hold every scan.
			var e Encoder
			n := 0
			for rest := tel.Scans; len(rest) > 0; {
				rec, k := e.AppendTelemetryMax(nil, tel.ConfigVersion, tel.Device, rest, len(data)/3)
				part, err := DecodeTelemetry(rec)
				if err != nil || k < 1 || len(part.Scans) != k {
					t.Fatalf("split: %d scans, %v", k, err)
				}
				n += k
				rest = rest[k:]
			}
			if n != len(tel.Scans) {
				t.Fatalf("split holds %d scans, want %d", n, len(tel.Scans))
			}
		}
		_, _, _ = DecodeAlert(data)
		_, _ = PeekHeader(data)
	})
}

func BenchmarkAppendTelemetry50(b *testing.B) {
	sc := ferry.Scan{Device: "d", Time: t0}
	for p := 0; p < 50; p++ {
		sc.Samples = append(sc.Samples, ferry.Sample{Point: "point_" + string(rune('A'+p)), Value: ferry.FloatValue(float64(p) * 1.1), Time: t0})
	}
	scans := []ferry.Scan{sc}
	var e Encoder
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = e.AppendTelemetry(buf[:0], "v", "d", scans)
	}
	b.ReportMetric(float64(b.N*50)/b.Elapsed().Seconds(), "samples/s")
}
