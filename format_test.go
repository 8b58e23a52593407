package ferry

import (
	"math"
	"testing"
)

func TestFormatPoint(t *testing.T) {
	f32 := func(x float32) Value { return FloatValue(float64(x)) }
	a, b := 0.1, 0.2 // variables: constant arithmetic would be exact
	tests := []struct {
		name string
		v    Value
		info PointInfo
		want string
	}{
		{"float32 shortest", f32(59.95636), PointInfo{Type: "float32"}, "59.95636"},
		{"float32 small", f32(0.1), PointInfo{Type: "float32"}, "0.1"},
		{"float32 large", f32(3.4e38), PointInfo{Type: "float32"}, "3.4e+38"},
		{"float64 full", FloatValue(59.95635986328125), PointInfo{Type: "float64"}, "59.95635986328125"},
		{"untyped float", FloatValue(a + b), PointInfo{}, "0.30000000000000004"},
		{"scaled int16 0.1", FloatValue(1597 * b / 2), PointInfo{Type: "int16", Scale: 0.1}, "159.7"},
		{"scaled whole", FloatValue(1600 * b / 2), PointInfo{Type: "uint16", Scale: 0.1}, "160"},
		{"scale 0.01 offset", FloatValue(1234*0.01 - 40), PointInfo{Type: "int16", Scale: 0.01, Offset: -40}, "-27.66"},
		{"scale 0.25", FloatValue(3 * 0.25), PointInfo{Type: "uint16", Scale: 0.25}, "0.75"},
		{"scale 2 integer", FloatValue(42), PointInfo{Type: "uint16", Scale: 2}, "42"},
		{"negative zero", FloatValue(-0.0001), PointInfo{Type: "int16", Scale: 0.1}, "0"},
		{"scale without exact decimals", FloatValue(1.0 / 3), PointInfo{Type: "int16", Scale: 1.0 / 3}, "0.3333333333333333"},
		{"int", IntValue(-5), PointInfo{Type: "int16"}, "-5"},
		{"bool", BoolValue(true), PointInfo{Type: "bool"}, "true"},
		{"string", StringValue("RECIPE_A"), PointInfo{Type: "string"}, "RECIPE_A"},
		{"NaN", FloatValue(math.NaN()), PointInfo{Type: "float32"}, "NaN"},
		{"mqtt float", FloatValue(21.5), PointInfo{Type: "float"}, "21.5"},
		{"mqtt float full", FloatValue(a + b), PointInfo{Type: "float"}, "0.30000000000000004"},
	}
	for _, tt := range tests {
		if got := FormatPoint(tt.v, tt.info); got != tt.want {
			t.Errorf("%s: FormatPoint(%v, %+v) = %q, want %q", tt.name, tt.v, tt.info, got, tt.want)
		}
	}
}

func TestRoundScaled(t *testing.T) {
	tenth, hundredth, third := 0.1, 0.01, 1.0/3 // variables: constant arithmetic would be exact
	for _, tt := range []struct {
		raw, scale, offset, want float64
	}{
		{1597, tenth, 0, 159.7},
		{1600, tenth, 0, 160},
		{1234, hundredth, -40, -27.66},
		{-3, 0.25, 0, -0.75},
		{7, third, 0, 7 * third}, // no exact decimals: as computed
		{1 << 60, tenth, 0, float64(1<<60) * tenth},
	} {
		got := RoundScaled(tt.raw*tt.scale+tt.offset, tt.scale, tt.offset)
		if got != tt.want {
			t.Errorf("RoundScaled(%v×%v+%v) = %v, want %v", tt.raw, tt.scale, tt.offset, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { RoundScaled(159.70000000000002, 0.1, 0) }); n != 0 {
		t.Errorf("RoundScaled allocates %v times", n)
	}
}

func TestWiden32(t *testing.T) {
	for _, f := range []float32{0.1, 59.95636, -273.15, 3.4e38, 1e-38, 16777217} {
		w := Widen32(f)
		if float32(w) != f {
			t.Errorf("Widen32(%v) = %v does not convert back", f, w)
		}
		if got, want := FloatValue(w).String(), FormatPoint(FloatValue(float64(f)), PointInfo{Type: "float32"}); got != want {
			t.Errorf("Widen32(%v) prints %s, want %s", f, got, want)
		}
	}
}
