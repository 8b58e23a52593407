package opcua

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
)

func TestSampleOf(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	src := now.Add(-time.Minute)
	srvTime := now.Add(-time.Second)
	dv := func(v any, status ua.StatusCode, source, server time.Time) *ua.DataValue {
		d := &ua.DataValue{Status: status, SourceTimestamp: source, ServerTimestamp: server}
		if v != nil {
			d.Value = ua.MustVariant(v)
		}
		d.UpdateMask()
		return d
	}
	tests := []struct {
		name     string
		dv       *ua.DataValue
		index    int
		want     ferry.Value
		wantQ    ferry.Quality
		wantTime time.Time
	}{
		{"good", dv(1.5, ua.StatusOK, src, srvTime), -1, ferry.FloatValue(1.5), ferry.GoodQuality, src},
		{"server time only", dv(int32(3), ua.StatusOK, time.Time{}, srvTime), -1, ferry.IntValue(3), ferry.GoodQuality, srvTime},
		{"no time", dv(true, ua.StatusOK, time.Time{}, time.Time{}), -1, ferry.BoolValue(true), ferry.GoodQuality, now},
		{"uncertain keeps value", dv(2.0, ua.StatusUncertainLastUsableValue, src, srvTime), -1, ferry.FloatValue(2), ferry.UncertainQuality("UncertainLastUsableValue"), src},
		{"bad drops value", dv(2.0, ua.StatusBadSensorFailure, src, srvTime), -1, ferry.Value{}, ferry.BadQuality("BadSensorFailure"), src},
		{"bad node", dv(nil, ua.StatusBadNodeIDUnknown, time.Time{}, srvTime), -1, ferry.Value{}, ferry.BadQuality("BadNodeIdUnknown"), srvTime},
		{"null value", dv(nil, ua.StatusOK, src, srvTime), -1, ferry.Value{}, ferry.BadQuality("null value"), src},
		{"nil data value", nil, -1, ferry.Value{}, ferry.BadQuality("null value"), now},
		{"array refused", dv([]float64{1, 2, 3}, ua.StatusOK, src, srvTime), -1, ferry.Value{}, ferry.BadQuality("array value"), src},
		{"array element", dv([]float64{1, 2, 3}, ua.StatusOK, src, srvTime), 2, ferry.FloatValue(3), ferry.GoodQuality, src},
		{"byte array element", dv(ua.ByteArray{7, 8}, ua.StatusOK, src, srvTime), 1, ferry.UintValue(8), ferry.GoodQuality, src},
		{"string array element", dv([]string{"a", "b"}, ua.StatusOK, src, srvTime), 0, ferry.StringValue("a"), ferry.GoodQuality, src},
		{"index out of range", dv([]int32{1}, ua.StatusOK, src, srvTime), 5, ferry.Value{}, ferry.BadQuality("index out of range"), src},
		{"index on a scalar", dv(1.0, ua.StatusOK, src, srvTime), 0, ferry.Value{}, ferry.BadQuality("not a one-dimensional array of a supported type"), src},
		{"byte string", dv([]byte{1, 2}, ua.StatusOK, src, srvTime), -1, ferry.Value{}, ferry.BadQuality("unsupported type ByteString"), src},
		{"guid", dv(ua.NewGUID("72962b91-fa75-4ae6-8d28-b404dc7daf63"), ua.StatusOK, src, srvTime), -1, ferry.Value{}, ferry.BadQuality("unsupported type GUID"), src},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s ferry.Sample
			sampleOf(&s, tt.dv, tt.index, now)
			if !s.Value.Equal(tt.want) || s.Quality != tt.wantQ || !s.Time.Equal(tt.wantTime) {
				t.Errorf("got %v %v %v, want %v %v %v", s.Value, s.Quality, s.Time, tt.want, tt.wantQ, tt.wantTime)
			}
		})
	}
}

