package uplink

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/codec"
)

var (
	schemaOnce sync.Once
	schemas    map[string]*jsonschema.Schema
	schemaErr  error
)

// validateWire checks a message body against uplink/wire.schema.json.
func validateWire(t testing.TB, kind string, data []byte) {
	t.Helper()
	schemaOnce.Do(func() {
		const id = "https://github.com/ferry-edge/ferry/uplink/wire.schema.json"
		b, err := os.ReadFile("wire.schema.json")
		if err != nil {
			schemaErr = err
			return
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			schemaErr = err
			return
		}
		c := jsonschema.NewCompiler()
		c.AssertFormat()
		if err := c.AddResource(id, doc); err != nil {
			schemaErr = err
			return
		}
		schemas = map[string]*jsonschema.Schema{}
		for _, k := range []string{KindTelemetry, KindAlert, KindCatalog, KindBatch, ""} {
			ref := id
			if k != "" {
				ref += "#/$defs/" + k
			}
			if schemas[k], schemaErr = c.Compile(ref); schemaErr != nil {
				return
			}
		}
	})
	if schemaErr != nil {
		t.Fatal(schemaErr)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s message is not JSON: %v\n%s", kind, err, data)
	}
	if err := schemas[kind].Validate(v); err != nil {
		t.Fatalf("%s message does not follow wire.schema.json: %v\n%s", kind, err, data)
	}
	if err := schemas[""].Validate(v); err != nil {
		t.Fatalf("%s message matches not exactly one kind of wire.schema.json: %v\n%s", kind, err, data)
	}
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "nl\nret\rtab\t", "ctl\x00\x01\x1f\x7f", "utf8 °C µs", "bad \xff\xfe utf8", "\u2028\u2029", strings.Repeat("x", 300)} {
		got := appendString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q → %s: %v", s, got, err)
		}
		want := toValidRunes(s)
		if back != want {
			t.Errorf("%q → %s → %q, want %q", s, got, back, want)
		}
	}
}

