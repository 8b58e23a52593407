package ferry

import (
	"math"
	"strconv"
	"strings"
)

// FormatPoint formats v as a person should read it, given the point it came
// from: a float32 point with the shortest text that round-trips as a
// float32 ("59.95636", not "59.95635986328125"), a scaled integer point
// rounded to the decimals of its scale and offset ("159.7", not
// "159.70000000000002"), anything else as Value.String does. It is the one
// formatting rule of the console, `ferry read` and alert messages.
func FormatPoint(v Value, info PointInfo) string {
	return string(AppendPoint(nil, v, info))
}

// AppendPoint appends the FormatPoint form of v to b.
func AppendPoint(b []byte, v Value, info PointInfo) []byte {
	if v.Kind() != KindFloat {
		return v.AppendText(b)
	}
	f := v.Float64()
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return v.AppendText(b)
	}
	switch info.Type {
	case "float32":
		if math.Abs(f) <= math.MaxFloat32 {
			return strconv.AppendFloat(b, f, 'g', -1, 32)
		}
	case "float64", "double", "float", "":
	default: // integer registers, scaled
		if d := scaleDecimals(info.Scale, info.Offset); d >= 0 {
			s := strconv.FormatFloat(f, 'f', d, 64)
			if strings.Contains(s, ".") {
				s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
			}
			if s == "-0" {
				s = "0"
			}
			return append(b, s...)
		}
	}
	return v.AppendText(b)
}

// scaleDecimals returns the decimals a value of an integer register shows
// after value = raw × scale + offset: the most of scale's and offset's own
// decimals in their shortest form, or -1 when that is not a small number
// (a scale such as 1/3 has no exact decimals: the value is shown in full).
func scaleDecimals(scale, offset float64) int {
	d := 0
	for _, x := range []float64{scale, offset} {
		if x == 0 {
			continue
		}
		s := strconv.FormatFloat(x, 'f', -1, 64)
		if i := strings.IndexByte(s, '.'); i >= 0 {
			d = max(d, len(s)-i-1)
		}
	}
	if d > 6 {
		return -1
	}
	return d
}

// Widen32 converts a float32 to the float64 with the same shortest decimal
// form, so that 0.1f reads 0.1 and not 0.10000000149011612: the float64
// converts back to the same float32, and every part of ferry that prints
// it (console, logs, alerts, upstream) shows what the device meant. The
// drivers widen every float32 they read. It does not allocate.
func Widen32(f float32) float64 {
	d := float64(f)
	if f == 0 || math.IsNaN(d) || math.IsInf(d, 0) {
		return d
	}
	var buf [32]byte
	b := strconv.AppendFloat(buf[:0], d, 'e', -1, 32) // e.g. "-1.2345e-07"
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	var mant uint64
	digits, exp := 0, 0
	i := 0
	for ; i < len(b) && b[i] != 'e'; i++ {
		if b[i] == '.' {
			continue
		}
		mant = mant*10 + uint64(b[i]-'0')
		digits++
	}
	if i+2 >= len(b) {
		return d
	}
	esign := b[i+1]
	for _, c := range b[i+2:] {
		exp = exp*10 + int(c-'0')
	}
	if esign == '-' {
		exp = -exp
	}
	// value = mant * 10^(exp-(digits-1)); exact when both factors are
	// exactly representable (mantissa < 2^53, |power| <= 22), because one
	// correctly rounded multiply or divide then gives the nearest float64.
	p := exp - (digits - 1)
	var r float64
	switch {
	case p >= 0 && p <= 22:
		r = float64(mant) * pow10[p]
	case p < 0 && p >= -22:
		r = float64(mant) / pow10[-p]
	default:
		// Far from 1 (beyond 1e±22): rare, so parsing may allocate.
		if x, err := strconv.ParseFloat(strconv.FormatFloat(d, 'e', -1, 32), 64); err == nil {
			return x
		}
		return d
	}
	if neg {
		r = -r
	}
	return r
}

var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
	1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// RoundScaled rounds a value computed as raw × scale + offset from an
// integer register to the decimals of scale and offset, so that 1597 ×
// 0.1 is 159.7 and not 159.70000000000002. A scale without exact decimals
// (1/3), or a value too large to round exactly, is returned as it is.
func RoundScaled(f, scale, offset float64) float64 {
	d := scaleDecimals(scale, offset)
	if d < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return f
	}
	p := pow10[d]
	x := f * p
	if math.Abs(x) >= 1<<53 {
		return f
	}
	return math.Round(x) / p
}
