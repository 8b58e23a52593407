package mqtt

import (
	"encoding/json"
	"strings"
	"testing"
)

// validJSONCases are inputs for each branch of the grammar and the edges
// where a hand-written checker most easily differs from json.Valid; want
// is json.Valid's answer (TestValidJSON checks that too).
var validJSONCases = []struct {
	in   string
	want bool
}{
	// empty and whitespace
	{"", false},
	{" \t\r\n", false},
	{" \t\r\n1 \t\r\n", true},
	{"\v1", false},
	{"1\f", false},
	{"\u00a01", false},
	{"\xef\xbb\xbf{}", false}, // BOM
	// literals
	{"true", true}, {"false", true}, {"null", true},
	{"tru", false}, {"truex", false}, {"nul", false}, {"True", false}, {"nulll", false}, {"f", false},
	{"true false", false}, {"[true,false,null]", true}, {"[truefalse]", false},
	// numbers
	{"0", true}, {"-0", true}, {"-", false}, {"--1", false}, {"+1", false}, {"01", false}, {"-01", false},
	{"00", false}, {"10", true}, {"1234567890", true}, {"1.", false}, {".5", false}, {"1.5", true},
	{"-0.0", true}, {"0.", false}, {"1.e5", false}, {"1e", false}, {"1e+", false}, {"1e-", false},
	{"1e5", true}, {"1E5", true}, {"1e+5", true}, {"1e-05", true}, {"1.5e3", true}, {"1e5.5", false},
	{"1ee5", false}, {"0x10", false}, {"1 2", false}, {"[01]", false}, {"[1.]", false}, {"[-]", false},
	{"[0,-0,1e9]", true}, {"Infinity", false}, {"NaN", false}, {"-Infinity", false}, {"1_000", false},
	{`{"a":-}`, false}, {`{"a":1e}`, false}, {`{"a":01}`, false},
	// strings
	{`""`, true}, {`"a"`, true}, {`"`, false}, {`"abc`, false}, {`'a'`, false},
	{`"\"\\\/\b\f\n\r\t"`, true}, {`"\u0041\u00e9\uFFFF\uabcd"`, true}, {`"\u12"`, false}, {`"\u12g4"`, false},
	{`"\u"`, false}, {`"\u123`, false}, {`"\U0041"`, false}, {`"\x41"`, false}, {`"\a"`, false}, {`"\'"`, false},
	{`"\`, false}, {`"\"`, false}, {`"\\"`, true}, {"\"\x00\"", false}, {"\"\x1f\"", false}, {"\"\t\"", false},
	{"\"\n\"", false}, {"\"\x7f\"", true}, {"\" \"", true}, {`"\ud800"`, true}, {`"\udc00\ud800"`, true},
	{"\"\xff\xfe\"", true}, {"\"\xc3\"", true}, {"\"\xed\xa0\x80\"", true}, {"\"é\"", true}, {"\xff", false},
	{`"a" "b"`, false}, {`"a"x`, false},
	// arrays
	{"[]", true}, {"[ ]", true}, {"[", false}, {"]", false}, {"[1", false}, {"[1,", false}, {"[1,]", false},
	{"[,1]", false}, {"[,]", false}, {"[1,,2]", false}, {"[1 2]", false}, {"[1,2]", true}, {"[[],[[]]]", true},
	{"[}", false}, {"[1}", false}, {"[]]", false}, {"[][]", false}, {"[ 1 , 2 ] ", true}, {`[1:2]`, false},
	// objects
	{"{}", true}, {"{ }", true}, {"{", false}, {"}", false}, {`{"a":1}`, true}, {`{"a":1,}`, false},
	{`{"a"}`, false}, {`{"a":}`, false}, {`{"a" 1}`, false}, {`{a:1}`, false}, {`{1:1}`, false},
	{`{"a":1 "b":2}`, false}, {`{"a":1,"b":2}`, true}, {`{,}`, false}, {`{"a":1,,"b":2}`, false},
	{`{"a":1]`, false}, {`{"a":[1}`, false}, {`{"a":{"b":{}}}`, true}, {`{"a":1}}`, false},
	{` { "a" : [ 1 , { "b" : null } ] } `, true}, {`{"a":1,"a":2}`, true}, {`{"\u0061":"\n"}`, true}, {"{\"a\n\":1}", false},
	{`{"a":1`, false}, {`{"a":`, false}, {`{"a"`, false}, {`{"`, false},
	{`{"a",1}`, false}, {`{"a"::1}`, false}, {`{:1}`, false}, {"{\"\x01\":1}", false},
	// trailing garbage
	{`{}x`, false}, {`{} {}`, false}, {"1\x00", false}, {`[]"`, false}, {"null,", false}, {"{}\n", true},
	// nesting at and beyond json.Valid's limit
	{strings.Repeat("[", 256) + strings.Repeat("]", 256), true},
	{strings.Repeat("[", 300) + strings.Repeat("]", 300), true},
	{strings.Repeat(`{"a":[`, 200) + "1" + strings.Repeat("]}", 200), true},
	{strings.Repeat(`{"a":[`, 200) + "1" + strings.Repeat("}]", 200), false},
	{strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth), true},
	{strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1), false},
	{strings.Repeat("[", 100000) + strings.Repeat("]", 100000), false},
	{strings.Repeat("[", 100000), false},
	{strings.Repeat("[", 300) + strings.Repeat("]", 299), false},
	{strings.Repeat("[", 300) + strings.Repeat("]", 301), false},
}

