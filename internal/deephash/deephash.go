// Package deephash digests a Go value so that two digests are equal when
// reflect.DeepEqual would call the values equal: a running part can keep
// the digest of a configuration instead of the configuration itself and
// still tell, on a reload, whether it changed.
//
// The digest is a SHA-256 of an encoding that follows DeepEqual's rules:
// every field of a struct, exported or not; slices, arrays and strings by
// length and elements, a nil slice apart from an empty one; maps by their
// key/value pairs in any order, a nil map apart from an empty one; pointers
// followed, nil apart from non-nil; interfaces by dynamic type and value;
// numbers by value (so -0 and +0 agree), bools, time.Duration and other
// named kinds as their underlying kind; channels and unsafe pointers by
// address.
//
// Where DeepEqual's answer cannot be had from one value alone, the digest
// leans towards "different", the answer that costs at most a needless
// restart:
//
//   - A non-nil func is deeply equal to nothing (DeepEqual says the same,
//     except when both sides reach it through one shared pointer): each
//     gets a digest of its own.
//   - A cyclic value is digested as the tree it unrolls to, each pointer,
//     map or slice met again on its own path written as a reference to
//     where it was first met. Equal digests still mean DeepEqual; two
//     values DeepEqual accepts whose cycles have different lengths digest
//     apart.
//
// One exception leans the other way: a NaN digests equal to a NaN of the
// same bits, where DeepEqual holds NaN unequal even to itself. A
// configuration holding a NaN is then "unchanged" when it is, instead of
// changed on every reload.
//
// Digests identify dynamic types by a number this process assigns: compare
// them within one process only; do not store or send them.
package deephash

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"math"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Digest is the digest of a value.
type Digest [sha256.Size]byte

// Of returns the digest of v: Of(a) == Of(b) when reflect.DeepEqual(a, b),
// and (but for SHA-256 collisions) only then, with the caveats of the
// package comment.
func Of(v any) Digest {
	h := newHasher(map[visit]int{})
	if v == nil {
		h.byte(tagNil)
	} else {
		rv := reflect.ValueOf(v)
		h.byte(tagSet)
		h.u64(typeID(rv.Type()))
		h.value(rv)
	}
	return h.sum()
}

// Markers written before a value that may be nil or met again.
const (
	tagNil  = 0
	tagSet  = 1
	tagBack = 2 // a pointer, map or slice met again on its own path
)

// visit identifies a pointer, map or slice being digested: DeepEqual's
// key for the values it has seen, plus a slice's length.
type visit struct {
	ptr unsafe.Pointer
	typ reflect.Type
	n   int
}

type hasher struct {
	h   hash.Hash
	buf []byte
	// path holds the pointers, maps and slices from the root down to the
	// value being digested, each with its depth on the path.
	path map[visit]int
}

func newHasher(path map[visit]int) *hasher {
	return &hasher{h: sha256.New(), buf: make([]byte, 0, 4096), path: path}
}

func (h *hasher) sum() Digest {
	h.h.Write(h.buf)
	h.buf = h.buf[:0]
	var d Digest
	h.h.Sum(d[:0])
	return d
}

func (h *hasher) flush() {
	if len(h.buf) >= cap(h.buf)-64 {
		h.h.Write(h.buf)
		h.buf = h.buf[:0]
	}
}

func (h *hasher) byte(b byte) {
	h.flush()
	h.buf = append(h.buf, b)
}

func (h *hasher) u64(u uint64) {
	h.flush()
	h.buf = binary.LittleEndian.AppendUint64(h.buf, u)
}

// float writes f by its bits, with -0 as +0 (DeepEqual compares with ==).
func (h *hasher) float(f float64) {
	if f == 0 {
		f = 0
	}
	h.u64(math.Float64bits(f))
}

func (h *hasher) str(s string) {
	h.u64(uint64(len(s)))
	for len(s) > 0 {
		h.flush()
		n := min(len(s), cap(h.buf)-len(h.buf))
		h.buf = append(h.buf, s[:n]...)
		s = s[n:]
	}
}

// ref digests the slice, pointer or map v (n: a slice's length, else 0):
// nil, or a back reference when v is on the path already, or else body
// with v on the path.
func (h *hasher) ref(v reflect.Value, n int, body func()) {
	if v.IsNil() {
		h.byte(tagNil)
		return
	}
	k := visit{v.UnsafePointer(), v.Type(), n}
	if depth, ok := h.path[k]; ok {
		h.byte(tagBack)
		h.u64(uint64(depth))
		return
	}
	h.byte(tagSet)
	h.path[k] = len(h.path)
	body()
	delete(h.path, k)
}

// funcs numbers the non-nil funcs digested, so that no two are equal.
var funcs atomic.Uint64

func (h *hasher) value(v reflect.Value) {
	switch v.Kind() {
	case reflect.Bool:
		if v.Bool() {
			h.byte(1)
		} else {
			h.byte(0)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		h.u64(uint64(v.Int()))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		h.u64(v.Uint())
	case reflect.Float32, reflect.Float64:
		h.float(v.Float())
	case reflect.Complex64, reflect.Complex128:
		c := v.Complex()
		h.float(real(c))
		h.float(imag(c))
	case reflect.String:
		h.str(v.String())
	case reflect.Array:
		for i := range v.Len() {
			h.value(v.Index(i))
		}
	case reflect.Struct:
		for i := range v.NumField() {
			h.value(v.Field(i))
		}
	case reflect.Slice:
		h.ref(v, v.Len(), func() {
			h.u64(uint64(v.Len()))
			for i := range v.Len() {
				h.value(v.Index(i))
			}
		})
	case reflect.Pointer:
		h.ref(v, 0, func() { h.value(v.Elem()) })
	case reflect.Interface:
		if v.IsNil() {
			h.byte(tagNil)
			return
		}
		e := v.Elem()
		h.byte(tagSet)
		h.u64(typeID(e.Type()))
		h.value(e)
	case reflect.Map:
		h.ref(v, 0, func() { h.mapPairs(v) })
	case reflect.Func:
		if v.IsNil() {
			h.byte(tagNil)
			return
		}
		h.byte(tagSet)
		h.u64(funcs.Add(1))
	case reflect.Chan, reflect.UnsafePointer:
		// DeepEqual compares them by address.
		h.u64(uint64(v.Pointer()))
	default: // reflect.Invalid: only a nil interface's Elem, handled above
		panic("deephash: cannot digest a " + v.Kind().String())
	}
}

// mapPairs writes the pairs of the map v in an order of their own: each
// key and value is digested apart (on the same path), and the sorted
// digests are written.
func (h *hasher) mapPairs(v reflect.Value) {
	h.u64(uint64(v.Len()))
	pairs := make([]Digest, 0, v.Len())
	it := v.MapRange()
	for it.Next() {
		sub := newHasher(h.path)
		sub.value(it.Key())
		sub.value(it.Value())
		pairs = append(pairs, sub.sum())
	}
	slices.SortFunc(pairs, func(a, b Digest) int { return bytes.Compare(a[:], b[:]) })
	for _, p := range pairs {
		for _, b := range p {
			h.byte(b)
		}
	}
}

// typeIDs numbers the dynamic types met, in this process.
var (
	typeMu  sync.Mutex
	typeIDs = map[reflect.Type]uint64{}
)

func typeID(t reflect.Type) uint64 {
	typeMu.Lock()
	defer typeMu.Unlock()
	id, ok := typeIDs[t]
	if !ok {
		id = uint64(len(typeIDs)) + 1
		typeIDs[t] = id
	}
	return id
}