func TestAppendValue(t *testing.T) {
	tests := []struct {
		v    ferry.Value
		want string
	}{
		{ferry.FloatValue(float64(float32(81.3))), "81.3"},
		{ferry.FloatValue(81.3), "81.3"},
		{ferry.FloatValue(0.1), "0.1"},
		{ferry.FloatValue(1e21), "1e+21"},
		{ferry.FloatValue(1e-7), "1e-7"},
		{ferry.FloatValue(123456789.125), "123456789.125"},
		{ferry.FloatValue(-0.5), "-0.5"},
		{ferry.FloatValue(0), "0.0"},
		{ferry.FloatValue(2), "2.0"},
		{ferry.FloatValue(float64(float32(1e20))), "100000000000000000000.0"},
		{ferry.FloatValue(math.NaN()), `"NaN"`},
		{ferry.FloatValue(math.Inf(1)), `"+Inf"`},
		{ferry.FloatValue(math.Inf(-1)), `"-Inf"`},
		{ferry.IntValue(math.MinInt64), "-9223372036854775808"},
		{ferry.UintValue(math.MaxUint64), "18446744073709551615"},
		{ferry.BoolValue(false), "false"},
		{ferry.StringValue("a\"b"), `"a\"b"`},
		{ferry.Value{}, "null"},
	}
	for _, tt := range tests {
		got := string(appendValue(nil, tt.v))
		if got != tt.want {
			t.Errorf("%v (%s): %s, want %s", tt.v, tt.v.Kind(), got, tt.want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("%s is not JSON", got)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	hdr := func(kind string) nats.Header {
		h := nats.Header{}
		if kind != "" {
			h.Set(HeaderKind, kind)
		}
		return h
	}
	tests := []struct {
		name    string
		kind    string
		data    string
		wantErr error
	}{
		{"no kind", "", `{}`, ErrNotFerry},
		{"unknown kind", "metrics", `{}`, ErrNotFerry},
		{"not json", KindTelemetry, `{"gateway":`, ErrMalformed},
		{"no device", KindTelemetry, `{"gateway":"g","scans":[]}`, ErrMalformed},
		{"scan without time", KindTelemetry, `{"gateway":"g","device":"d","scans":[{"points":[]}]}`, ErrMalformed},
		{"bad quality", KindTelemetry, `{"gateway":"g","device":"d","scans":[{"time":"2025-01-01T00:00:00Z","points":[{"name":"p","value":1,"quality":"meh"}]}]}`, ErrMalformed},
		{"object value", KindTelemetry, `{"gateway":"g","device":"d","scans":[{"time":"2025-01-01T00:00:00Z","points":[{"name":"p","value":{}}]}]}`, ErrMalformed},
		{"alert without rule", KindAlert, `{"gateway":"g","id":"a"}`, ErrMalformed},
		{"catalog not object", KindCatalog, `[]`, ErrMalformed},
		{"ok", KindTelemetry, `{"gateway":"g","device":"d","scans":[{"time":"2025-01-01T00:00:00Z","points":[{"name":"p","value":1e400}]}]}`, nil},
		{"batch without records", KindBatch, `{"gateway":"g"}`, ErrMalformed},
		{"batch record without id", KindBatch, `{"gateway":"g","records":[{"gateway":"g","device":"d","scans":[]}]}`, ErrMalformed},
		{"batch record without device", KindBatch, `{"gateway":"g","records":[{"id":"g-telemetry-1","gateway":"g","scans":[]}]}`, ErrMalformed},
		{"batch record bad point", KindBatch, `{"gateway":"g","records":[{"id":"g-telemetry-1","device":"d","scans":[{"time":"2025-01-01T00:00:00Z","points":[{"name":"p","value":[]}]}]}]}`, ErrMalformed},
		{"batch ok", KindBatch, `{"gateway":"g","records":[{"id":"g-telemetry-1","device":"d","scans":[]}]}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode("s", hdr(tt.kind), []byte(tt.data))
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Decode: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestDecodeAllBatch: DecodeAll gives each record of a batch as its own
// message, whatever the compression; a body that does not decompress as
// its header says is malformed; other messages come back alone.
func TestDecodeAllBatch(t *testing.T) {
	body := []byte(`{"gateway":"g","site":"s","records":[` +
		`{"id":"g-telemetry-7","gateway":"g","site":"s","device":"a","config_version":"v1","scans":[{"time":"2025-01-01T00:00:00Z","points":[{"name":"p","value":1.5}]}]},` +
		`{"id":"g-telemetry-9","gateway":"g","site":"s","device":"b","config_version":"v2","scans":[{"time":"2025-01-01T00:00:01Z","points":[{"name":"q","value":null,"quality":"bad","reason":"timeout"}]}]}]}`)
	validateWire(t, KindBatch, body)
	for _, algo := range []string{CompressionNone, CompressionS2, CompressionZstd} {
		t.Run(algo, func(t *testing.T) {
			data, err := compress(algo, nil, body)
			if err != nil {
				t.Fatal(err)
			}
			h := nats.Header{}
			h.Set(HeaderKind, KindBatch)
			h.Set(nats.MsgIdHdr, "g-telemetry-7-b")
			h.Set(HeaderVersion, "1.2.3")
			if algo != CompressionNone {
				h.Set(HeaderCompression, algo)
			}
			all, err := DecodeAll("x.telemetry._batch", h, data)
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != 2 {
				t.Fatalf("%d messages, want 2", len(all))
			}
			a, b := all[0], all[1]
			if a.ID != "g-telemetry-7" || a.BatchID != "g-telemetry-7-b" || a.Kind != KindTelemetry || a.ConfigVersion != "v1" || a.FerryVersion != "1.2.3" ||
				a.Telemetry.Device != "a" || a.Telemetry.Scans[0].Points[0].Value.Float64() != 1.5 {
				t.Errorf("first record: %+v %+v", a, a.Telemetry)
			}
			if b.ID != "g-telemetry-9" || b.Telemetry.Device != "b" || b.ConfigVersion != "v2" || b.Telemetry.Scans[0].Points[0].Quality != ferry.Bad {
				t.Errorf("second record: %+v %+v", b, b.Telemetry)
			}
			if algo != CompressionNone {
				if _, err := DecodeAll("x", h, body); !errors.Is(err, ErrMalformed) {
					t.Errorf("an uncompressed body under Ferry-Compression %s: %v, want ErrMalformed", algo, err)
				}
			}
		})
	}
	h := nats.Header{}
	h.Set(HeaderKind, KindBatch)
	h.Set(HeaderCompression, "lz4")
	if _, err := DecodeAll("x", h, body); !errors.Is(err, ErrMalformed) {
		t.Errorf("unknown compression: %v, want ErrMalformed", err)
	}
	h = nats.Header{}
	h.Set(HeaderKind, KindAlert)
	h.Set(nats.MsgIdHdr, "g-alerts-1")
	all, err := DecodeAll("x", h, []byte(`{"gateway":"g","id":"a","rule":"r","state":"raised","severity":"info","value":1,"time":"2025-01-01T00:00:00Z"}`))
	if err != nil || len(all) != 1 || all[0].ID != "g-alerts-1" || all[0].Alert == nil {
		t.Errorf("DecodeAll of an alert: %v, %v", all, err)
	}
}

// TestTelemetryRoundTrip encodes records as the uplink does and decodes
// them with Decode: every value, quality and time comes back.
func TestTelemetryRoundTrip(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	scans := []ferry.Scan{
		{Device: "d", Time: t0, Samples: []ferry.Sample{
			{Point: "f", Value: ferry.FloatValue(1.0 / 3), Time: t0},
			{Point: "f32", Value: ferry.FloatValue(float64(float32(0.1))), Time: t0},
			{Point: "i", Value: ferry.IntValue(-7), Time: t0.Add(-time.Second)},
			{Point: "u", Value: ferry.UintValue(1 << 63), Time: t0},
			{Point: "b", Value: ferry.BoolValue(true), Quality: ferry.UncertainQuality("last known"), Time: t0},
			{Point: "s", Value: ferry.StringValue("ok ✓"), Time: t0},
			{Point: "n", Quality: ferry.BadQuality("exception 0x02"), Time: t0},
		}},
		{Device: "d", Time: t0.Add(time.Millisecond), Samples: []ferry.Sample{{Point: "f", Value: ferry.FloatValue(2), Time: t0.Add(time.Millisecond)}}},
	}
	data := codec.AppendTelemetry(nil, "cv", "d", scans)
	tel, err := codec.DecodeTelemetry(data)
	if err != nil {
		t.Fatal(err)
	}
	e := newEncoder("gw", "")
	body, n := e.appendTelemetry(nil, &tel, 0, 0)
	if n != 8 {
		t.Errorf("%d samples counted, want 8", n)
	}
	validateWire(t, KindTelemetry, body)
	h := nats.Header{}
	h.Set(HeaderKind, KindTelemetry)
	m, err := Decode("x", h, body)
	if err != nil {
		t.Fatal(err)
	}
	if m.Telemetry.Site != "" || strings.Contains(string(body), `"site"`) {
		t.Errorf("empty site written: %s", body)
	}
	for i := range scans {
		checkScan(t, m.Telemetry.Scans[i], tel.Scans[i])
	}
	// What encoding/json makes of the decoded message is the same JSON.
	again, err := json.Marshal(m.Telemetry)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	json.Unmarshal(again, &a)
	m2, err := Decode("x", h, again)
	if err != nil {
		t.Fatalf("re-encoded message: %v\n%s", err, again)
	}
	json.Unmarshal(body, &b)
	for i := range scans {
		checkScan(t, m2.Telemetry.Scans[i], tel.Scans[i])
	}
}

func TestAlertRoundTrip(t *testing.T) {
	a := alert(3)
	a.State = ferry.AlertCleared
	a.Value = ferry.Value{}
	a.Labels["zone"] = "b\"1"
	data := codec.AppendAlert(nil, "cv", &a)
	_, da, err := codec.DecodeAlert(data)
	if err != nil {
		t.Fatal(err)
	}
	body := newEncoder("gw", "site").appendAlert(nil, "cv", &da)
	validateWire(t, KindAlert, body)
	h := nats.Header{}
	h.Set(HeaderKind, KindAlert)
	m, err := Decode("x", h, body)
	if err != nil {
		t.Fatal(err)
	}
	got := m.Alert
	if got.ID != a.ID || got.State != "cleared" || !got.Value.IsNone() || got.Labels["zone"] != "b\"1" || !got.Since.Equal(a.Since) || got.ConfigVersion != "cv" || got.Site != "site" {
		t.Errorf("alert: %+v", got)
	}
	var re bytes.Buffer
	enc := json.NewEncoder(&re)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.TrimSpace(re.Bytes()), body) {
		t.Errorf("re-encoded alert differs:\n%s\n%s", re.Bytes(), body)
	}
}

// FuzzAppendString: every string encodes to JSON that decodes back to the
// string (invalid UTF-8 replaced).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a", "\"\\\n", "\xff", "é", "\u2028", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendString(nil, s)
		var back string
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%q → %s: %v", s, b, err)
		}
		if back != toValidRunes(s) {
			t.Fatalf("%q → %s → %q", s, b, back)
		}
	})
}

// toValidRunes replaces each invalid byte with U+FFFD, as encoding/json
// and appendString do (strings.ToValidUTF8 merges runs).
func toValidRunes(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteString("\ufffd")
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// FuzzBuild feeds arbitrary records to the message builder: it never
// panics, and whatever it builds is valid JSON that follows the schema and
// decodes.
func FuzzBuild(f *testing.F) {
	t0 := time.Unix(1700000000, 5)
	f.Add(codec.AppendTelemetry(nil, "v", "dev", []ferry.Scan{scan("dev", t0, 3, 1)}), true)
	f.Add(codec.AppendAlert(nil, "v", ptr(alert(1))), false)
	f.Add([]byte{1, 1, 0, 1, 'd', 1, 1, 'p', 1, 0, 1, 0, 0x21, 0, 0, 0, 0}, true)
	f.Add([]byte{}, true)
	u, err := New(DefaultNATSConfig("nats://127.0.0.1:4222"), newMemSource("gw"), Options{Gateway: "gw", Site: "s"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, telemetry bool) {
		b := newMsgBuilder(u, 4096)
		rec := ferry.Record{Lane: ferry.LaneAlerts, ID: "gw-alerts-1", Data: data}
		if telemetry {
			rec.Lane = ferry.LaneTelemetry
		}
		msgs, err := b.build(rec)
		if err != nil {
			return
		}
		for _, m := range msgs {
			kind := m.msg.Header.Get(HeaderKind)
			validateWire(t, kind, m.msg.Data)
			if _, err := Decode(m.msg.Subject, m.msg.Header, m.msg.Data); err != nil {
				t.Fatalf("built message does not decode: %v\n%s", err, m.msg.Data)
			}
			if len(m.msg.Data)+headerSize(m.msg.Header) > 4096 && len(msgs) > 1 {
				t.Fatalf("part of %d bytes exceeds max_payload 4096", len(m.msg.Data))
			}
		}
	})
}

func ptr[T any](v T) *T { return &v }

// FuzzDecode: Decode never panics on any body.
func FuzzDecode(f *testing.F) {
	f.Add(KindTelemetry, []byte(`{"gateway":"g","device":"d","scans":[{"time":"2025-01-01T00:00:00Z","points":[{"name":"p","value":1}]}]}`))
	f.Add(KindAlert, []byte(`{"gateway":"g","id":"a","rule":"r","state":"raised","severity":"info","value":null,"time":"2025-01-01T00:00:00Z"}`))
	f.Add(KindCatalog, []byte(`{"gateway":"g","config_version":"v","time":"2025-01-01T00:00:00Z","devices":[]}`))
	f.Fuzz(func(t *testing.T, kind string, data []byte) {
		h := nats.Header{}
		h.Set(HeaderKind, kind)
		m, err := Decode("s", h, data)
		if err == nil && m.Telemetry == nil && m.Alert == nil && m.Catalog == nil {
			t.Fatal("no error and no body")
		}
	})
}

// FuzzTranscode checks the transcoder (the record read in place with
// codec.TelemetryReader, written straight to JSON) against the decoder
// path (codec.DecodeTelemetry, then the encoder of decoded records): for
// every input both accept or both refuse, and what they write is
// identical.
func FuzzTranscode(f *testing.F) {
	f.Add(codec.AppendTelemetry(nil, "v", "d", []ferry.Scan{{Device: "d", Time: time.Unix(0, 0)}}))
	t0 := time.Unix(1700000000, 5)
	f.Add(codec.AppendTelemetry(nil, "v", "dev", []ferry.Scan{benchScan("dev", t0, 12, 3), scan("dev", t0.Add(time.Second), 2, 1)}))
	sc := scan("dev", t0, 3, 1)
	sc.Samples[0].Time = t0.Add(-time.Millisecond)
	sc.Samples[1].Value = ferry.StringValue("x\"\xff")
	sc.Samples[2].Quality = ferry.UncertainQuality("r")
	f.Add(codec.AppendTelemetry(nil, "", "d", []ferry.Scan{sc}))
	f.Add([]byte{1, 1, 0, 1, 'd', 1, 1, 'p', 1, 0, 1, 0, 0x21, 0, 0, 0, 0})
	e := newEncoder("gw", "site")
	var tc transcoder
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, dev, cv, n, ok := tc.telemetry(e, nil, data)
		tel, err := codec.DecodeTelemetry(data)
		if ok != (err == nil) {
			t.Fatalf("transcoder ok=%v, decoder err=%v", ok, err)
		}
		if !ok {
			return
		}
		slow, m := e.appendTelemetry(nil, &tel, 0, 0)
		if !bytes.Equal(fast, slow) || n != m || string(dev) != tel.Device || string(cv) != tel.ConfigVersion {
			t.Fatalf("transcoder and decoder differ:\n%s\n%s\n(%d/%d samples)", fast, slow, n, m)
		}
	})
}

// TestTranscodeDoesNotAllocate: with room in dst, transcoding a record
// (string values and reasons included) allocates nothing, whatever the
// number of samples.
func TestTranscodeDoesNotAllocate(t *testing.T) {
	t0 := time.Unix(1700000000, 5)
	sc := scan("dev", t0, 3, 1)
	sc.Samples[0].Time = t0.Add(-time.Millisecond)
	sc.Samples[1].Value = ferry.StringValue("x\"y")
	sc.Samples[2].Quality = ferry.BadQuality(ferry.ReasonTimeout)
	data := codec.AppendTelemetry(nil, "v", "dev", []ferry.Scan{benchScan("dev", t0, 100, 50), sc})
	e := newEncoder("gw", "site")
	var tc transcoder
	dst := make([]byte, 0, 64<<10)
	out, _, _, n, ok := tc.telemetry(e, dst, data)
	if !ok || n != 103 || !json.Valid(out) {
		t.Fatalf("ok=%v, %d samples, valid JSON %v", ok, n, json.Valid(out))
	}
	if a := testing.AllocsPerRun(50, func() { tc.telemetry(e, dst, data) }); a != 0 {
		t.Fatalf("%v allocations per record, want 0", a)
	}
}
