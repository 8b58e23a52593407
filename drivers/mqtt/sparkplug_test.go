package mqtt

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/label"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// A Sparkplug B encoder written for the tests from the specification's
// field numbers (org.eclipse.tahu.protobuf.Payload), independent of the
// decoder: it appends tags and values with protowire.

type tMetric struct {
	name     string
	alias    uint64
	hasAlias bool
	ts       uint64
	dt       uint32
	isNull   bool
	extras   bool // add is_historical and properties, which the decoder skips
	// At most one value, in the field its data type uses.
	intV    *uint32
	longV   *uint64
	floatV  *float32
	doubleV *float64
	boolV   *bool
	strV    *string
	bytesV  []byte
}

func u32(v uint32) *uint32   { return &v }
func u64(v uint64) *uint64   { return &v }
func f32(v float32) *float32 { return &v }
func f64(v float64) *float64 { return &v }
func boolp(v bool) *bool     { return &v }
func strp(v string) *string  { return &v }

func encMetric(m tMetric) []byte {
	var b []byte
	if m.name != "" {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, m.name)
	}
	if m.hasAlias {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, m.alias)
	}
	if m.ts != 0 {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, m.ts)
	}
	if m.dt != 0 {
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.dt))
	}
	if m.extras {
		b = protowire.AppendTag(b, 5, protowire.VarintType)
		b = protowire.AppendVarint(b, 0)
		b = protowire.AppendTag(b, 9, protowire.BytesType)
		b = protowire.AppendBytes(b, []byte{0x0a, 0x07, 'Q', 'u', 'a', 'l', 'i', 't', 'y'})
	}
	if m.isNull {
		b = protowire.AppendTag(b, 7, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	switch {
	case m.intV != nil:
		b = protowire.AppendTag(b, 10, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(*m.intV))
	case m.longV != nil:
		b = protowire.AppendTag(b, 11, protowire.VarintType)
		b = protowire.AppendVarint(b, *m.longV)
	case m.floatV != nil:
		b = protowire.AppendTag(b, 12, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(*m.floatV))
	case m.doubleV != nil:
		b = protowire.AppendTag(b, 13, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(*m.doubleV))
	case m.boolV != nil:
		b = protowire.AppendTag(b, 14, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeBool(*m.boolV))
	case m.strV != nil:
		b = protowire.AppendTag(b, 15, protowire.BytesType)
		b = protowire.AppendString(b, *m.strV)
	case m.bytesV != nil:
		b = protowire.AppendTag(b, 16, protowire.BytesType)
		b = protowire.AppendBytes(b, m.bytesV)
	}
	return b
}

// encPayload encodes a payload; seq < 0 leaves it out.
func encPayload(ts uint64, seq int, metrics ...tMetric) []byte {
	var b []byte
	if ts != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, ts)
	}
	for _, m := range metrics {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, encMetric(m))
	}
	if seq >= 0 {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(seq))
	}
	// uuid and an unknown extension field, which the decoder skips.
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendString(b, "ferry-test")
	b = protowire.AppendTag(b, 1000, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, 7)
	return b
}

// TestDecodeSparkplugGolden decodes bytes derived by hand from the
// specification, so that encoder and decoder cannot share a mistake.
func TestDecodeSparkplugGolden(t *testing.T) {
	// Payload{timestamp: 1, metrics: [{name: "a", datatype: Double (10),
	// double_value: 1.5}, {alias: 7, datatype: Int8 (1), int_value: -1 as
	// uint32}], seq: 2}
	//   08 01                      timestamp = 1
	//   12 0e                      metric, 14 bytes
	//     0a 01 61                 name "a"
	//     20 0a                    datatype 10
	//     69 00..00 f8 3f          double_value (field 13, fixed64) 1.5
	//   12 0a                      metric, 10 bytes
	//     10 07                    alias 7
	//     20 01                    datatype 1
	//     50 ff ff ff ff 0f        int_value (field 10) 0xffffffff
	//   18 02                      seq = 2
	golden, _ := hex.DecodeString("0801" + "120e" + "0a0161" + "200a" + "69000000000000f83f" +
		"120a" + "1007" + "2001" + "50ffffffff0f" + "1802")
	var p spPayload
	if err := decodeSparkplug(golden, &p); err != nil {
		t.Fatal(err)
	}
	if !p.hasTime || p.timestamp != 1 || !p.hasSeq || p.seq != 2 || len(p.metrics) != 2 {
		t.Fatalf("payload %+v", p)
	}
	if v, r := p.metrics[0].value(0); r != "" || !v.Equal(ferry.FloatValue(1.5)) || string(p.metrics[0].name) != "a" {
		t.Errorf("metric 0: %v %q", v, r)
	}
	if v, r := p.metrics[1].value(0); r != "" || !v.Equal(ferry.IntValue(-1)) || p.metrics[1].alias != 7 {
		t.Errorf("metric 1: %v %q", v, r)
	}
	if enc := encPayload(1, 2, tMetric{name: "a", dt: spDouble, doubleV: f64(1.5)}); !bytes.Contains(enc, golden[2:18]) {
		t.Errorf("test encoder disagrees with the golden metric:\n%x\n%x", enc, golden[2:18])
	}
}

