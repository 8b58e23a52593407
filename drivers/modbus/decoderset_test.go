package modbus

import (
	"testing"

	"github.com/ferry-edge/ferry"
)

// TestDecoderSetShares: points with the same numeric layout share one
// decoder (it holds no state); a different type, order, bit, field or
// scale gets its own; a string point always has its own (it keeps its
// scratch and last text); a shared decoder decodes each point's bytes.
func TestDecoderSetShares(t *testing.T) {
	bit := func(b uint8) *uint8 { return &b }
	set := decoderSet{}
	get := func(p Point) *decoder {
		t.Helper()
		tb, _, msg := p.location()
		if msg != "" {
			t.Fatal(msg)
		}
		return set.get(&p, tb)
	}
	base := get(Point{Name: "a", Table: "holding", Address: 0, Type: "int16"})
	tests := []struct {
		name  string
		p     Point
		share bool
	}{
		{"same layout, other address", Point{Name: "b", Table: "holding", Address: 7, Type: "int16"}, true},
		{"same layout, input table", Point{Name: "c", Table: "input", Address: 3, Type: "int16"}, true},
		{"other type", Point{Name: "d", Table: "holding", Type: "uint16"}, false},
		{"scaled", Point{Name: "e", Table: "holding", Type: "int16", Scale: 0.1}, false},
		{"offset", Point{Name: "f", Table: "holding", Type: "int16", Offset: 5}, false},
		{"byte order", Point{Name: "g", Table: "holding", Type: "int16", Order: "BADC"}, false},
		{"a bit", Point{Name: "h", Table: "holding", Type: "bool", Bit: bit(3)}, false},
		{"a bit field", Point{Name: "i", Table: "holding", Type: "uint16", Bits: "4-7"}, false},
		{"string", Point{Name: "j", Table: "holding", Type: "string", Length: 2}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := get(tt.p); (d == base) != tt.share {
				t.Errorf("shares the int16 decoder: %v, want %v", d == base, tt.share)
			}
		})
	}
	if get(Point{Name: "e2", Table: "holding", Type: "int16", Scale: 0.1}) != get(Point{Name: "e3", Table: "holding", Type: "int16", Scale: 0.1}) {
		t.Error("two points scaled by 0.1 do not share a decoder")
	}
	if get(Point{Name: "bit3", Table: "holding", Type: "bool", Bit: bit(3)}) == get(Point{Name: "bit4", Table: "holding", Type: "bool", Bit: bit(4)}) {
		t.Error("bits 3 and 4 share a decoder")
	}
	s1 := get(Point{Name: "s1", Table: "holding", Type: "string", Length: 2})
	s2 := get(Point{Name: "s2", Table: "holding", Type: "string", Length: 2})
	if s1 == s2 {
		t.Fatal("two string points share a decoder")
	}
	if v, _ := s1.decode([]byte("AB\x00\x00")); v != ferry.StringValue("AB") {
		t.Errorf("s1 = %v", v)
	}
	if v, _ := s2.decode([]byte("CD\x00\x00")); v != ferry.StringValue("CD") {
		t.Errorf("s2 = %v", v)
	}
	if v, _ := s1.decode([]byte("AB\x00\x00")); v != ferry.StringValue("AB") {
		t.Errorf("s1 after s2 = %v", v)
	}
	b := get(Point{Name: "b", Table: "holding", Address: 7, Type: "int16"})
	for _, raw := range [][]byte{{0xff, 0xfe}, {0x00, 0x2a}} {
		va, _ := base.decode(raw)
		vb, _ := b.decode(raw)
		if va != vb || va.Kind() != ferry.KindInt {
			t.Errorf("% x: %v and %v", raw, va, vb)
		}
	}
}
