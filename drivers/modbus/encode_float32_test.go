package modbus

import (
	"bytes"
	"math"
	"strconv"
	"testing"

	"github.com/ferry-edge/ferry"
)

// TestEncodeFloat32Extremes: the largest float32s, as a poll shows them
// (the shortest decimal, "3.4028235e+38", a little beyond MaxFloat32 as
// a float64), write back to their registers; a value that rounds to an
// infinity is refused (found by FuzzEncodeRoundTrip, seed
// 0caaaecb3a90b648).
func TestEncodeFloat32Extremes(t *testing.T) {
	shortest := func(f float32) float64 {
		v, err := strconv.ParseFloat(strconv.FormatFloat(float64(f), 'g', -1, 32), 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	p := Point{Name: "x", Table: "holding", Type: "float32"}
	dec, tb := codecFor(t, p)
	for _, tt := range []struct {
		v    float64
		want []byte
	}{
		{shortest(math.MaxFloat32), []byte{0x7f, 0x7f, 0xff, 0xff}},
		{shortest(-math.MaxFloat32), []byte{0xff, 0x7f, 0xff, 0xff}},
		{math.MaxFloat32, []byte{0x7f, 0x7f, 0xff, 0xff}},
		{shortest(math.SmallestNonzeroFloat32), []byte{0, 0, 0, 1}},
	} {
		e, err := dec.encode(tb, ferry.FloatValue(tt.v), false)
		if err != nil {
			t.Errorf("%v: %v", tt.v, err)
			continue
		}
		if !bytes.Equal(e.data, tt.want) {
			t.Errorf("%v encodes to % X, want % X", tt.v, e.data, tt.want)
		}
	}
	for _, v := range []float64{3.5e38, -3.5e38, 1e39} {
		if _, err := dec.encode(tb, ferry.FloatValue(v), false); err == nil {
			t.Errorf("%v (an infinity as a float32) is not refused", v)
		}
	}
}
