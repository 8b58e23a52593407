package mqtt

import (
	"errors"
	"fmt"
	"strings"
)

// maxCaptures bounds the {name} captures of one topic.
const maxCaptures = 8

// maxDeviceName bounds a device name made from topic levels.
const maxDeviceName = 128

type levelKind uint8

const (
	levelLiteral levelKind = iota
	levelPlus              // + or {name}
	levelHash              // #, last
)

type level struct {
	kind    levelKind
	text    string // literal text
	capture int    // index into captures, -1 for a plain +
}

// topicPattern is a configured topic: an MQTT filter whose + levels may be
// named captures.
type topicPattern struct {
	filter   string // what is subscribed: captures become +
	levels   []level
	captures []string
	literals int // specificity: how many levels are literal
}

// span is a capture's position in a topic.
type span struct{ start, end int }

// compileTopic parses a topic such as "plant/{line}/+/telemetry/#".
func compileTopic(s string) (*topicPattern, error) {
	if s == "" {
		return nil, errors.New("is empty")
	}
	if len(s) > 65535 {
		return nil, errors.New("is longer than 65535 bytes")
	}
	if strings.ContainsRune(s, 0) {
		return nil, errors.New("holds a NUL byte")
	}
	p := &topicPattern{}
	parts := strings.Split(s, "/")
	filter := make([]string, len(parts))
	for i, part := range parts {
		switch {
		case part == "#":
			if i != len(parts)-1 {
				return nil, fmt.Errorf("%q: # must be the last level", s)
			}
			p.levels = append(p.levels, level{kind: levelHash})
			filter[i] = "#"
		case part == "+":
			p.levels = append(p.levels, level{kind: levelPlus, capture: -1})
			filter[i] = "+"
		case strings.HasPrefix(part, "{") && strings.HasSuffix(part, "}"):
			name := part[1 : len(part)-1]
			if !isIdent(name) {
				return nil, fmt.Errorf("%q: capture %q must be a name of letters, digits and _", s, part)
			}
			for _, c := range p.captures {
				if c == name {
					return nil, fmt.Errorf("%q: capture {%s} appears twice", s, name)
				}
			}
			if len(p.captures) == maxCaptures {
				return nil, fmt.Errorf("%q: more than %d captures", s, maxCaptures)
			}
			p.levels = append(p.levels, level{kind: levelPlus, capture: len(p.captures)})
			p.captures = append(p.captures, name)
			filter[i] = "+"
		case strings.ContainsAny(part, "+#"):
			return nil, fmt.Errorf("%q: + and # must fill a whole level", s)
		case strings.ContainsAny(part, "{}"):
			return nil, fmt.Errorf("%q: a {capture} must fill a whole level", s)
		default:
			p.levels = append(p.levels, level{kind: levelLiteral, text: part})
			filter[i] = part
			p.literals++
		}
	}
	p.filter = strings.Join(filter, "/")
	return p, nil
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// match reports whether topic matches p, recording each capture's span in
// caps (len(caps) >= len(p.captures)). It does not allocate.
func (p *topicPattern) match(topic string, caps []span) bool {
	// MQTT-4.7.2-1: a filter starting with a wildcard does not match
	// topics starting with $ ($SYS/...).
	if len(topic) > 0 && topic[0] == '$' && len(p.levels) > 0 && p.levels[0].kind != levelLiteral {
		return false
	}
	pos := 0
	for i, l := range p.levels {
		if l.kind == levelHash {
			return true // matches the parent level too: "a/#" matches "a"
		}
		if pos > len(topic) {
			return false // topic has fewer levels
		}
		end := strings.IndexByte(topic[pos:], '/')
		if end < 0 {
			end = len(topic)
		} else {
			end += pos
		}
		seg := topic[pos:end]
		switch l.kind {
		case levelLiteral:
			if seg != l.text {
				return false
			}
		case levelPlus:
			if l.capture >= 0 {
				caps[l.capture] = span{pos, end}
			}
		}
		pos = end + 1
		if i == len(p.levels)-1 {
			return end == len(topic)
		}
		if end == len(topic) {
			// Topic ended; only a following # can still match.
			return i+1 < len(p.levels) && p.levels[i+1].kind == levelHash
		}
	}
	return false
}

// template builds a device name from captures: "{line}-{machine}".
type template struct {
	parts []tmplPart
}

type tmplPart struct {
	lit     string
	capture int // -1: lit
}

// compileTemplate parses a device template against pattern p. An empty
// template gives "{device}" when p captures device, else a nil template
// (the configured device name is used).
func compileTemplate(s string, p *topicPattern) (*template, error) {
	if s == "" {
		for _, c := range p.captures {
			if c == "device" {
				s = "{device}"
			}
		}
		if s == "" {
			return nil, nil
		}
	}
	t := &template{}
	rest := s
	for rest != "" {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			t.parts = append(t.parts, tmplPart{lit: rest, capture: -1})
			break
		}
		if open > 0 {
			t.parts = append(t.parts, tmplPart{lit: rest[:open], capture: -1})
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("%q: unclosed {", s)
		}
		name := rest[open+1 : open+end]
		idx := -1
		for i, c := range p.captures {
			if c == name {
				idx = i
			}
		}
		if idx < 0 {
			return nil, fmt.Errorf("%q: {%s} is not captured by the topic (captures: %s)", s, name, strings.Join(p.captures, ", "))
		}
		t.parts = append(t.parts, tmplPart{capture: idx})
		rest = rest[open+end+1:]
	}
	hasCapture := false
	for _, part := range t.parts {
		if part.capture >= 0 {
			hasCapture = true
		} else if strings.ContainsAny(part.lit, "}") || !isName(part.lit) {
			return nil, fmt.Errorf("%q: the text around captures may hold only letters, digits, _ and -", s)
		}
	}
	if !hasCapture {
		return nil, fmt.Errorf("%q holds no {capture}; to name the device, use its name", s)
	}
	return t, nil
}

func isName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// expand returns the device name for topic with captures caps. Characters
// other than letters, digits, _ and - become _, so that the name is a safe
// token downstream (NATS subjects, metric labels stay with the configured
// device). It returns "" when the name would be empty or too long.
func (t *template) expand(topic string, caps []span) string {
	for _, part := range t.parts {
		if part.capture >= 0 && caps[part.capture].start == caps[part.capture].end {
			return "" // an empty level: "plant//x" names no device
		}
	}
	if len(t.parts) == 1 && t.parts[0].capture >= 0 {
		sp := caps[t.parts[0].capture]
		if s := topic[sp.start:sp.end]; len(s) <= maxDeviceName && isName(s) {
			return s // the common case, no allocation
		}
	}
	var b strings.Builder
	for _, part := range t.parts {
		if part.capture < 0 {
			b.WriteString(part.lit)
			continue
		}
		sp := caps[part.capture]
		for i := sp.start; i < sp.end; i++ {
			c := topic[i]
			if c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
				b.WriteByte(c)
			} else {
				b.WriteByte('_')
			}
		}
	}
	if b.Len() > maxDeviceName {
		return ""
	}
	return b.String()
}