// FuzzSampleOf maps data values built from fuzzed parts (type, value,
// array length, status, timestamps, index): never a panic, a Bad sample
// carries no value and a Good or Uncertain one does.
//
// It does not feed raw bytes to gopcua's decoder: v0.9.1's Variant.Decode
// panics on an array length below -1 and allocates up to 8 GiB for an
// array dimension count read from the wire (fatal, not recoverable), as
// an earlier version of this target found. See the README's caveats.
func FuzzSampleOf(f *testing.F) {
	f.Add(uint8(11), uint64(0x3ff8000000000000), "", uint8(0), uint32(0), int64(1e18), int16(-1))
	f.Add(uint8(12), uint64(0), "x", uint8(3), uint32(0x40000000), int64(0), int16(2))
	f.Add(uint8(19), uint64(0x80340000), "", uint8(0), uint32(0x80000000), int64(-1), int16(-1))
	f.Add(uint8(15), uint64(7), "bytes", uint8(2), uint32(0), int64(5), int16(9))
	now := time.Unix(2e9, 0)
	f.Fuzz(func(t *testing.T, kind uint8, num uint64, str string, n uint8, status uint32, nanos int64, index int16) {
		scalar := func() any {
			switch kind % 20 {
			case 0:
				return num&1 == 1
			case 1:
				return int8(num)
			case 2:
				return uint8(num)
			case 3:
				return int16(num)
			case 4:
				return uint16(num)
			case 5:
				return int32(num)
			case 6:
				return uint32(num)
			case 7:
				return int64(num)
			case 8:
				return num
			case 9:
				return math.Float32frombits(uint32(num))
			case 10:
				return math.Float64frombits(num)
			case 11:
				return str
			case 12:
				return time.Unix(0, int64(num)).UTC()
			case 13:
				return ua.NewLocalizedText(str)
			case 14:
				return ua.StatusCode(num)
			case 15:
				return []byte(str)
			case 16:
				return ua.NewStringNodeID(uint16(num), str)
			case 17:
				return &ua.QualifiedName{Name: str}
			case 18:
				return ua.NewGUID(str)
			}
			return nil
		}
		var v any = scalar()
		if n > 0 && kind%20 < 15 {
			// An array of n copies, of the element's own slice type.
			rv := reflect.MakeSlice(reflect.SliceOf(reflect.TypeOf(v)), int(n), int(n))
			for i := range int(n) {
				rv.Index(i).Set(reflect.ValueOf(scalar()))
			}
			v = rv.Interface()
		}
		d := &ua.DataValue{Status: ua.StatusCode(status), SourceTimestamp: time.Unix(0, nanos)}
		if v != nil {
			vv, err := ua.NewVariant(v)
			if err != nil {
				return
			}
			d.Value = vv
		}
		d.UpdateMask()
		var s ferry.Sample
		sampleOf(&s, d, int(index), now)
		if s.Quality.Status == ferry.Bad && !s.Value.IsNone() {
			t.Fatalf("bad sample with a value: %v", s)
		}
		if s.Quality.Status != ferry.Bad && s.Value.IsNone() {
			t.Fatalf("%v sample without a value", s.Quality)
		}
		if s.Time.IsZero() {
			t.Fatal("sample without a time")
		}
	})
}

// TestItemResults: a monitored item the server refuses (per-item result
// code, as real servers answer for an unknown node; the gopcua test server
// always answers Good) marks only its point Bad.
func TestItemResults(t *testing.T) {
	d := newDriver(t, testDevice("plc", "opc.tcp://127.0.0.1:4840", insecure,
		Point{Name: "a", Node: "i=1"}, Point{Name: "b", Node: "i=2"}, Point{Name: "c", Node: "i=3"}, Point{Name: "d", Node: "i=4"}))
	dv := d.devs[0]
	n := dv.itemResults([]int{0, 1, 2, 3}, []*ua.MonitoredItemCreateResult{
		{StatusCode: ua.StatusOK},
		{StatusCode: ua.StatusBadNodeIDUnknown},
		nil,
		{StatusCode: ua.StatusUncertain},
	})
	if n != 2 {
		t.Errorf("created %d, want 2", n)
	}
	want := []string{"", "BadNodeIdUnknown", "Bad", ""}
	for i, p := range dv.points {
		if p.failed != want[i] {
			t.Errorf("%s: failed %q, want %q", p.name, p.failed, want[i])
		}
	}
}

func TestDeadbandFilter(t *testing.T) {
	if f := deadbandFilter(Deadband{Type: "none"}); f != nil {
		t.Errorf("none: %v", f)
	}
	for _, tt := range []struct {
		typ  string
		want ua.DeadbandType
	}{{"absolute", ua.DeadbandTypeAbsolute}, {"percent", ua.DeadbandTypePercent}} {
		eo := deadbandFilter(Deadband{Type: tt.typ, Value: 0.5})
		f, ok := eo.Value.(*ua.DataChangeFilter)
		if !ok || f.DeadbandType != uint32(tt.want) || f.DeadbandValue != 0.5 || f.Trigger != ua.DataChangeTriggerStatusValue {
			t.Errorf("%s: %+v", tt.typ, eo.Value)
		}
		if _, err := ua.Encode(eo); err != nil {
			t.Errorf("%s: does not encode: %v", tt.typ, err)
		}
	}
}