func TestSparkplugValues(t *testing.T) {
	neg := func(v int64) uint32 { return uint32(v) } // two's complement, as Tahu writes it
	tests := []struct {
		name string
		m    tMetric
		bdt  uint32 // datatype declared by BIRTH
		want ferry.Value
		bad  string
	}{
		{"int8 -1 sign-extended", tMetric{dt: spInt8, intV: u32(neg(-1))}, 0, ferry.IntValue(-1), ""},
		{"int8 -2 in 8 bits", tMetric{dt: spInt8, intV: u32(0xfe)}, 0, ferry.IntValue(-2), ""},
		{"int16", tMetric{dt: spInt16, intV: u32(neg(-300))}, 0, ferry.IntValue(-300), ""},
		{"int32", tMetric{dt: spInt32, intV: u32(neg(-70000))}, 0, ferry.IntValue(-70000), ""},
		{"int64", tMetric{dt: spInt64, longV: u64(uint64(1<<63 + 5))}, 0, ferry.IntValue(-1<<63 + 5), ""},
		{"uint8", tMetric{dt: spUInt8, intV: u32(255)}, 0, ferry.UintValue(255), ""},
		{"uint16", tMetric{dt: spUInt16, intV: u32(65535)}, 0, ferry.UintValue(65535), ""},
		{"uint32 in long", tMetric{dt: spUInt32, longV: u64(4294967295)}, 0, ferry.UintValue(4294967295), ""},
		{"uint64", tMetric{dt: spUInt64, longV: u64(math.MaxUint64)}, 0, ferry.UintValue(math.MaxUint64), ""},
		{"float", tMetric{dt: spFloat, floatV: f32(3.25)}, 0, ferry.FloatValue(3.25), ""},
		{"double", tMetric{dt: spDouble, doubleV: f64(-0.125), extras: true}, 0, ferry.FloatValue(-0.125), ""},
		{"boolean", tMetric{dt: spBoolean, boolV: boolp(true)}, 0, ferry.BoolValue(true), ""},
		{"string", tMetric{dt: spString, strV: strp("auto")}, 0, ferry.StringValue("auto"), ""},
		{"datetime", tMetric{dt: spDateTime, longV: u64(1700000000000)}, 0, ferry.IntValue(1700000000000), ""},
		{"type from birth", tMetric{intV: u32(neg(-5))}, spInt16, ferry.IntValue(-5), ""},
		{"null", tMetric{dt: spDouble, isNull: true}, 0, ferry.Value{}, reasonNull},
		{"bytes", tMetric{dt: 17, bytesV: []byte{1}}, 0, ferry.Value{}, reasonUnsupported},
		{"no value", tMetric{dt: spDouble}, 0, ferry.Value{}, reasonBadValue},
		{"int field for a string", tMetric{dt: spString, intV: u32(1)}, 0, ferry.Value{}, reasonWrongType},
		{"bad utf-8", tMetric{dt: spString, strV: strp("\xff")}, 0, ferry.Value{}, reasonBadValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p spPayload
			if err := decodeSparkplug(encPayload(0, -1, tt.m), &p); err != nil {
				t.Fatal(err)
			}
			v, bad := p.metrics[0].value(tt.bdt)
			if bad != tt.bad || !v.Equal(tt.want) {
				t.Fatalf("got %v (%s) %q, want %v (%s) %q", v, v.Kind(), bad, tt.want, tt.want.Kind(), tt.bad)
			}
		})
	}
}

