package mqtt

import (
	"strings"
	"testing"
)

// FuzzScalars feeds arbitrary text to the value, time and coercion
// parsers: they must not panic, and what they accept must be consistent.
func FuzzScalars(f *testing.F) {
	for _, s := range []string{"21.5", " 42\n", "-0", "true", "RUNNING", `"quoted"`, "1e400", "\xff",
		`"2024-05-06T07:08:09.5Z"`, "1700000000.123456789", `"1700000000123"`, "-1.5", "9223372036854775807",
		"1e18", ".5", "1.", `"2024-02-29 23:59:58.125"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := scalarValue(b)
		if err == nil && v.IsNone() {
			t.Fatalf("scalarValue(%q) accepted nothing", b)
		}
		for _, typ := range pointTypes {
			c, err := coerce(v, typ)
			if err == nil && typ != "" && c.Kind().String() != typ {
				t.Fatalf("coerce(%v, %s) gave %s", v, typ, c.Kind())
			}
		}
		for _, l := range []string{LayoutRFC3339, LayoutUnixS, LayoutUnixMS, LayoutUnixNS, "2006-01-02 15:04:05.000"} {
			parseTime(b, l)
		}
	})
}

// refMatch is the MQTT 3.1.1 §4.7 matching rule, written plainly.
func refMatch(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	f, tp := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, l := range f {
		if l == "#" {
			return true
		}
		if i >= len(tp) {
			return false
		}
		if l != "+" && l != tp[i] {
			return false
		}
	}
	return len(f) == len(tp)
}

// FuzzTopic checks the topic matcher against the plain rule, and that
// captures and device names come out well formed.
func FuzzTopic(f *testing.F) {
	f.Add("plant/{line}/{device}/telemetry", "plant/l1/press3/telemetry", "{line}-{device}")
	f.Add("a/#", "a", "")
	f.Add("+/+/#", "$SYS/x/y", "")
	f.Add("{x}/b/{y}", "/b/ y.z", "{y}_{x}")
	f.Add("#", "", "")
	f.Fuzz(func(t *testing.T, pattern, topic, tmpl string) {
		p, err := compileTopic(pattern)
		if err != nil {
			return
		}
		var caps [maxCaptures]span
		got := p.match(topic, caps[:])
		if want := refMatch(p.filter, topic); got != want {
			t.Fatalf("filter %q on %q: %v, want %v", p.filter, topic, got, want)
		}
		if !got {
			return
		}
		for i := range p.captures {
			if sp := caps[i]; sp.start > sp.end || sp.end > len(topic) || strings.Contains(topic[sp.start:sp.end], "/") {
				t.Fatalf("capture %d of %q on %q: %+v", i, pattern, topic, sp)
			}
		}
		tm, err := compileTemplate(tmpl, p)
		if err != nil || tm == nil {
			return
		}
		if name := tm.expand(topic, caps[:]); name != "" && (!isName(name) || len(name) > maxDeviceName) {
			t.Fatalf("device name %q from %q on %q", name, tmpl, topic)
		}
	})
}
