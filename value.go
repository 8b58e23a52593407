package ferry

import (
	"math"
	"strconv"
)

// Kind is the type of the datum a [Value] holds.
type Kind uint8

// The kinds a Value can hold. KindNone is the zero Value: nothing was read
// (a Bad sample of a device that did not answer carries no value).
const (
	KindNone Kind = iota
	KindFloat
	KindInt
	KindUint
	KindBool
	KindString
)

var kindNames = [...]string{"none", "float", "int", "uint", "bool", "string"}

// String returns the lower-case name of the kind ("float", "int", …).
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Value is one datum read from a device: a float64, int64, uint64, bool or
// string. Numbers and bools are stored unboxed, so building and copying a
// Value does not allocate. The zero Value has KindNone.
//
// Accessors never panic: Float64, Int64, Uint64 and Bool convert between the
// numeric kinds (a bool is 0 or 1) and return the zero value for a string or
// KindNone; use Kind or Number to tell those cases apart.
type Value struct {
	str  string
	bits uint64
	kind Kind
}

// FloatValue returns a Value holding f.
func FloatValue(f float64) Value { return Value{kind: KindFloat, bits: math.Float64bits(f)} }

// IntValue returns a Value holding i.
func IntValue(i int64) Value { return Value{kind: KindInt, bits: uint64(i)} }

// UintValue returns a Value holding u.
func UintValue(u uint64) Value { return Value{kind: KindUint, bits: u} }

// BoolValue returns a Value holding b.
func BoolValue(b bool) Value {
	var bits uint64
	if b {
		bits = 1
	}
	return Value{kind: KindBool, bits: bits}
}

// StringValue returns a Value holding s.
func StringValue(s string) Value { return Value{kind: KindString, str: s} }

// Kind returns the kind of datum v holds.
func (v Value) Kind() Kind { return v.kind }

// IsNone reports whether v holds nothing.
func (v Value) IsNone() bool { return v.kind == KindNone }

// Number returns v as a float64 and true when v is numeric or a bool (true
// is 1); for a string or KindNone it returns 0, false. Rules compare and
// average through Number.
func (v Value) Number() (float64, bool) {
	switch v.kind {
	case KindFloat:
		return math.Float64frombits(v.bits), true
	case KindInt:
		return float64(int64(v.bits)), true
	case KindUint:
		return float64(v.bits), true
	case KindBool:
		return float64(v.bits), true
	}
	return 0, false
}

// Float64 returns v converted to float64 (0 for a string or KindNone).
func (v Value) Float64() float64 {
	f, _ := v.Number()
	return f
}

// Int64 returns v converted to int64: a float is truncated toward zero and
// clamped to the int64 range, NaN gives 0.
func (v Value) Int64() int64 {
	switch v.kind {
	case KindInt, KindBool:
		return int64(v.bits)
	case KindUint:
		if v.bits > math.MaxInt64 {
			return math.MaxInt64
		}
		return int64(v.bits)
	case KindFloat:
		f := math.Float64frombits(v.bits)
		switch {
		case f != f:
			return 0
		case f >= math.MaxInt64:
			return math.MaxInt64
		case f <= math.MinInt64:
			return math.MinInt64
		}
		return int64(f)
	}
	return 0
}

// Uint64 returns v converted to uint64: negative numbers and NaN give 0.
func (v Value) Uint64() uint64 {
	switch v.kind {
	case KindUint, KindBool:
		return v.bits
	case KindInt:
		if int64(v.bits) < 0 {
			return 0
		}
		return v.bits
	case KindFloat:
		f := math.Float64frombits(v.bits)
		switch {
		case f != f || f <= 0:
			return 0
		case f >= math.MaxUint64:
			return math.MaxUint64
		}
		return uint64(f)
	}
	return 0
}

// Bool returns v as a bool: a number is true when it is not zero, a string
// when it is not empty.
func (v Value) Bool() bool {
	switch v.kind {
	case KindString:
		return v.str != ""
	case KindFloat:
		return math.Float64frombits(v.bits) != 0
	}
	return v.bits != 0
}

// Str returns the string v holds, or "" when v is not a string. Use String
// for a printable form of any kind.
func (v Value) Str() string { return v.str }

// Any returns v as an interface value (float64, int64, uint64, bool, string,
// or nil for KindNone). It allocates; keep it off hot paths.
func (v Value) Any() any {
	switch v.kind {
	case KindFloat:
		return math.Float64frombits(v.bits)
	case KindInt:
		return int64(v.bits)
	case KindUint:
		return v.bits
	case KindBool:
		return v.bits != 0
	case KindString:
		return v.str
	}
	return nil
}

// String formats v for logs and messages. Floats use the shortest
// representation that round-trips.
func (v Value) String() string {
	return string(v.AppendText(nil))
}

// AppendText appends the String form of v to b.
func (v Value) AppendText(b []byte) []byte {
	switch v.kind {
	case KindFloat:
		return strconv.AppendFloat(b, math.Float64frombits(v.bits), 'g', -1, 64)
	case KindInt:
		return strconv.AppendInt(b, int64(v.bits), 10)
	case KindUint:
		return strconv.AppendUint(b, v.bits, 10)
	case KindBool:
		return strconv.AppendBool(b, v.bits != 0)
	case KindString:
		return append(b, v.str...)
	}
	return b
}

// Equal reports whether v and o hold the same kind and datum. Floats compare
// by bits, so NaN equals NaN and 0 does not equal -0: Equal answers "did the
// value change", not "are the numbers equal".
func (v Value) Equal(o Value) bool {
	return v.kind == o.kind && v.bits == o.bits && v.str == o.str
}
