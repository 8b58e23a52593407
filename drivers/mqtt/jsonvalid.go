package mqtt

// maxJSONDepth is encoding/json's nesting limit (maxNestingDepth in its
// scanner): json.Valid refuses a document whose brackets nest deeper than
// this, and validJSON does the same.
const maxJSONDepth = 10000

// strPlain marks the bytes a JSON string holds as they are: everything but
// the quote, the backslash and the control bytes below 0x20. Bytes of 0x80
// and above are plain too: json.Valid does not check UTF-8 in strings.
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// validJSON reports whether b is one JSON value with nothing but
// whitespace around it: the same answer as json.Valid for every input,
// without its per-byte state function calls. Like json.Valid it accepts
// invalid UTF-8 inside strings and refuses nesting deeper than
// maxJSONDepth. It does not recurse; which bracket each level opened is a
// bit on an explicit stack that lives in a fixed array for the first 256
// levels, so it does not allocate unless a document nests deeper than that.
func validJSON(b []byte) bool {
	var small [4]uint64
	objs := small[:] // bit d-1 set: the container at depth d is an object
	depth := 0
	i := skipWS(b, 0)
	for {
		// A value starts at b[i].
		if i >= len(b) {
			return false
		}
		switch c := b[i]; c {
		case '{', '[':
			depth++
			if depth > maxJSONDepth {
				return false
			}
			w, bit := (depth-1)>>6, uint64(1)<<((depth-1)&63)
			if w == len(objs) {
				grown := make([]uint64, (maxJSONDepth+63)>>6)
				copy(grown, objs)
				objs = grown
			}
			i = skipWS(b, i+1)
			if c == '[' {
				objs[w] &^= bit
				if i < len(b) && b[i] == ']' {
					i++
					depth--
					break
				}
				continue
			}
			objs[w] |= bit
			if i < len(b) && b[i] == '}' {
				i++
				depth--
				break
			}
			if i = scanJSONKey(b, i); i < 0 {
				return false
			}
			continue
		case '"':
			i = scanJSONString(b, i+1)
		case 't':
			i = literal(b, i, "true")
		case 'f':
			i = literal(b, i, "false")
		case 'n':
			i = literal(b, i, "null")
		default:
			i = scanNumber(b, i)
		}
		if i < 0 {
			return false
		}
		// A value ends before b[i]: close containers until one goes on.
		for {
			i = skipWS(b, i)
			if depth == 0 {
				return i == len(b)
			}
			if i >= len(b) {
				return false
			}
			obj := objs[(depth-1)>>6]&(uint64(1)<<((depth-1)&63)) != 0
			c := b[i]
			if c == ',' {
				i = skipWS(b, i+1)
				if obj {
					if i = scanJSONKey(b, i); i < 0 {
						return false
					}
				}
				break
			}
			if obj && c == '}' || !obj && c == ']' {
				i++
				depth--
				continue
			}
			return false
		}
	}
}

// scanJSONKey reads an object key, the colon and the whitespace after it
// from b[i], and returns where the member's value starts, or -1.
func scanJSONKey(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	if i = scanJSONString(b, i+1); i < 0 {
		return -1
	}
	i = skipWS(b, i)
	if i >= len(b) || b[i] != ':' {
		return -1
	}
	return skipWS(b, i+1)
}

// scanJSONString reads the rest of a string whose opening quote is just
// before b[i] and returns the offset after its closing quote, or -1.
func scanJSONString(b []byte, i int) int {
	for i < len(b) {
		c := b[i]
		if strPlain[c] {
			i++
			continue
		}
		switch c {
		case '"':
			return i + 1
		case '\\':
			if i+1 >= len(b) {
				return -1
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return -1
				}
				i += 6
			default:
				return -1
			}
		default: // a control byte
			return -1
		}
	}
	return -1
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
