package modbus

import (
	"bytes"
	"math"

	"github.com/ferry-edge/ferry"
)

// valueKind is the decoded type of a point.
type valueKind uint8

const (
	kindBool valueKind = iota
	kindInt16
	kindUint16
	kindInt32
	kindUint32
	kindInt64
	kindUint64
	kindFloat32
	kindFloat64
	kindString
)

// decoder turns the bytes of a response into one point's value. It is
// built once per point; decoding a number does not allocate, and a string
// allocates only when its text changed since the last read.
type decoder struct {
	kind  valueKind
	order byteOrder
	bit   int8 // bool of a register: the bit, or -1 for "register is not zero"
	regs  int  // registers the value spans (1 for a bit of a bit table)

	field bool     // uint16: a bit field of the register (bits:)
	bits  bitRange // the field

	scaled        bool
	scale, offset float64
	decimals      int // of scale and offset (ferry.ScaleDecimals)

	str  []byte // strings: scratch for the swapped bytes
	last string // strings: the last text returned
}

// newDecoder builds the decoder of a validated point.
func newDecoder(p *Point, t table) *decoder {
	typ := p.Type
	if typ == "" {
		typ = defaultType(t)
	}
	ti := typeInfo[typ]
	o, _ := p.order()
	d := &decoder{kind: ti.kind, order: o, bit: -1, regs: ti.regs}
	if p.Bit != nil {
		d.bit = int8(*p.Bit)
	}
	if b, ok := p.fieldOf(); ok && ti.kind == kindUint16 {
		d.field, d.bits = true, b
	}
	if ti.kind == kindString {
		d.regs = int(p.Length)
		d.str = make([]byte, 2*d.regs)
	}
	if p.Scale != 0 || p.Offset != 0 {
		d.scaled = true
		d.scale, d.offset = p.Scale, p.Offset
		if d.scale == 0 {
			d.scale = 1
		}
		d.decimals = ferry.ScaleDecimals(d.scale, d.offset)
	}
	return d
}

// decoderSet hands out the decoders of one device's points. A number's
// decoder holds no state, only its layout (type, byte order, bit, field,
// scale): points with the same layout share one, which is read by the
// link's goroutine and by writes alike. A string's decoder keeps its
// scratch bytes and last text, so each string point has its own. Issue 20:
// 96 bytes a point before; a device of 500 points has a handful now.
type decoderSet map[decoderKey]*decoder

// decoderKey is a number decoder's layout (scale and offset as their bits,
// so that each distinct float is its own key).
type decoderKey struct {
	kind          valueKind
	order         byteOrder
	bit           int8
	regs          int
	field         bool
	bits          bitRange
	scaled        bool
	scale, offset uint64
}

// get returns the decoder of the validated point p of table t.
func (s decoderSet) get(p *Point, t table) *decoder {
	d := newDecoder(p, t)
	if d.kind == kindString {
		return d
	}
	k := decoderKey{kind: d.kind, order: d.order, bit: d.bit, regs: d.regs, field: d.field, bits: d.bits,
		scaled: d.scaled, scale: math.Float64bits(d.scale), offset: math.Float64bits(d.offset)}
	if shared, ok := s[k]; ok {
		return shared
	}
	s[k] = d
	return d
}

// decodeBit returns bit i of a coil or discrete input response (packed
// eight to a byte, least significant bit first).
func decodeBit(b []byte, i int) (ferry.Value, bool) {
	if i < 0 || i/8 >= len(b) {
		return ferry.Value{}, false
	}
	return ferry.BoolValue(b[i/8]>>(uint(i)%8)&1 == 1), true
}

// register returns register i of b (big-endian on the wire) with the
// decoder's byte swap applied.
func (d *decoder) register(b []byte, i int) uint16 {
	r := uint16(b[2*i])<<8 | uint16(b[2*i+1])
	if d.order&swapBytes != 0 {
		r = r<<8 | r>>8
	}
	return r
}

// raw returns the d.regs registers at the start of b as one unsigned
// number, most significant word first after the word order is applied.
func (d *decoder) raw(b []byte) uint64 {
	var v uint64
	n := d.regs
	for i := 0; i < n; i++ {
		j := i
		if d.order&swapWords != 0 {
			j = n - 1 - i
		}
		v = v<<16 | uint64(d.register(b, j))
	}
	return v
}

// decode decodes the value that starts at b[0] of a register response. It
// reports false when b is too short or the value is not a number (NaN or
// infinite float), which the caller turns into a Bad sample.
func (d *decoder) decode(b []byte) (ferry.Value, bool) {
	if len(b) < 2*d.regs || d.regs <= 0 {
		return ferry.Value{}, false
	}
	switch d.kind {
	case kindBool:
		r := d.register(b, 0)
		if d.bit >= 0 {
			return ferry.BoolValue(r>>uint(d.bit)&1 == 1), true
		}
		return ferry.BoolValue(r != 0), true
	case kindString:
		for i := 0; i < d.regs; i++ {
			r := d.register(b, i)
			d.str[2*i], d.str[2*i+1] = byte(r>>8), byte(r)
		}
		s := bytes.Trim(d.str, "\x00 ")
		if string(s) != d.last { // the comparison does not allocate
			d.last = string(s)
		}
		return ferry.StringValue(d.last), true
	}
	v := d.raw(b)
	var f float64
	switch d.kind {
	case kindInt16:
		if !d.scaled {
			return ferry.IntValue(int64(int16(v))), true
		}
		f = float64(int16(v))
	case kindUint16, kindUint32, kindUint64:
		if d.field {
			// The field after the byte order is applied, shifted down.
			v = v >> d.bits.lo & uint64(d.bits.max())
		}
		if !d.scaled {
			return ferry.UintValue(v), true
		}
		f = float64(v)
	case kindInt32:
		if !d.scaled {
			return ferry.IntValue(int64(int32(v))), true
		}
		f = float64(int32(v))
	case kindInt64:
		if !d.scaled {
			return ferry.IntValue(int64(v)), true
		}
		f = float64(int64(v))
	case kindFloat32:
		// The shortest decimal form: 59.95636, not 59.95635986328125.
		f = ferry.Widen32(math.Float32frombits(uint32(v)))
	case kindFloat64:
		f = math.Float64frombits(v)
	default:
		return ferry.Value{}, false
	}
	if d.scaled {
		f = f*d.scale + d.offset
		if d.kind != kindFloat32 && d.kind != kindFloat64 {
			// An integer register scaled by 0.1 has one decimal:
			// 159.7, not 159.70000000000002.
			f = ferry.RoundDecimals(f, d.decimals)
		}
	}
	// A NaN or an infinity (a float register's fault code, or a scale that
	// overflows) is returned as it is: the caller makes it Bad with
	// reasonOutOfRange and keeps the value for the engineer (see finite).
	return ferry.FloatValue(f), true
}

// reasonOutOfRange is the Reason of a point whose registers decode to a
// NaN or an infinity. The sample keeps that value, with Bad quality, so
// that the device's own fault code (many write NaN for a broken sensor)
// is seen upstream and in the console; rules never see Bad values.
const reasonOutOfRange = "out of range"

// finite reports whether v is not a NaN or infinite float.
func finite(v ferry.Value) bool {
	if v.Kind() != ferry.KindFloat {
		return true
	}
	f := v.Float64()
	return !math.IsNaN(f) && !math.IsInf(f, 0)
}
