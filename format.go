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