// TestValidJSON checks the table against validJSON and json.Valid both, so
// a wrong want is caught too.
func TestValidJSON(t *testing.T) {
	for _, c := range validJSONCases {
		name := c.in
		if len(name) > 40 {
			name = name[:40] + "…"
		}
		b := []byte(c.in)
		if got := json.Valid(b); got != c.want {
			t.Errorf("json.Valid(%q) = %v, the table says %v", name, got, c.want)
		}
		if got := validJSON(b); got != c.want {
			t.Errorf("validJSON(%q) = %v, want %v", name, got, c.want)
		}
	}
}

// TestValidJSONCostPayloadNoAlloc: the cost bench's message is checked
// without allocating, and so is one nested just under the fixed stack.
func TestValidJSONCostPayloadNoAlloc(t *testing.T) {
	p := costLikePayload(7)
	deep := []byte(strings.Repeat(`{"a":[`, 128) + "1" + strings.Repeat("]}", 128))
	for _, doc := range [][]byte{p, deep} {
		if !validJSON(doc) {
			t.Fatalf("validJSON refused %.60q…", doc)
		}
		if n := testing.AllocsPerRun(100, func() { validJSON(doc) }); n != 0 {
			t.Errorf("validJSON(%.40q…): %v allocations, want 0", doc, n)
		}
	}
}

// FuzzValidJSON: validJSON answers as json.Valid does on every input.
func FuzzValidJSON(f *testing.F) {
	for _, c := range validJSONCases {
		f.Add([]byte(c.in))
	}
	f.Add(costLikePayload(1))
	f.Add([]byte(`{"seq":1,"t":"2024-05-06T07:08:09Z","v":[1.5,-2e-3,true,null,{"x":"\u00e9\"q"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid says %v", b, got, want)
		}
	})
}

// BenchmarkValidJSON50 checks the cost bench's message (seq and 50
// numeric fields) with json.Valid and with validJSON.
func BenchmarkValidJSON50(b *testing.B) {
	p := costLikePayload(12345)
	for _, c := range []struct {
		name  string
		valid func([]byte) bool
	}{{"json.Valid", json.Valid}, {"validJSON", validJSON}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			for b.Loop() {
				if !c.valid(p) {
					b.Fatal("refused")
				}
			}
		})
	}
}
