package modbus

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/ferry-edge/ferry"
)

// encoded is a value ready to go on the wire: what one write request
// carries.
type encoded struct {
	// data is the register bytes as sent (holding registers), in the
	// point's byte and word order; nil for a coil or a mask write.
	data []byte
	// on is the state of a coil, or the bit of a mask write.
	on bool
	// mask: a bit or a bit field of a register, written with FC22 (and,
	// or masks, as they travel: the point's byte swap applied). The
	// register then holds (r AND and) OR (or AND NOT and): the bits
	// outside and are the written ones.
	mask      bool
	and, or   uint16
	valueText string // the value as asked, for messages
}

// refuse returns an error wrapping ferry.ErrWriteRefused: nothing was
// sent to the device.
func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ferry.ErrWriteRefused, fmt.Sprintf(format, args...))
}

// Rounding and range rules of encode (README "Writing"):
//
//   - Integer types without scale or offset take an integer, or a float or
//     text with no fraction, inside the type's range; anything else is
//     refused. Nothing is rounded.
//   - With scale or offset the raw count is (value - offset) / scale,
//     computed in float64. It is rounded to the nearest integer only when
//     it is within 1e-6 + 1e-15 × (|count| + |offset/scale|) of it, which
//     is float64 noise (23.4 / 0.1 is 233.99999999999997); a real
//     fraction of a count (23.45 with scale 0.1 is 234.5 counts) is
//     refused, never rounded. Counts of magnitude 2^46 (7e13) or more are
//     refused: float64 cannot tell a fraction there.
//   - float32 and float64 points take the nearest value of their width
//     (the device stores that; a read reports it): 23.4 written to a
//     float32 reads back 23.399999618530273. A value beyond the width's
//     range, NaN and ±Inf are refused.
//   - bool takes true/false, or 0/1 as a number or text.
//   - string takes text of at most 2 × length bytes, padded with NULs;
//     text with leading or trailing spaces or NULs is refused (a read
//     trims them: it would not read back as written).
const (
	countTolerance = 1e-6
	maxScaledCount = 1 << 46
)

// encode turns v, in engineering units, into what a write of the point
// sends. t is the point's table; mask says the device supports FC22. An
// error wraps ferry.ErrWriteRefused and says why.
func (d *decoder) encode(t table, v ferry.Value, mask bool) (encoded, error) {
	e := encoded{valueText: v.String()}
	if v.Kind() == ferry.KindString {
		e.valueText = strconv.Quote(v.Str())
	}
	switch t {
	case tableCoil:
		b, err := boolOf(v)
		if err != nil {
			return e, err
		}
		e.on = b
		return e, nil
	case tableHolding:
	default:
		return e, refuse("the %s table is read-only", t)
	}
	switch d.kind {
	case kindBool:
		b, err := boolOf(v)
		if err != nil {
			return e, err
		}
		if d.bit >= 0 {
			if !mask {
				return e, refuse("bit %d of a register can only be written with FC22 (mask write), and the device does not declare modbus.mask_write: true; ferry never read-modify-writes a register", d.bit)
			}
			w := uint8(d.bit)
			if d.order&swapBytes != 0 {
				w = (w + 8) % 16
			}
			e.mask, e.on = true, b
			e.and = ^uint16(1 << w)
			if b {
				e.or = 1 << w
			}
			return e, nil
		}
		var r uint64
		if b {
			r = 1
		}
		e.data = d.words(r)
		return e, nil
	case kindString:
		if v.Kind() != ferry.KindString {
			return e, refuse("%s is not text: the point is a string", v.Kind())
		}
		s := v.Str()
		switch {
		case len(s) > 2*d.regs:
			return e, refuse("text of %d bytes does not fit %d registers (%d bytes)", len(s), d.regs, 2*d.regs)
		case strings.Trim(s, "\x00 ") != s:
			return e, refuse("text has leading or trailing spaces or NUL bytes, which a read trims: it would not read back as written")
		}
		e.data = make([]byte, 2*d.regs)
		for i := 0; i < d.regs; i++ {
			var hi, lo byte
			if 2*i < len(s) {
				hi = s[2*i]
			}
			if 2*i+1 < len(s) {
				lo = s[2*i+1]
			}
			r := uint16(hi)<<8 | uint16(lo)
			if d.order&swapBytes != 0 {
				r = r<<8 | r>>8
			}
			binary.BigEndian.PutUint16(e.data[2*i:], r)
		}
		return e, nil
	}
	n, err := numberOf(v)
	if err != nil {
		return e, err
	}
	var bits uint64
	switch d.kind {
	case kindFloat32, kindFloat64:
		f, err := d.unscaleFloat(n)
		if err != nil {
			return e, err
		}
		if d.kind == kindFloat32 {
			// Refused only when it rounds to an infinity: a float32
			// point's value is the shortest decimal of its float32
			// ("-3.4028235e+38"), a little beyond MaxFloat32 as a
			// float64, and must write back (FuzzEncodeRoundTrip seed
			// 0caaaecb3a90b648).
			if math.IsInf(float64(float32(f)), 0) {
				return e, refuse("%s is out of the range of float32 (±3.4e38)", e.valueText)
			}
			bits = uint64(math.Float32bits(float32(f)))
		} else {
			bits = math.Float64bits(f)
		}
	default:
		bits, err = d.integer(n, e.valueText)
		if err != nil {
			return e, err
		}
	}
	if d.field {
		return d.encodeField(e, bits, mask)
	}
	e.data = d.words(bits)
	return e, nil
}

