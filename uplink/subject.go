package uplink

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// template is a parsed subject template: dot-separated tokens, each a
// literal or a whole-token placeholder such as {device}.
type template struct {
	src    string
	tokens []string // literal, or "{name}"
}

// parseTemplate parses s, allowing only the named placeholders. A subject
// must be usable as a NATS publish subject once filled in: no empty tokens,
// no whitespace or control characters, no wildcards.
func parseTemplate(s string, allowed ...string) (template, error) {
	t := template{src: s}
	if s == "" {
		return t, errors.New("is required")
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return t, fmt.Errorf("%q has an empty token (leading, trailing or double dot)", s)
		}
		for _, r := range tok {
			switch {
			case r <= ' ' || r == 0x7f || r == '\u00a0' || r == '\u2028' || r == '\u2029':
				return t, fmt.Errorf("%q holds whitespace or a control character", s)
			case r == '*' || r == '>':
				return t, fmt.Errorf("%q holds a wildcard (%c); a publish subject must be concrete", s, r)
			}
		}
		if strings.ContainsAny(tok, "{}") {
			name, ok := strings.CutPrefix(tok, "{")
			name, ok2 := strings.CutSuffix(name, "}")
			if !ok || !ok2 || strings.ContainsAny(name, "{}") {
				return t, fmt.Errorf("%q: placeholder %q must be a whole token such as {device}", s, tok)
			}
			if !slices.Contains(allowed, name) {
				return t, fmt.Errorf("%q: unknown placeholder {%s} (known here: {%s})", s, name, strings.Join(allowed, "}, {"))
			}
			if slices.Contains(t.tokens, tok) {
				return t, fmt.Errorf("%q uses %s more than once", s, tok)
			}
		}
		t.tokens = append(t.tokens, tok)
	}
	return t, nil
}

// has reports whether the template uses placeholder name.
func (t template) has(name string) bool {
	return slices.Contains(t.tokens, "{"+name+"}")
}

// fill replaces placeholders with the values in vars; a placeholder
// missing from vars becomes the wildcard "*".
func (t template) fill(vars map[string]string) string {
	var b strings.Builder
	for i, tok := range t.tokens {
		if i > 0 {
			b.WriteByte('.')
		}
		if strings.HasPrefix(tok, "{") {
			if v, ok := vars[tok[1:len(tok)-1]]; ok {
				b.WriteString(v)
				continue
			}
			b.WriteByte('*')
			continue
		}
		b.WriteString(tok)
	}
	return b.String()
}

// filter is the template with every placeholder a wildcard: what a stream
// shared by many gateways must capture.
func (t template) filter() string { return t.fill(nil) }

// validToken reports whether s can stand as one subject token (a device
// name from a record: config names are [A-Za-z0-9_-]+, but a record is data).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == '.' || c == '*' || c == '>' || c == 0x7f {
			return false
		}
	}
	return true
}

// subjectCovers reports whether every subject matched by pattern is also
// matched by filter (both may hold wildcards): the stream filter captures
// all that ferry publishes under pattern.
func subjectCovers(filter, pattern string) bool {
	f := strings.Split(filter, ".")
	p := strings.Split(pattern, ".")
	for i, ft := range f {
		if ft == ">" {
			return len(p) > i
		}
		if i >= len(p) {
			return false
		}
		switch {
		case p[i] == ">":
			return false
		case ft == "*":
		case ft != p[i]:
			return false
		}
	}
	return len(f) == len(p)
}

// subjectsCollide reports whether some subject is matched by both a and b.
func subjectsCollide(a, b string) bool {
	at := strings.Split(a, ".")
	bt := strings.Split(b, ".")
	for i := 0; i < len(at) && i < len(bt); i++ {
		x, y := at[i], bt[i]
		if x == ">" || y == ">" {
			return true
		}
		if x != "*" && y != "*" && x != y {
			return false
		}
	}
	return len(at) == len(bt)
}

// Subjects are the subjects of one gateway. Telemetry holds "*" in place
// of {device}; the others are concrete.
type Subjects struct {
	Telemetry string
	Alerts    string
	Catalog   string
}

// Filters returns the three subjects, for a subscription.
func (s Subjects) Filters() []string { return []string{s.Telemetry, s.Alerts, s.Catalog} }

// SubjectsFor fills the templates of c for a gateway. It fails when a
// template uses a placeholder whose value is empty or not a valid token.
func (c *NATSConfig) SubjectsFor(site, gateway string) (Subjects, error) {
	vars := map[string]string{"site": site, "gateway": gateway}
	var out [3]string
	for i, t := range []struct{ key, tmpl string }{
		{"telemetry_subject", c.TelemetrySubject},
		{"alert_subject", c.AlertSubject},
		{"catalog_subject", c.CatalogSubject},
	} {
		p, err := parseTemplate(t.tmpl, "site", "gateway", "device")
		if err != nil {
			return Subjects{}, fmt.Errorf("%s: %w", t.key, err)
		}
		for _, name := range []string{"site", "gateway"} {
			if p.has(name) && !validToken(vars[name]) {
				return Subjects{}, fmt.Errorf("%s %q uses {%s}, but the gateway's %s is %q (set gateway.%s)", t.key, t.tmpl, name, name, vars[name], map[string]string{"site": "site", "gateway": "id"}[name])
			}
		}
		out[i] = p.fill(vars)
	}
	return Subjects{Telemetry: out[0], Alerts: out[1], Catalog: out[2]}, nil
}

// telemetrySubjects builds and caches the telemetry subject of each device,
// so that the hot path does not allocate one per message.
type telemetrySubjects struct {
	prefix, suffix string // around {device}; no device placeholder: prefix only
	perDevice      bool
	cache          map[string]string
}

func newTelemetrySubjects(filled string, perDevice bool) *telemetrySubjects {
	ts := &telemetrySubjects{perDevice: perDevice, cache: map[string]string{}}
	if !perDevice {
		ts.prefix = filled
		return ts
	}
	toks := strings.Split(filled, ".")
	i := slices.Index(toks, "*")
	ts.prefix = strings.Join(toks[:i], ".")
	if i > 0 {
		ts.prefix += "."
	}
	if i+1 < len(toks) {
		ts.suffix = "." + strings.Join(toks[i+1:], ".")
	}
	return ts
}

// subject returns the subject for device; ok is false when device cannot be
// a subject token.
func (ts *telemetrySubjects) subject(device string) (string, bool) {
	return ts.subjectOf([]byte(device))
}

// subjectOf is subject for a device name still in a record's bytes; a
// cached subject costs no allocation.
func (ts *telemetrySubjects) subjectOf(device []byte) (string, bool) {
	if !ts.perDevice {
		return ts.prefix, true
	}
	if s, ok := ts.cache[string(device)]; ok {
		return s, true
	}
	if !validToken(string(device)) {
		return "", false
	}
	s := ts.prefix + string(device) + ts.suffix
	if len(ts.cache) < 100_000 {
		ts.cache[string(device)] = s
	}
	return s, true
}
