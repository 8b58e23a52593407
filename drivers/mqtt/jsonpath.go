package mqtt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ferry-edge/ferry"
)

// A JSON path names one value inside a document: object keys separated by
// dots, array indexes in brackets, and keys that hold dots or brackets
// quoted in brackets: temp, env.temp, readings[0].value, ["a.b"].c, [2].
type jsonPath []pathSeg

type pathSeg struct {
	key   string
	index int // >= 0: an array index; -1: an object key
}

// maxPathSegs bounds a path's depth.
const maxPathSegs = 64

// parsePath parses a JSON path.
func parsePath(s string) (jsonPath, error) {
	if s == "" {
		return nil, errors.New("path is empty")
	}
	var p jsonPath
	i := 0
	for i < len(s) {
		if len(p) == maxPathSegs {
			return nil, fmt.Errorf("path %q is deeper than %d levels", s, maxPathSegs)
		}
		switch s[i] {
		case '[':
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("path %q: unclosed [", s)
			}
			inner := s[i+1 : i+j]
			if strings.HasPrefix(inner, `"`) {
				// A quoted key may hold ]: find the closing quote first.
				end := closingQuote(s, i+1)
				if end < 0 || end+1 >= len(s) || s[end+1] != ']' {
					return nil, fmt.Errorf("path %q: a quoted key is written [\"key\"]", s)
				}
				key, err := strconv.Unquote(s[i+1 : end+1])
				if err != nil {
					return nil, fmt.Errorf("path %q: bad quoted key: %v", s, err)
				}
				p = append(p, pathSeg{key: key, index: -1})
				i = end + 2
			} else {
				n, err := strconv.Atoi(inner)
				if err != nil || n < 0 || inner == "" || inner[0] == '+' || inner[0] == '-' {
					return nil, fmt.Errorf("path %q: [%s] is not an array index (use [\"%s\"] for a key)", s, inner, inner)
				}
				p = append(p, pathSeg{index: n})
				i += j + 1
			}
			if i < len(s) && s[i] != '.' && s[i] != '[' {
				return nil, fmt.Errorf("path %q: expected . or [ after ]", s)
			}
			if i < len(s) && s[i] == '.' {
				i++
				if i == len(s) {
					return nil, fmt.Errorf("path %q ends with a dot", s)
				}
			}
		case '.':
			return nil, fmt.Errorf("path %q has an empty key", s)
		default:
			j := i
			for j < len(s) && s[j] != '.' && s[j] != '[' {
				if s[j] == ']' || s[j] == '"' {
					return nil, fmt.Errorf("path %q: unexpected %c (quote odd keys as [\"key\"])", s, s[j])
				}
				j++
			}
			p = append(p, pathSeg{key: s[i:j], index: -1})
			i = j
			if i < len(s) && s[i] == '.' {
				i++
				if i == len(s) {
					return nil, fmt.Errorf("path %q ends with a dot", s)
				}
			}
		}
	}
	return p, nil
}

// closingQuote returns the index of the quote that closes the Go string
// literal starting at s[start] (a quote), or -1.
func closingQuote(s string, start int) int {
	for i := start + 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// String formats the path back to its source form.
func (p jsonPath) String() string {
	var b strings.Builder
	for i, s := range p {
		switch {
		case s.index >= 0:
			b.WriteString("[" + strconv.Itoa(s.index) + "]")
		case isPlainKey(s.key):
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(s.key)
		default:
			b.WriteString("[" + strconv.Quote(s.key) + "]")
		}
	}
	return b.String()
}

func isPlainKey(k string) bool {
	return k != "" && !strings.ContainsAny(k, ".[]\"")
}

// Errors of JSON lookups; their reasons are the metric labels.
var (
	errNotJSON     = errors.New("not JSON")
	errMissingPath = errors.New("missing path")
)

// lookup finds the value at path p in doc and returns its raw bytes
// (a string value with its quotes). It reads only what it needs: damage on
// its way gives errNotJSON, damage after the value goes unseen (the driver
// checks each payload with validJSON (the same as json.Valid) first). It
// never panics on any input, and does not allocate, except to unescape an
// object key with escapes.
func lookup(doc []byte, p jsonPath) ([]byte, error) {
	return lookupAt(doc, skipWS(doc, 0), p)
}

// objectField returns the start of the value of key in the object at
// doc[i] == '{'. The first of duplicate keys wins.
func objectField(doc []byte, i int, key string) (int, error) {
	i = skipWS(doc, i+1)
	if i < len(doc) && doc[i] == '}' {
		return 0, errMissingPath
	}
	for i < len(doc) {
		if doc[i] != '"' {
			return 0, errNotJSON
		}
		end, esc := scanString(doc, i)
		if end < 0 {
			return 0, errNotJSON
		}
		match := false
		if !esc {
			match = string(doc[i+1:end-1]) == key
		} else {
			var k string
			if json.Unmarshal(doc[i:end], &k) == nil {
				match = k == key
			}
		}
		i = skipWS(doc, end)
		if i >= len(doc) || doc[i] != ':' {
			return 0, errNotJSON
		}
		i = skipWS(doc, i+1)
		if match {
			return i, nil
		}
		next, err := nextItem(doc, i, '}')
		if err != nil {
			return 0, err
		}
		i = next
	}
	return 0, errNotJSON
}

// arrayElem returns the start of element n of the array at doc[i] == '['.
func arrayElem(doc []byte, i, n int) (int, error) {
	i = skipWS(doc, i+1)
	if i < len(doc) && doc[i] == ']' {
		return 0, errMissingPath
	}
	for k := 0; i < len(doc); k++ {
		if k == n {
			return i, nil
		}
		next, err := nextItem(doc, i, ']')
		if err != nil {
			return 0, err
		}
		i = next
	}
	return 0, errNotJSON
}

// nextItem skips the value at doc[i] and the comma after it, returning
// the start of the next member or element; errMissingPath when closing
// ends the object or array there instead.
func nextItem(doc []byte, i int, closing byte) (int, error) {
	if i = skipValue(doc, i); i < 0 {
		return 0, errNotJSON
	}
	i = skipWS(doc, i)
	if i >= len(doc) {
		return 0, errNotJSON
	}
	switch doc[i] {
	case ',':
		return skipWS(doc, i+1), nil
	case closing:
		return 0, errMissingPath
	}
	return 0, errNotJSON
}

// skipWS returns the offset of the first byte at or after i that is not
// JSON whitespace (space, tab, LF, CR), or len(b).
func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanString returns the end (after the closing quote) of the string at
// b[i] == '"', and whether it holds escapes; -1 when unterminated.
func scanString(b []byte, i int) (int, bool) {
	esc := false
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '\\':
			esc = true
			j++
		case c == '"':
			return j + 1, esc
		case c < 0x20:
			return -1, false
		}
	}
	return -1, false
}