// encodeField makes the FC22 masks that write raw into the point's bit
// field and leave the register's other bits alone.
func (d *decoder) encodeField(e encoded, raw uint64, mask bool) (encoded, error) {
	b := d.bits
	if !mask {
		return e, refuse("bits %s of a register can only be written with FC22 (mask write), and the device does not declare modbus.mask_write: true; ferry never read-modify-writes a register", b)
	}
	if raw > uint64(b.max()) {
		return e, refuse("%s does not fit bits %s (0..%d)", e.valueText, b, b.max())
	}
	and, or := ^b.mask(), uint16(raw)<<b.lo
	if d.order&swapBytes != 0 {
		and, or = swap16(and), swap16(or)
	}
	e.mask, e.and, e.or = true, and, or
	return e, nil
}

// words lays out the low d.regs×16 bits of raw in registers, as the
// point's byte and word order put them on the wire: the reverse of
// decoder.raw.
func (d *decoder) words(raw uint64) []byte {
	n := d.regs
	b := make([]byte, 2*n)
	for i := 0; i < n; i++ {
		w := uint16(raw >> (16 * uint(n-1-i)))
		j := i
		if d.order&swapWords != 0 {
			j = n - 1 - i
		}
		if d.order&swapBytes != 0 {
			w = w<<8 | w>>8
		}
		binary.BigEndian.PutUint16(b[2*j:], w)
	}
	return b
}

// number is a value to encode as a number: an exact integer (isInt; neg
// tells whether it is in i or u), or a float.
type number struct {
	isInt bool
	neg   bool
	i     int64
	u     uint64
	f     float64
}

func (n number) float() float64 {
	switch {
	case !n.isInt:
		return n.f
	case n.neg:
		return float64(n.i)
	}
	return float64(n.u)
}

// numberOf reads v as a number: an int, uint or float, or text that
// parses as one (the CLI passes text).
func numberOf(v ferry.Value) (number, error) {
	switch v.Kind() {
	case ferry.KindInt:
		i := v.Int64()
		if i < 0 {
			return number{isInt: true, neg: true, i: i}, nil
		}
		return number{isInt: true, u: uint64(i)}, nil
	case ferry.KindUint:
		return number{isInt: true, u: v.Uint64()}, nil
	case ferry.KindFloat:
		f := v.Float64()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return number{}, refuse("%v is not a finite number", f)
		}
		return number{f: f}, nil
	case ferry.KindString:
		s := strings.TrimSpace(v.Str())
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return number{isInt: true, u: u}, nil
		}
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return number{isInt: true, neg: i < 0, i: i}, nil
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return number{}, refuse("%q is not a number", v.Str())
		}
		return number{f: f}, nil
	case ferry.KindNone:
		return number{}, refuse("no value given")
	}
	return number{}, refuse("%s is not a number", v.Kind())
}

