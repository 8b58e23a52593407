package codec

import (
	"errors"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

// TestTelemetryReaderYieldsTheRecord reads testScans through the reader
// and checks every field against what was encoded.
func TestTelemetryReaderYieldsTheRecord(t *testing.T) {
	scans := testScans()
	data := AppendTelemetry(nil, "cfg-1", "press3", scans)
	var tr TelemetryReader
	if err := tr.Reset(data); err != nil {
		t.Fatal(err)
	}
	if string(tr.ConfigVersion()) != "cfg-1" || string(tr.Device()) != "press3" {
		t.Fatalf("config version %q, device %q", tr.ConfigVersion(), tr.Device())
	}
	var s SampleView
	i := 0
	for st, n, ok := tr.NextScan(); ok; st, n, ok = tr.NextScan() {
		want := scans[i]
		if st != want.Time.UnixNano() || n != len(want.Samples) {
			t.Fatalf("scan %d: time %d, %d samples; want %d, %d", i, st, n, want.Time.UnixNano(), len(want.Samples))
		}
		j := 0
		for tr.NextSample(&s) {
			w := want.Samples[j]
			v := s.Value
			if v.Kind() == ferry.KindString {
				if v.Str() != "" {
					t.Errorf("scan %d sample %d: string value carries text %q", i, j, v.Str())
				}
				v = ferry.StringValue(string(s.Text))
			}
			if string(s.Point) != w.Point || !v.Equal(w.Value) || s.Status != w.Quality.Status ||
				string(s.Reason) != w.Quality.Reason || s.Time != w.Time.UnixNano() {
				t.Errorf("scan %d sample %d: got %q %v %v %q %d, want %+v", i, j, s.Point, v, s.Status, s.Reason, s.Time, w)
			}
			j++
		}
		if j != len(want.Samples) {
			t.Fatalf("scan %d: %d samples read, want %d", i, j, len(want.Samples))
		}
		i++
	}
	if err := tr.Err(); err != nil || i != len(scans) {
		t.Fatalf("%d scans read, err %v", i, err)
	}
}

// TestTelemetryReaderSkipsUnreadSamples: NextScan moves past the samples
// the caller did not read, and still checks the record's end.
func TestTelemetryReaderSkipsUnreadSamples(t *testing.T) {
	data := AppendTelemetry(nil, "v", "d", testScans())
	var tr TelemetryReader
	for _, tail := range [][]byte{nil, {0}} {
		if err := tr.Reset(append(data[:len(data):len(data)], tail...)); err != nil {
			t.Fatal(err)
		}
		var times []int64
		for st, _, ok := tr.NextScan(); ok; st, _, ok = tr.NextScan() {
			times = append(times, st)
		}
		if len(times) != 2 || times[1]-times[0] != int64(time.Second) {
			t.Fatalf("scan times %v", times)
		}
		if err := tr.Err(); (err != nil) != (tail != nil) || err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("with %d trailing bytes: err %v", len(tail), err)
		}
	}
}

// TestTelemetryReaderRefusesDamage: every truncation and a wrong kind are
// reported by Err (or Reset), never as a complete record.
func TestTelemetryReaderRefusesDamage(t *testing.T) {
	data := AppendTelemetry(nil, "v", "d", testScans())
	var tr TelemetryReader
	var s SampleView
	for n := 0; n < len(data); n++ {
		if err := tr.Reset(data[:n]); err == nil {
			for _, _, ok := tr.NextScan(); ok; _, _, ok = tr.NextScan() {
				for tr.NextSample(&s) {
				}
			}
		}
		if err := tr.Err(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: err = %v, want ErrCorrupt", n, err)
		}
	}
	alert := AppendAlert(nil, "v", &ferry.Alert{ID: "a", Rule: "r"})
	if err := tr.Reset(alert); !errors.Is(err, ErrCorrupt) || tr.Err() != err {
		t.Fatalf("alert record: Reset = %v, Err = %v", err, tr.Err())
	}
	if _, _, ok := tr.NextScan(); ok {
		t.Fatal("NextScan after a failed Reset")
	}
}

// readAll reads data through tr and returns the number of samples.
func readAll(tr *TelemetryReader, s *SampleView, data []byte) int {
	n := 0
	if tr.Reset(data) != nil {
		return -1
	}
	for _, _, ok := tr.NextScan(); ok; _, _, ok = tr.NextScan() {
		for tr.NextSample(s) {
			n++
		}
	}
	if tr.Err() != nil {
		return -1
	}
	return n
}

// TestTelemetryReaderDoesNotAllocate: once warm, reading a record (strings
// and reasons included) allocates nothing.
func TestTelemetryReaderDoesNotAllocate(t *testing.T) {
	data := AppendTelemetry(nil, "v", "d", testScans())
	var tr TelemetryReader
	var s SampleView
	if n := readAll(&tr, &s, data); n != 10 {
		t.Fatalf("read %d samples, want 10", n)
	}
	if a := testing.AllocsPerRun(100, func() { readAll(&tr, &s, data) }); a != 0 {
		t.Fatalf("%v allocations per record, want 0", a)
	}
}

func BenchmarkTelemetryReader50(b *testing.B) {
	sc := ferry.Scan{Device: "d", Time: t0}
	for p := 0; p < 50; p++ {
		sc.Samples = append(sc.Samples, ferry.Sample{Point: "point_" + string(rune('A'+p)), Value: ferry.FloatValue(float64(p) * 1.1), Time: t0})
	}
	data := AppendTelemetry(nil, "v", "d", []ferry.Scan{sc})
	var tr TelemetryReader
	var s SampleView
	b.ReportAllocs()
	for b.Loop() {
		if readAll(&tr, &s, data) != 50 {
			b.Fatal("short read")
		}
	}
	b.ReportMetric(float64(b.N*50)/b.Elapsed().Seconds(), "samples/s")
}
