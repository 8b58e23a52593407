package mqtt

import "encoding/json"

// The top-level index of a JSON payload (issue 20: CPU per sample).
//
// lookup reads a document from its start for each path, so a message of N
// configured top-level fields cost N scans of up to N members each: with
// 50 fields, most of the driver's CPU. A device therefore knows the first
// key of each point's path (topIndex), and decodeJSON walks the top-level
// object once, noting where the value of each such key starts; a point's
// lookup goes on from there with the rest of its path (lookupAt).
//
// The result is the same as lookup's on every document json.Valid accepts
// (decodeJSON checks that first, with validJSON (the same as json.Valid)):
// the first of duplicate keys wins, a key with escapes is compared
// unescaped, a document that is not an object has no field. FuzzTopIndex
// checks it against lookup.

// topIndex maps the first key of the points' paths to a slot.
type topIndex struct {
	slot map[string]int // first key → slot
	keys []string       // slot → first key
	// pointSlot[i] is the slot of point i, or -1 when its path does not
	// start with an object key (it then goes through lookup).
	pointSlot []int
}

// newTopIndex indexes the first keys of paths; nil when no path starts
// with an object key.
func newTopIndex(paths []jsonPath) *topIndex {
	x := &topIndex{slot: map[string]int{}, pointSlot: make([]int, len(paths))}
	for i, p := range paths {
		x.pointSlot[i] = -1
		if len(p) == 0 || p[0].index >= 0 {
			continue
		}
		s, ok := x.slot[p[0].key]
		if !ok {
			s = len(x.slot)
			x.slot[p[0].key] = s
			x.keys = append(x.keys, p[0].key)
		}
		x.pointSlot[i] = s
	}
	if len(x.slot) == 0 {
		return nil
	}
	return x
}

// fill sets starts[slot] to the offset in doc of the value of the slot's
// key in the top-level object, or -1 where the key is absent (or doc is
// not an object). doc must be valid JSON (json.Valid); on anything else
// fill stops and leaves the rest absent, and the caller's lookupAt reports
// the damage.
func (x *topIndex) fill(doc []byte, starts []int) []int {
	starts = starts[:0]
	for range x.slot {
		starts = append(starts, -1)
	}
	i := skipWS(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		return starts
	}
	i = skipWS(doc, i+1)
	// Payloads usually list their fields in the order of the
	// configuration: the slot after the last one found is tried before
	// the map.
	guess := 0
	for i < len(doc) && doc[i] == '"' {
		end, esc := scanString(doc, i)
		if end < 0 {
			return starts
		}
		s, ok := -1, false
		if !esc {
			if key := doc[i+1 : end-1]; guess < len(x.keys) && string(key) == x.keys[guess] {
				s, ok = guess, true
			} else {
				s, ok = x.slot[string(key)]
			}
			if ok {
				guess = s + 1
			}
		} else {
			var k string
			if json.Unmarshal(doc[i:end], &k) == nil {
				s, ok = x.slot[k]
			}
		}
		i = skipWS(doc, end)
		if i >= len(doc) || doc[i] != ':' {
			return starts
		}
		i = skipWS(doc, i+1)
		if ok && starts[s] < 0 {
			starts[s] = i
		}
		next, err := nextItem(doc, i, '}')
		if err != nil {
			return starts
		}
		i = next
	}
	return starts
}

// lookupAt finds the value at path p inside the value starting at
// doc[i], as lookup does from the document's start.
func lookupAt(doc []byte, i int, p jsonPath) ([]byte, error) {
	for _, seg := range p {
		if i >= len(doc) {
			return nil, errNotJSON
		}
		var err error
		if seg.index >= 0 {
			if doc[i] != '[' {
				return nil, errMissingPath
			}
			i, err = arrayElem(doc, i, seg.index)
		} else {
			if doc[i] != '{' {
				return nil, errMissingPath
			}
			i, err = objectField(doc, i, seg.key)
		}
		if err != nil {
			return nil, err
		}
	}
	end := skipValue(doc, i)
	if end < 0 {
		return nil, errNotJSON
	}
	return doc[i:end], nil
}