func TestDecodeSparkplugErrors(t *testing.T) {
	good := encPayload(5, 1, tMetric{name: "Temperature", alias: 1, hasAlias: true, dt: spDouble, doubleV: f64(1)})
	tests := []struct {
		name string
		b    []byte
	}{
		{"truncated", good[:len(good)/2]},
		{"truncated varint", []byte{0x08, 0x80}},
		{"metric length beyond end", []byte{0x12, 0x20, 0x0a}},
		{"timestamp as bytes", []byte{0x0a, 0x01, 0x00}},
		{"metric as varint", []byte{0x10, 0x01}},
		{"name as varint", []byte{0x12, 0x02, 0x08, 0x01}},
		{"double as fixed32", []byte{0x12, 0x05, 0x6d, 0, 0, 0, 0}},
		{"bad tag", []byte{0x00}},
		{"end group without start", []byte{0x0c}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p spPayload
			if err := decodeSparkplug(tt.b, &p); !errors.Is(err, errBadProtobuf) {
				t.Fatalf("err = %v, want errBadProtobuf", err)
			}
		})
	}
}

func TestParseSparkplugTopic(t *testing.T) {
	tests := []struct {
		topic string
		want  spTopic
		ok    bool
	}{
		{"spBv1.0/G/NBIRTH/E", spTopic{"G", "NBIRTH", "E", ""}, true},
		{"spBv1.0/G/DDATA/E/D", spTopic{"G", "DDATA", "E", "D"}, true},
		{"spBv1.0/G/DDATA/E", spTopic{}, false},
		{"spBv1.0/G/NDATA/E/D", spTopic{}, false},
		{"spBv1.0/G/XDATA/E", spTopic{}, false},
		{"spBv1.0/G/DDATA/E/D/extra", spTopic{}, false},
		{"spAv1.0/G/NDATA/E", spTopic{}, false},
		{"spBv1.0", spTopic{}, false},
		{"spBv1.0/STATE/host", spTopic{}, false},
	}
	for _, tt := range tests {
		got, ok := parseSparkplugTopic(tt.topic)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("%q: %+v %v, want %+v %v", tt.topic, got, ok, tt.want, tt.ok)
		}
	}
}

func sparkplugDevice(name, broker, device string, points ...Point) Device {
	d := Device{Name: name, Points: points}
	d.Config.SetDefaults()
	d.Config.Broker = broker
	d.Config.Format = FormatSparkplug
	d.Config.Sparkplug = Sparkplug{GroupID: "G1", EdgeNode: "E1", Device: device}
	return d
}