// maxDepth bounds the nesting skipValue follows.
const maxDepth = 1000

// skipValue returns the end of the value starting at b[i], or -1 when
// there is no well-formed value there.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch c := b[i]; {
	case c == '"':
		end, _ := scanString(b, i)
		return end
	case c == '{' || c == '[':
		return skipContainer(b, i)
	case c == 't':
		return literal(b, i, "true")
	case c == 'f':
		return literal(b, i, "false")
	case c == 'n':
		return literal(b, i, "null")
	case c == '-' || c >= '0' && c <= '9':
		return scanNumber(b, i)
	}
	return -1
}

// skipContainer skips an object or array, checking its structure loosely
// (brackets balance, strings terminate) without recursion.
func skipContainer(b []byte, i int) int {
	var stack [maxDepth]byte
	depth := 0
	for i < len(b) {
		switch c := b[i]; c {
		case '{', '[':
			if depth == maxDepth {
				return -1
			}
			stack[depth] = c
			depth++
			i++
		case '}', ']':
			if depth == 0 || (c == '}') != (stack[depth-1] == '{') {
				return -1
			}
			depth--
			i++
			if depth == 0 {
				return i
			}
		case '"':
			end, _ := scanString(b, i)
			if end < 0 {
				return -1
			}
			i = end
		default:
			i++
		}
	}
	return -1
}

func literal(b []byte, i int, lit string) int {
	if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
		return i + len(lit)
	}
	return -1
}

// scanNumber returns the end of the JSON number at b[i],
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, or -1. What follows it
// is the caller's to judge: "01" is the number 0 followed by a stray digit.
func scanNumber(b []byte, i int) int {
	j := i
	if j < len(b) && b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && b[j] >= '1' && b[j] <= '9':
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
	default:
		return -1
	}
	if j < len(b) && b[j] == '.' {
		j++
		k := j
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		if j == k {
			return -1
		}
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		k := j
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		if j == k {
			return -1
		}
	}
	return j
}

// errWrongType is returned when a value is of a type that cannot become
// the point's type (an object where a number is expected, "abc" as float).
var errWrongType = errors.New("wrong type")

// errNull is returned for a JSON null.
var errNull = errors.New("null")

// jsonValue converts the raw JSON value raw (as returned by lookup) to a
// Value: numbers become int (integer literals that fit) or float, true and
// false bool, strings string. Objects and arrays are errWrongType, null is
// errNull.
func jsonValue(raw []byte) (ferry.Value, error) {
	if len(raw) == 0 {
		return ferry.Value{}, errNotJSON
	}
	switch c := raw[0]; {
	case c == '"':
		s, err := jsonString(raw)
		if err != nil {
			return ferry.Value{}, err
		}
		return ferry.StringValue(s), nil
	case c == 't':
		return ferry.BoolValue(true), nil
	case c == 'f':
		return ferry.BoolValue(false), nil
	case c == 'n':
		return ferry.Value{}, errNull
	case c == '{' || c == '[':
		return ferry.Value{}, errWrongType
	}
	return numberValue(raw)
}

// numberValue parses a JSON number (or a numeric text): an integer that
// fits int64 (or uint64) stays an integer, anything else is a float.
func numberValue(raw []byte) (ferry.Value, error) {
	if !bytes.ContainsAny(raw, ".eE") {
		if i, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
			return ferry.IntValue(i), nil
		}
		if u, err := strconv.ParseUint(string(raw), 10, 64); err == nil {
			return ferry.UintValue(u), nil
		}
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		var ne *strconv.NumError
		if !errors.As(err, &ne) || ne.Err != strconv.ErrRange {
			return ferry.Value{}, errWrongType
		}
		if math.IsInf(f, 0) {
			// 1e400, a 400-digit integer: beyond float64. The ±Inf is
			// returned with errOutOfRange, for a Bad sample that keeps it.
			return ferry.FloatValue(f), errOutOfRange
		}
		// 1e-400: an underflow, rounded to 0 as any float is rounded.
	}
	return ferry.FloatValue(f), nil
}

// errOutOfRange is returned with ±Inf for a number beyond float64.
var errOutOfRange = errors.New("out of range")

// jsonString decodes a JSON string literal (with quotes). Strings without
// escapes and with valid UTF-8 take one allocation; others go through
// encoding/json so that escapes and invalid UTF-8 are handled the same way.
func jsonString(raw []byte) (string, error) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", errNotJSON
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", errNotJSON
	}
	return s, nil
}