// boolOf reads v as a bool: true/false, or 0/1 as a number or as text.
func boolOf(v ferry.Value) (bool, error) {
	switch v.Kind() {
	case ferry.KindBool:
		return v.Bool(), nil
	case ferry.KindString:
		switch strings.ToLower(strings.TrimSpace(v.Str())) {
		case "true", "1":
			return true, nil
		case "false", "0":
			return false, nil
		}
		return false, refuse("%q is not a bool (true, false, 1 or 0)", v.Str())
	case ferry.KindInt, ferry.KindUint, ferry.KindFloat:
		f, _ := v.Number()
		switch f {
		case 0:
			return false, nil
		case 1:
			return true, nil
		}
		return false, refuse("%s is not a bool (true, false, 1 or 0)", v)
	}
	return false, refuse("no value given")
}

// unscaleFloat reverses scale and offset for a float point.
func (d *decoder) unscaleFloat(n number) (float64, error) {
	f := n.float()
	if d.scaled {
		f = (f - d.offset) / d.scale
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, refuse("%v does not make a finite raw value with scale %v and offset %v", n.float(), d.scale, d.offset)
	}
	return f, nil
}

// integer returns the raw bits of an integer point's value, refusing what
// does not fit losslessly (see the rules above encode).
func (d *decoder) integer(n number, text string) (uint64, error) {
	lo, hi, name := intRange(d.kind)
	if d.scaled {
		raw := (n.float() - d.offset) / d.scale
		if math.IsNaN(raw) || math.IsInf(raw, 0) || math.Abs(raw) >= maxScaledCount {
			return 0, refuse("%s is %v counts with scale %v and offset %v: beyond what a scaled value can write exactly", text, raw, d.scale, d.offset)
		}
		r := math.Round(raw)
		if math.Abs(raw-r) > countTolerance+1e-15*(math.Abs(raw)+math.Abs(d.offset/d.scale)) {
			return 0, refuse("%s is %v counts with scale %v and offset %v: not a whole count, and ferry does not round a write", text, raw, d.scale, d.offset)
		}
		if r == 0 {
			r = 0 // no -0
		}
		n = number{f: r}
	}
	if !n.isInt {
		if n.f != math.Trunc(n.f) {
			return 0, refuse("%s has a fraction: the point is %s", text, name)
		}
		// Every integral float64 in (-2^63, 2^64) converts exactly.
		switch {
		case n.f < 0 && n.f >= -(1<<63):
			n = number{isInt: true, neg: true, i: int64(n.f)}
		case n.f >= 0 && n.f < 1<<64:
			n = number{isInt: true, u: uint64(n.f)}
		default:
			return 0, refuse("%s is out of the range of %s (%d..%d)", text, name, lo, hi)
		}
	}
	if n.neg {
		if n.i < lo {
			return 0, refuse("%s is out of the range of %s (%d..%d)", text, name, lo, hi)
		}
		return uint64(n.i) & d.mask(), nil
	}
	if n.u > hi {
		return 0, refuse("%s is out of the range of %s (%d..%d)", text, name, lo, hi)
	}
	return n.u, nil
}

// mask is the bits of the point's registers.
func (d *decoder) mask() uint64 {
	if d.regs >= 4 {
		return math.MaxUint64
	}
	return 1<<(16*uint(d.regs)) - 1
}

// intRange is the range of an integer kind.
func intRange(k valueKind) (lo int64, hi uint64, name string) {
	switch k {
	case kindInt16:
		return math.MinInt16, math.MaxInt16, "int16"
	case kindUint16:
		return 0, math.MaxUint16, "uint16"
	case kindInt32:
		return math.MinInt32, math.MaxInt32, "int32"
	case kindUint32:
		return 0, math.MaxUint32, "uint32"
	case kindInt64:
		return math.MinInt64, math.MaxInt64, "int64"
	}
	return 0, math.MaxUint64, "uint64"
}