// TestSparkplugSession plays an edge node's life through a real broker:
// births with aliases, data by alias, a sequence gap, an unknown alias, a
// truncated payload, deaths (a stale one ignored) and a rebirth.
func TestSparkplugSession(t *testing.T) {
	b := testpeer.Broker(t)
	store := newCommitStore(t)
	opts := testOptions(nil)
	received := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	opts.Now = func() time.Time { return received }
	node := sparkplugDevice("node", b.URL(), "",
		Point{Name: "temp", Metric: "Temperature"},
		Point{Name: "running", Metric: "Running"},
		Point{Name: "count", Metric: "Count", Type: "int"})
	press := sparkplugDevice("press", b.URL(), "press1",
		Point{Name: "pressure", Metric: "Pressure"},
		Point{Name: "mode", Metric: "Mode"},
		Point{Name: "raw", Metric: "Raw"})
	r := start(t, []Device{node, press}, opts, store.emit)
	waitFor(t, "subscription", 5*time.Second, func() bool { return b.Subscriptions(r.d.ClientID()) == 1 })
	m := opts.Metrics

	const base = "spBv1.0/G1/"
	step := func(name, topic string, payload []byte, qos byte, wantScans int) []ferry.Scan {
		t.Helper()
		n := len(store.committed())
		b.Publish(t, topic, payload, qos, false)
		waitFor(t, name, 5*time.Second, func() bool { return len(store.committed()) >= n+wantScans })
		return store.committed()[n:]
	}
	ts := uint64(1714000000000)
	at := time.UnixMilli(int64(ts)).UTC()

	// NBIRTH: bdSeq 1, seq 0, metrics with aliases.
	sc := step("NBIRTH", base+"NBIRTH/E1", encPayload(ts, 0,
		tMetric{name: "bdSeq", dt: spInt64, longV: u64(1)},
		tMetric{name: "Temperature", alias: 1, hasAlias: true, dt: spDouble, doubleV: f64(20.5), extras: true},
		tMetric{name: "Running", alias: 2, hasAlias: true, dt: spBoolean, boolV: boolp(true)},
		tMetric{name: "Count", alias: 3, hasAlias: true, dt: spInt8, intV: u32(0xffffffff)},
		tMetric{name: "Other", alias: 4, hasAlias: true, dt: spDouble, doubleV: f64(9)},
	), 0, 1)
	checkSamples(t, sc[0].Samples, "node", at, map[string]want{
		"temp": {v: ferry.FloatValue(20.5)}, "running": {v: ferry.BoolValue(true)}, "count": {v: ferry.IntValue(-1)},
	})
	if !r.d.devices[0].stat.IsConnected() {
		t.Error("node not connected after NBIRTH")
	}

	// DBIRTH of press1 (seq 1) and of press2, which no ferry device maps
	// (seq 2): only press1's gives a scan.
	sc = step("DBIRTH", base+"DBIRTH/E1/press1", encPayload(ts, 1,
		tMetric{name: "Pressure", alias: 10, hasAlias: true, dt: spFloat, floatV: f32(3.25)},
		tMetric{name: "Mode", alias: 11, hasAlias: true, dt: spString, strV: strp("auto")},
		tMetric{name: "Raw", alias: 12, hasAlias: true, dt: spUInt16, intV: u32(65535)},
	), 0, 1)
	checkSamples(t, sc[0].Samples, "press", at, map[string]want{
		"pressure": {v: ferry.FloatValue(3.25)}, "mode": {v: ferry.StringValue("auto")}, "raw": {v: ferry.UintValue(65535)},
	})
	b.Publish(t, base+"DBIRTH/E1/press2", encPayload(ts, 2, tMetric{name: "Pressure", alias: 20, hasAlias: true, dt: spFloat, floatV: f32(1)}), 0, false)

	// NDATA by alias only, with a metric timestamp (seq 3).
	sc = step("NDATA", base+"NDATA/E1", encPayload(ts+1000, 3,
		tMetric{alias: 1, hasAlias: true, ts: ts + 500, doubleV: f64(21)},
		tMetric{alias: 3, hasAlias: true, intV: u32(0xfffffffe)},
	), 0, 1)
	checkSamples(t, sc[0].Samples[:1], "node", at.Add(500*time.Millisecond), map[string]want{"temp": {v: ferry.FloatValue(21)}})
	checkSamples(t, sc[0].Samples[1:], "node", at.Add(time.Second), map[string]want{"count": {v: ferry.IntValue(-2)}})

	// DDATA by alias with a null (seq 4).
	sc = step("DDATA", base+"DDATA/E1/press1", encPayload(ts+2000, 4,
		tMetric{alias: 10, hasAlias: true, floatV: f32(4.5)},
		tMetric{alias: 11, hasAlias: true, isNull: true},
	), 0, 1)
	checkSamples(t, sc[0].Samples, "press", at.Add(2*time.Second), map[string]want{
		"pressure": {v: ferry.FloatValue(4.5)}, "mode": {bad: reasonNull},
	})

	// DDATA with seq 6: 5 was lost. Also an alias no BIRTH declared.
	gaps := testutil.ToFloat64(m.payloadErrs.WithLabelValues("press", label.Code(reasonSeqGap)))
	sc = step("DDATA gap", base+"DDATA/E1/press1", encPayload(ts+3000, 6,
		tMetric{alias: 10, hasAlias: true, floatV: f32(5)},
		tMetric{alias: 99, hasAlias: true, floatV: f32(5)},
	), 0, 1)
	checkSamples(t, sc[0].Samples, "press", time.Time{}, map[string]want{"pressure": {v: ferry.FloatValue(5)}})
	if got := testutil.ToFloat64(m.payloadErrs.WithLabelValues("press", label.Code(reasonSeqGap))) - gaps; got != 1 {
		t.Errorf("seq gap counted %v times, want 1", got)
	}
	if got := testutil.ToFloat64(m.payloadErrs.WithLabelValues("press", label.Code(reasonUnknownAlias))); got != 1 {
		t.Errorf("unknown alias counted %v times, want 1", got)
	}

	// A truncated payload: counted for every device of the node.
	full := encPayload(ts, 7, tMetric{alias: 10, hasAlias: true, floatV: f32(6)})
	b.Publish(t, base+"DDATA/E1/press1", full[:len(full)-3], 1, false)
	waitFor(t, "bad protobuf counted", 5*time.Second, func() bool {
		return testutil.ToFloat64(m.payloadErrs.WithLabelValues("press", label.Code(reasonBadProtobuf))) == 1 &&
			testutil.ToFloat64(m.payloadErrs.WithLabelValues("node", label.Code(reasonBadProtobuf))) == 1
	})
	// Poison: acknowledged anyway.
	waitFor(t, "bad protobuf acknowledged", 5*time.Second, func() bool { return b.Inflight(r.d.ClientID()) == 0 })

	// DDEATH (seq 8; 7 was the truncated one, a second gap): press points
	// Bad.
	sc = step("DDEATH", base+"DDEATH/E1/press1", encPayload(ts+4000, 8), 1, 1)
	checkSamples(t, sc[0].Samples, "press", time.Time{}, map[string]want{
		"pressure": {bad: reasonDeviceDeath}, "mode": {bad: reasonDeviceDeath}, "raw": {bad: reasonDeviceDeath},
	})
	if r.d.devices[1].stat.IsConnected() {
		t.Error("press connected after DDEATH")
	}

	// A stale NDEATH (bdSeq 0, from an earlier session): ignored.
	stale := testutil.ToFloat64(m.payloadErrs.WithLabelValues("node", label.Code(reasonStaleDeath)))
	b.Publish(t, base+"NDEATH/E1", encPayload(0, -1, tMetric{name: "bdSeq", dt: spInt64, longV: u64(0)}), 1, false)
	waitFor(t, "stale death counted", 5*time.Second, func() bool {
		return testutil.ToFloat64(m.payloadErrs.WithLabelValues("node", label.Code(reasonStaleDeath))) == stale+1
	})
	if !r.d.devices[0].stat.IsConnected() {
		t.Error("a stale NDEATH took the node down")
	}

	// The real NDEATH: every point of the node and of its devices Bad.
	sc = step("NDEATH", base+"NDEATH/E1", encPayload(0, -1, tMetric{name: "bdSeq", dt: spInt64, longV: u64(1)}), 1, 2)
	for _, s := range sc {
		for _, x := range s.Samples {
			if x.Quality != ferry.BadQuality(reasonNodeDeath) {
				t.Errorf("after NDEATH: %s.%s %v", x.Device, x.Point, x.Quality)
			}
		}
	}
	if len(sc[0].Samples)+len(sc[1].Samples) != 6 {
		t.Errorf("NDEATH gave %d+%d samples, want 6", len(sc[0].Samples), len(sc[1].Samples))
	}

	// Rebirth with new aliases: the old ones are forgotten.
	sc = step("NBIRTH again", base+"NBIRTH/E1", encPayload(ts, 0,
		tMetric{name: "bdSeq", dt: spInt64, longV: u64(2)},
		tMetric{name: "Temperature", alias: 5, hasAlias: true, dt: spDouble, doubleV: f64(19)},
	), 0, 1)
	checkSamples(t, sc[0].Samples, "node", at, map[string]want{"temp": {v: ferry.FloatValue(19)}})
	sc = step("NDATA new alias", base+"NDATA/E1", encPayload(ts, 1,
		tMetric{alias: 5, hasAlias: true, doubleV: f64(18)},
		tMetric{alias: 1, hasAlias: true, doubleV: f64(99)},
	), 0, 1)
	checkSamples(t, sc[0].Samples, "node", at, map[string]want{"temp": {v: ferry.FloatValue(18)}})
	// Sequence numbers are the edge node's: both devices saw the two gaps
	// (seq 5 missing, seq 7 undecodable), and the rebirth made none.
	for _, dev := range []string{"node", "press"} {
		if got := testutil.ToFloat64(m.payloadErrs.WithLabelValues(dev, label.Code(reasonSeqGap))); got != 2 {
			t.Errorf("%s: %v seq gaps, want 2", dev, got)
		}
	}
}
