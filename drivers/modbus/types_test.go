package modbus

import (
	"math"
	"testing"
	"time"

	mbclient "github.com/simonvetter/modbus"

	"github.com/ferry-edge/ferry"
)

// TestEveryTypeAndOrder writes each type in each byte/word order with an
// independent encoder (simonvetter's client, into the in-process server)
// and checks that the driver reads back the same value.
func TestEveryTypeAndOrder(t *testing.T) {
	b := newBank()
	b.writable = true
	srv := startServer(t, b)
	c, err := mbclient.NewClient(&mbclient.ClientConfiguration{URL: srv.URL(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetUnitId(1)

	orders := []struct {
		name      string
		end       mbclient.Endianness
		wo        mbclient.WordOrder
		byteOrder string
		wordOrder string
	}{
		{"ABCD", mbclient.BIG_ENDIAN, mbclient.HIGH_WORD_FIRST, "big", "high_first"},
		{"CDAB", mbclient.BIG_ENDIAN, mbclient.LOW_WORD_FIRST, "big", "low_first"},
		{"BADC", mbclient.LITTLE_ENDIAN, mbclient.HIGH_WORD_FIRST, "little", "high_first"},
		{"DCBA", mbclient.LITTLE_ENDIAN, mbclient.LOW_WORD_FIRST, "little", "low_first"},
	}
	f32 := float32(-273.15)
	types := []struct {
		name  string
		typ   string
		regs  int
		write func(a uint16) error
		want  ferry.Value
		mod   func(*Point)
	}{
		{"int16", "int16", 1, func(a uint16) error { return c.WriteRegister(a, uint16(0xCFC7)) }, ferry.IntValue(-12345), nil},
		{"uint16", "uint16", 1, func(a uint16) error { return c.WriteRegister(a, 54321) }, ferry.UintValue(54321), nil},
		{"int32", "int32", 2, func(a uint16) error { v := int32(-123456789); return c.WriteUint32(a, uint32(v)) }, ferry.IntValue(-123456789), nil},
		{"uint32", "uint32", 2, func(a uint16) error { return c.WriteUint32(a, 3_000_000_001) }, ferry.UintValue(3_000_000_001), nil},
		{"int64", "int64", 4, func(a uint16) error { v := int64(-1234567890123456789); return c.WriteUint64(a, uint64(v)) }, ferry.IntValue(-1234567890123456789), nil},
		{"uint64", "uint64", 4, func(a uint16) error { return c.WriteUint64(a, 18_000_000_000_000_000_123) }, ferry.UintValue(18_000_000_000_000_000_123), nil},
		{"float32", "float32", 2, func(a uint16) error { return c.WriteFloat32(a, f32) }, ferry.FloatValue(-273.15), nil}, // widened: the shortest decimal form
		{"float64", "float64", 4, func(a uint16) error { return c.WriteFloat64(a, 1234.5678e10) }, ferry.FloatValue(1234.5678e10), nil},
		{"string", "string", 5, func(a uint16) error { return c.WriteBytes(a, []byte("PRESS-42  ")) }, ferry.StringValue("PRESS-42"), func(p *Point) { p.Length = 5 }},
		{"bit 3", "bool", 1, func(a uint16) error { return c.WriteRegister(a, 0x0008) }, ferry.BoolValue(true), func(p *Point) { b := uint8(3); p.Bit = &b }},
		{"bit 11 clear", "bool", 1, func(a uint16) error { return c.WriteRegister(a, 0xF7FF) }, ferry.BoolValue(false), func(p *Point) { b := uint8(11); p.Bit = &b }},
		{"register non-zero", "bool", 1, func(a uint16) error { return c.WriteRegister(a, 0x0100) }, ferry.BoolValue(true), nil},
		{"scaled int16", "int16", 1, func(a uint16) error { v := int16(-100); return c.WriteRegister(a, uint16(v)) }, ferry.FloatValue(-100*0.1 + 5), func(p *Point) { p.Scale, p.Offset = 0.1, 5 }},
		{"scaled uint32", "uint32", 2, func(a uint16) error { return c.WriteUint32(a, 123456) }, ferry.FloatValue(123456 * 0.001), func(p *Point) { p.Scale = 0.001 }},
		{"offset float32", "float32", 2, func(a uint16) error { return c.WriteFloat32(a, 20) }, ferry.FloatValue(20 - 273.15), func(p *Point) { p.Offset = -273.15 }},
	}

	var points []Point
	want := map[string]ferry.Value{}
	addr := uint16(1000)
	for _, o := range orders {
		if err := c.SetEncoding(o.end, o.wo); err != nil {
			t.Fatal(err)
		}
		for i, tt := range types {
			if err := tt.write(addr); err != nil {
				t.Fatalf("%s %s: write: %v", o.name, tt.name, err)
			}
			// Once as order: XXXX, once as byte_order/word_order.
			for form := 0; form < 2; form++ {
				p := Point{Name: o.name + "_" + itoa(i) + "_" + itoa(form), Table: "holding", Address: addr, Type: tt.typ}
				if form == 0 {
					p.Order = o.name
				} else {
					// The same registers again: a view.
					p.ByteOrder, p.WordOrder, p.View = o.byteOrder, o.wordOrder, true
				}
				if tt.mod != nil {
					tt.mod(&p)
				}
				points = append(points, p)
				want[p.Name] = tt.want
			}
			addr += uint16(tt.regs) + 1 // leave gaps that the plan bridges
		}
	}

	// Bits of the coil and discrete tables, across byte boundaries, and
	// input registers; references in Modicon form.
	bits := []bool{true, false, true, true, false, false, false, true, false, true, true, false, true, false, false, false, false, true, false, true}
	b.setBits(1, true, 3, bits...)
	b.setBits(1, false, 100, bits...)
	for i, v := range bits {
		points = append(points,
			Point{Name: "coil_" + itoa(i), Table: "coil", Address: uint16(3 + i)},
			Point{Name: "di_" + itoa(i), Ref: "1" + pad4(101+i)})
		want["coil_"+itoa(i)] = ferry.BoolValue(v)
		want["di_"+itoa(i)] = ferry.BoolValue(v)
	}
	b.setRegs(1, true, 7, 0x4120, 0x0000, 4242)
	points = append(points,
		Point{Name: "ir_float", Table: "input", Address: 7, Type: "float32"},
		Point{Name: "ir_u16", Ref: "30010"},
		Point{Name: "hr_ref", Ref: "401001", Type: "int16", View: true})
	want["ir_float"] = ferry.FloatValue(10)
	want["ir_u16"] = ferry.UintValue(4242)
	want["hr_ref"] = ferry.IntValue(-12345) // the first int16 written, ABCD

	b.mu.Lock()
	b.writable = false
	b.mu.Unlock()
	col := newCollector()
	drv := newDriver(t, Options{}, dev("plc", srv.URL(), 1, time.Hour, points...))
	run(t, drv, col)
	s := col.next(t, "plc")
	if len(s.Samples) != len(points) {
		t.Fatalf("%d samples, want %d", len(s.Samples), len(points))
	}
	for _, x := range s.Samples {
		w := want[x.Point]
		if !x.Quality.IsGood() {
			t.Errorf("%s: quality %v", x.Point, x.Quality)
			continue
		}
		if w.Kind() == ferry.KindFloat && x.Value.Kind() == ferry.KindFloat {
			if d := math.Abs(x.Value.Float64() - w.Float64()); d > 1e-9*math.Max(1, math.Abs(w.Float64())) {
				t.Errorf("%s = %v, want %v", x.Point, x.Value, w)
			}
			continue
		}
		if !x.Value.Equal(w) {
			t.Errorf("%s = %v (%s), want %v (%s)", x.Point, x.Value, x.Value.Kind(), w, w.Kind())
		}
	}
	if n := b.refusedWrites(); n != 0 {
		t.Errorf("the driver attempted %d writes", n)
	}
}

func pad4(n int) string {
	s := itoa(n)
	for len(s) < 4 {
		s = "0" + s
	}
	return s
}

// TestDecodeWorkedExample pins the README's worked example: 10.0 as
// float32 is 0x41200000, which each order puts in registers differently.
func TestDecodeWorkedExample(t *testing.T) {
	tests := []struct {
		order string
		regs  [2]uint16
	}{
		{"ABCD", [2]uint16{0x4120, 0x0000}},
		{"CDAB", [2]uint16{0x0000, 0x4120}},
		{"BADC", [2]uint16{0x2041, 0x0000}},
		{"DCBA", [2]uint16{0x0000, 0x2041}},
	}
	for _, tt := range tests {
		t.Run(tt.order, func(t *testing.T) {
			p := Point{Name: "x", Table: "holding", Type: "float32", Order: tt.order}
			d := newDecoder(&p, tableHolding)
			b := []byte{byte(tt.regs[0] >> 8), byte(tt.regs[0]), byte(tt.regs[1] >> 8), byte(tt.regs[1])}
			v, ok := d.decode(b)
			if !ok || v.Float64() != 10 {
				t.Fatalf("decode %04x %04x as %s = %v, %v; want 10", tt.regs[0], tt.regs[1], tt.order, v, ok)
			}
		})
	}
}

// TestDecodeErrors: what cannot be a value is refused, never a panic.
func TestDecodeErrors(t *testing.T) {
	nan := math.Float32bits(float32(math.NaN()))
	inf := math.Float64bits(math.Inf(1))
	tests := []struct {
		name string
		p    Point
		b    []byte
	}{
		{"NaN float32", Point{Type: "float32"}, []byte{byte(nan >> 24), byte(nan >> 16), byte(nan >> 8), byte(nan)}},
		{"Inf float64", Point{Type: "float64"}, []byte{byte(inf >> 56), byte(inf >> 48), byte(inf >> 40), byte(inf >> 32), byte(inf >> 24), byte(inf >> 16), byte(inf >> 8), byte(inf)}},
		{"short uint32", Point{Type: "uint32"}, []byte{1, 2, 3}},
		{"short string", Point{Type: "string", Length: 4}, []byte("abc")},
		{"empty", Point{Type: "int16"}, nil},
		{"overflow after scale", Point{Type: "float64", Scale: 1e300}, []byte{0x7f, 0xef, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.p.Table = "holding"
			d := newDecoder(&tt.p, tableHolding)
			if v, ok := d.decode(tt.b); ok {
				t.Fatalf("decoded %v, want a refusal", v)
			}
		})
	}
	if _, ok := decodeBit([]byte{0xff}, 8); ok {
		t.Fatal("bit 8 of one byte decoded")
	}
}
