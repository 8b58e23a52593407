package mqtt

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ferry-edge/ferry"
)

func TestParsePath(t *testing.T) {
	tests := []struct {
		in      string
		want    jsonPath
		str     string // String(), if not in
		wantErr bool
	}{
		{in: "temp", want: jsonPath{{key: "temp", index: -1}}},
		{in: "env.temp", want: jsonPath{{key: "env", index: -1}, {key: "temp", index: -1}}},
		{in: "readings[0].value", want: jsonPath{{key: "readings", index: -1}, {index: 0}, {key: "value", index: -1}}},
		{in: "[2]", want: jsonPath{{index: 2}}},
		{in: "m[1][2]", want: jsonPath{{key: "m", index: -1}, {index: 1}, {index: 2}}},
		{in: `["a.b"].c`, want: jsonPath{{key: "a.b", index: -1}, {key: "c", index: -1}}},
		{in: `x["]"]`, want: jsonPath{{key: "x", index: -1}, {key: "]", index: -1}}},
		{in: `["0"]`, want: jsonPath{{key: "0", index: -1}}},
		{in: "température", want: jsonPath{{key: "température", index: -1}}},
		{in: "a[0]b", wantErr: true},
		{in: "", wantErr: true},
		{in: "a..b", wantErr: true},
		{in: ".a", wantErr: true},
		{in: "a.", wantErr: true},
		{in: "a[", wantErr: true},
		{in: "a[-1]", wantErr: true},
		{in: "a[+1]", wantErr: true},
		{in: "a[x]", wantErr: true},
		{in: "a[]", wantErr: true},
		{in: `a["x]`, wantErr: true},
		{in: `a"b`, wantErr: true},
		{in: "a]", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parsePath(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %+v, want %+v", got, tt.want)
				}
			}
			again, err := parsePath(got.String())
			if err != nil || again.String() != got.String() {
				t.Errorf("String %q does not parse back: %v", got.String(), err)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	doc := []byte(` { "a" : { "b" : [ 10 , { "c" : "x\"y" } , [true] ] } , "a\u002eb": 1, "d": null, "e": {}, "f": [], "a": 2 } `)
	tests := []struct {
		path    string
		want    string
		wantErr error
	}{
		{"a.b[0]", "10", nil},
		{"a.b[1].c", `"x\"y"`, nil},
		{"a.b[2][0]", "true", nil},
		{"a.b[1]", `{ "c" : "x\"y" }`, nil},
		{`["a.b"]`, "1", nil}, // the key is written with an escape
		{"d", "null", nil},
		{"a", `{ "b" : [ 10 , { "c" : "x\"y" } , [true] ] }`, nil}, // the first of duplicate keys
		{"a.b[3]", "", errMissingPath},
		{"a.x", "", errMissingPath},
		{"a.b.c", "", errMissingPath},
		{"a.b[0].c", "", errMissingPath},
		{"e.x", "", errMissingPath},
		{"f[0]", "", errMissingPath},
		{"zz", "", errMissingPath},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			p, err := parsePath(tt.path)
			if err != nil {
				t.Fatal(err)
			}
			got, err := lookup(doc, p)
			if !errors.Is(err, tt.wantErr) || string(got) != tt.want {
				t.Fatalf("got %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	// lookup reads only what it needs (the driver checks the whole payload
	// with json.Valid first): damage on its way is an error.
	for _, bad := range []string{``, `{`, `{"a"`, `{"a":`, `{"a":1.`, `{"a" 1}`, `[1,`, `{"x":"unterminated`, `{"x":[}`, `{"a":tru}`} {
		p, _ := parsePath("a")
		if _, err := lookup([]byte(bad), p); err == nil {
			t.Errorf("lookup in %q: no error", bad)
		}
	}
}

func TestJSONValue(t *testing.T) {
	tests := []struct {
		raw     string
		want    ferry.Value
		wantErr error
	}{
		{"0", ferry.IntValue(0), nil},
		{"-12", ferry.IntValue(-12), nil},
		{"9223372036854775807", ferry.IntValue(math.MaxInt64), nil},
		{"9223372036854775808", ferry.UintValue(1 << 63), nil},
		{"18446744073709551616", ferry.FloatValue(18446744073709551616), nil},
		{"1.5", ferry.FloatValue(1.5), nil},
		{"-2e-3", ferry.FloatValue(-0.002), nil},
		{"1e400", ferry.FloatValue(math.Inf(1)), errOutOfRange},
		{"-1e400", ferry.FloatValue(math.Inf(-1)), errOutOfRange},
		{strings.Repeat("9", 400), ferry.FloatValue(math.Inf(1)), errOutOfRange},
		{"1e-400", ferry.FloatValue(0), nil},
		{`"\u00e9\n"`, ferry.StringValue("é\n"), nil},
		{`"\ud83d\ude00"`, ferry.StringValue("😀"), nil},
		{"true", ferry.BoolValue(true), nil},
		{"null", ferry.Value{}, errNull},
		{"[1]", ferry.Value{}, errWrongType},
		{"{}", ferry.Value{}, errWrongType},
	}
	for _, tt := range tests {
		got, err := jsonValue([]byte(tt.raw))
		if !errors.Is(err, tt.wantErr) || !got.Equal(tt.want) {
			t.Errorf("%s: %v (%s), %v; want %v (%s), %v", tt.raw, got, got.Kind(), err, tt.want, tt.want.Kind(), tt.wantErr)
		}
	}
}

func TestCoerce(t *testing.T) {
	tests := []struct {
		in   ferry.Value
		typ  string
		want ferry.Value
		ok   bool
	}{
		{ferry.IntValue(3), "float", ferry.FloatValue(3), true},
		{ferry.StringValue(" 2.5 "), "float", ferry.FloatValue(2.5), true},
		{ferry.StringValue("0x10"), "float", ferry.Value{}, false},
		{ferry.StringValue("NaN"), "float", ferry.Value{}, false},
		{ferry.BoolValue(true), "float", ferry.FloatValue(1), true},
		{ferry.FloatValue(4), "int", ferry.IntValue(4), true},
		{ferry.FloatValue(4.5), "int", ferry.Value{}, false},
		{ferry.FloatValue(1e30), "int", ferry.Value{}, false},
		{ferry.UintValue(math.MaxUint64), "int", ferry.Value{}, false},
		{ferry.StringValue("-9"), "int", ferry.IntValue(-9), true},
		{ferry.StringValue("1e2"), "int", ferry.IntValue(100), true},
		{ferry.IntValue(0), "bool", ferry.BoolValue(false), true},
		{ferry.StringValue("ON"), "bool", ferry.BoolValue(true), true},
		{ferry.StringValue("maybe"), "bool", ferry.Value{}, false},
		{ferry.FloatValue(1.25), "string", ferry.StringValue("1.25"), true},
		{ferry.BoolValue(false), "string", ferry.StringValue("false"), true},
		{ferry.StringValue("x"), "", ferry.StringValue("x"), true},
	}
	for _, tt := range tests {
		got, err := coerce(tt.in, tt.typ)
		if (err == nil) != tt.ok || !got.Equal(tt.want) {
			t.Errorf("coerce(%v, %q) = %v, %v; want %v ok=%v", tt.in, tt.typ, got, err, tt.want, tt.ok)
		}
	}
}

// refLookup is the reference: encoding/json decodes the whole document and
// the path is followed in Go values.
func refLookup(doc []byte, p jsonPath) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return nil, false
	}
	for _, s := range p {
		if s.index >= 0 {
			a, ok := v.([]any)
			if !ok || s.index >= len(a) {
				return nil, false
			}
			v = a[s.index]
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[s.key]; !ok {
			return nil, false
		}
	}
	return v, true
}

// hasDuplicateKeys reports whether an object in doc repeats a key (where
// encoding/json keeps the last and lookup the first).
func hasDuplicateKeys(doc []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(doc))
	type frame struct {
		obj     bool
		keys    map[string]bool
		wantKey bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF || err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				if top != nil && top.obj {
					top.wantKey = true
				}
				stack = append(stack, &frame{obj: d == '{', keys: map[string]bool{}, wantKey: true})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if top != nil && top.obj {
			if top.wantKey {
				k := tok.(string)
				if top.keys[k] {
					return true
				}
				top.keys[k] = true
				top.wantKey = false
			} else {
				top.wantKey = true
			}
		}
	}
}

// FuzzJSONPath checks lookup and jsonValue against encoding/json on valid
// documents, and that neither panics on anything.
func FuzzJSONPath(f *testing.F) {
	seeds := []struct{ doc, path string }{
		{`{"temp":21.5}`, "temp"},
		{`{"env":{"temp":-3}}`, "env.temp"},
		{`{"readings":[{"value":1},{"value":"2"}]}`, "readings[1].value"},
		{`{"a.b":{"c":true}}`, `["a.b"].c`},
		{`[[1,[2,[3]]]]`, "[0][1][1][0]"},
		{`{"s":"\u00e9\ud83d\ude00\"\\"}`, "s"},
		{`{"k\u0065y":1}`, "key"},
		{`{"n":1e400,"m":-0,"u":18446744073709551615}`, "u"},
		{`{"x":null}`, "x"},
		{`{"x":{"y":[]}}`, "x.y[0]"},
		{` {"deep":[[[[[[[[[[{"v":1}]]]]]]]]]]} `, "deep[0][0][0][0][0][0][0][0][0][0].v"},
		{`{"a":1,"a":2}`, "a"},
		{`{"a":"\xff"}`, "a"},
		{`{"a":tru`, "a"},
	}
	for _, s := range seeds {
		f.Add([]byte(s.doc), s.path)
	}
	f.Fuzz(func(t *testing.T, doc []byte, path string) {
		p, err := parsePath(path)
		if err != nil {
			return
		}
		raw, err := lookup(doc, p)
		var v ferry.Value
		var verr error
		if err == nil {
			v, verr = jsonValue(raw)
		}
		if !json.Valid(doc) || hasDuplicateKeys(doc) {
			return
		}
		ref, found := refLookup(doc, p)
		if !found {
			if !errors.Is(err, errMissingPath) {
				t.Fatalf("path %q absent, lookup gave %q, %v", path, raw, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("path %q present (%v), lookup failed: %v", path, ref, err)
		}
		switch r := ref.(type) {
		case nil:
			if !errors.Is(verr, errNull) {
				t.Fatalf("null: got %v, %v", v, verr)
			}
		case bool:
			if verr != nil || !v.Equal(ferry.BoolValue(r)) {
				t.Fatalf("bool %v: got %v, %v", r, v, verr)
			}
		case string:
			if verr != nil || !v.Equal(ferry.StringValue(r)) {
				t.Fatalf("string %q: got %q, %v", r, v.Str(), verr)
			}
		case json.Number:
			if f, _ := strconv.ParseFloat(r.String(), 64); math.IsInf(f, 0) {
				if !errors.Is(verr, errOutOfRange) || !v.Equal(ferry.FloatValue(f)) {
					t.Fatalf("number %s beyond float64: got %v, %v; want %v, errOutOfRange", r, v, verr, f)
				}
				return
			}
			if verr != nil {
				t.Fatalf("number %s: %v", r, verr)
			}
			switch v.Kind() {
			case ferry.KindInt:
				if i, err := r.Int64(); err != nil || i != v.Int64() {
					t.Fatalf("number %s: got int %v", r, v)
				}
			case ferry.KindUint:
				if u, err := strconv.ParseUint(r.String(), 10, 64); err != nil || u != v.Uint64() {
					t.Fatalf("number %s: got uint %v", r, v)
				}
			case ferry.KindFloat:
				want, _ := strconv.ParseFloat(r.String(), 64)
				if want != v.Float64() {
					t.Fatalf("number %s: got float %v, want %v", r, v, want)
				}
			default:
				t.Fatalf("number %s: got %v (%s)", r, v, v.Kind())
			}
		case map[string]any, []any:
			if !errors.Is(verr, errWrongType) {
				t.Fatalf("container: got %v, %v", v, verr)
			}
		}
	})
}

func TestTopicMatch(t *testing.T) {
	tests := []struct {
		pattern, topic string
		want           bool
		caps           []string
	}{
		{"a/b", "a/b", true, nil},
		{"a/b", "a/b/c", false, nil},
		{"a/b", "a", false, nil},
		{"a/+", "a/x", true, nil},
		{"a/+", "a/", true, nil},
		{"a/+", "a", false, nil},
		{"a/+", "a/x/y", false, nil},
		{"a/#", "a", true, nil},
		{"a/#", "a/x/y", true, nil},
		{"a/#", "ab", false, nil},
		{"#", "anything/at/all", true, nil},
		{"#", "$SYS/x", false, nil},
		{"+/x", "$SYS/x", false, nil},
		{"$SYS/#", "$SYS/x", true, nil},
		{"p/{line}/{device}/t", "p/l1/press3/t", true, []string{"l1", "press3"}},
		{"p/{line}/{device}/t", "p/l1/press3/u", false, nil},
		{"p/{line}/#", "p/l9", true, []string{"l9"}},
		{"p/{line}/#", "p", false, nil},
		{"{a}", "", true, []string{""}},
		{"/{a}", "/x", true, []string{"x"}},
	}
	for _, tt := range tests {
		p, err := compileTopic(tt.pattern)
		if err != nil {
			t.Fatalf("%s: %v", tt.pattern, err)
		}
		var caps [maxCaptures]span
		if got := p.match(tt.topic, caps[:]); got != tt.want {
			t.Errorf("%q matches %q: %v, want %v", tt.pattern, tt.topic, got, tt.want)
			continue
		}
		for i, c := range tt.caps {
			if got := tt.topic[caps[i].start:caps[i].end]; got != c {
				t.Errorf("%q on %q: capture %d = %q, want %q", tt.pattern, tt.topic, i, got, c)
			}
		}
	}
}

// FuzzSparkplugDecode feeds arbitrary bytes to the decoder: it must not
// panic, and what it accepts must convert without panicking.
func FuzzSparkplugDecode(f *testing.F) {
	f.Add(encPayload(1714000000000, 0,
		tMetric{name: "bdSeq", dt: spInt64, longV: u64(1)},
		tMetric{name: "Temperature", alias: 1, hasAlias: true, dt: spDouble, doubleV: f64(20.5), extras: true},
		tMetric{name: "Mode", alias: 2, hasAlias: true, dt: spString, strV: strp("auto")},
		tMetric{name: "Count", alias: 3, hasAlias: true, dt: spInt8, intV: u32(0xffffffff)},
	))
	f.Add(encPayload(5, 3, tMetric{alias: 1, hasAlias: true, ts: 7, floatV: f32(1.5)}, tMetric{alias: 2, hasAlias: true, isNull: true}))
	f.Add(encPayload(0, -1, tMetric{name: "b", dt: 17, bytesV: []byte{1, 2}}))
	f.Add([]byte{0x12, 0x0e, 0x0a, 0x01, 0x61, 0x20, 0x0a, 0x69, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f})
	f.Add([]byte{0x0b, 0x0c}) // a group
	f.Add([]byte{0x12, 0x80})
	f.Add(appendRebirthRequest(nil, 1714000000000))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p spPayload
		if err := decodeSparkplug(b, &p); err != nil {
			if !errors.Is(err, errBadProtobuf) {
				t.Fatalf("error %v does not wrap errBadProtobuf", err)
			}
			return
		}
		node := &spNode{}
		node.learn("", &p)
		for i := range p.metrics {
			for dt := uint32(0); dt <= 20; dt++ {
				p.metrics[i].value(dt)
			}
			node.resolve("", &p.metrics[i])
		}
	})
}

// FuzzSparkplugRoundTrip encodes a metric with the test encoder and
// checks that the decoder reads back what was written.
func FuzzSparkplugRoundTrip(f *testing.F) {
	f.Add("Temperature", uint64(1), uint64(1714000000000), 0.5, int64(-3), "auto", uint8(0))
	f.Add("", uint64(99), uint64(0), -1e300, int64(math.MinInt64), "", uint8(3))
	f.Fuzz(func(t *testing.T, name string, alias, ts uint64, d float64, i int64, s string, which uint8) {
		m := tMetric{name: name, alias: alias, hasAlias: alias != 0, ts: ts}
		var want ferry.Value
		switch which % 4 {
		case 0:
			m.dt, m.doubleV, want = spDouble, &d, ferry.FloatValue(d)
		case 1:
			m.dt, m.longV, want = spInt64, u64(uint64(i)), ferry.IntValue(i)
		case 2:
			m.dt, m.intV, want = spInt16, u32(uint32(i)), ferry.IntValue(int64(int16(i)))
		case 3:
			m.dt, m.strV, want = spString, &s, ferry.StringValue(s)
		}
		var p spPayload
		if err := decodeSparkplug(encPayload(ts, int(which), m), &p); err != nil {
			t.Fatal(err)
		}
		if len(p.metrics) != 1 || string(p.metrics[0].name) != name || p.metrics[0].alias != alias || p.metrics[0].timestamp != ts || p.seq != uint64(which) {
			t.Fatalf("decoded %+v", p)
		}
		got, reason := p.metrics[0].value(0)
		if which%4 == 3 && !utf8.ValidString(s) {
			if reason != reasonBadValue {
				t.Fatalf("invalid UTF-8 string: %v %q", got, reason)
			}
			return
		}
		if reason != "" || !got.Equal(want) {
			t.Fatalf("value %v %q, want %v", got, reason, want)
		}
	})
}
