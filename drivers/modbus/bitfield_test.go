package modbus

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/setting"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// TestBitFieldDecode: `bits: FIRST-LAST` reads those bits of the register
// (after the byte order), shifted down, as an unsigned number; scale and
// offset apply to the field.
func TestBitFieldDecode(t *testing.T) {
	for _, c := range []struct {
		bits  string
		order string
		scale float64
		reg   uint16
		want  ferry.Value
	}{
		{"4-7", "", 0, 0xABCD, ferry.UintValue(0xC)},
		{"0-3", "", 0, 0xABCD, ferry.UintValue(0xD)},
		{"12-15", "", 0, 0xABCD, ferry.UintValue(0xA)},
		{"8-15", "", 0, 0xABCD, ferry.UintValue(0xAB)},
		{"5", "", 0, 0x0020, ferry.UintValue(1)},
		{"0-14", "", 0, 0xFFFF, ferry.UintValue(0x7FFF)},
		{"4-7", "BADC", 0, 0xABCD, ferry.UintValue(0xA)}, // the register is CDAB
		{"4-7", "", 0.5, 0x00F0, ferry.FloatValue(7.5)},
	} {
		dec, _ := codecFor(t, Point{Name: "x", Type: "uint16", Bits: c.bits, Order: c.order, Scale: c.scale})
		got, ok := dec.decode([]byte{byte(c.reg >> 8), byte(c.reg)})
		if !ok || !got.Equal(c.want) {
			t.Errorf("bits %s %s of %04X = %v %v, want %v", c.bits, c.order, c.reg, got, ok, c.want)
		}
	}
}

// TestBitFieldValidate: bits is a range inside 0..15 of a uint16 point of
// a register table.
func TestBitFieldValidate(t *testing.T) {
	bit := uint8(1)
	for _, c := range []struct {
		p    Point
		want string // "" = valid
	}{
		{Point{Name: "x", Table: "holding", Bits: "4-7"}, ""},
		{Point{Name: "x", Table: "input", Type: "uint16", Bits: " 3 "}, ""},
		{Point{Name: "x", Table: "holding", Bits: "7-4"}, `"7-4" runs backwards: write the lower bit first (4-7)`},
		{Point{Name: "x", Table: "holding", Bits: "4-16"}, `"4-16" is not a bit range`},
		{Point{Name: "x", Table: "holding", Bits: "a-b"}, `is not a bit range`},
		{Point{Name: "x", Table: "holding", Bits: "-3"}, `is not a bit range`},
		{Point{Name: "x", Table: "holding", Bits: "0-15"}, "0-15 is the whole register"},
		{Point{Name: "x", Table: "holding", Type: "int16", Bits: "0-3"}, "bits: is only for uint16 points (this one is int16"},
		{Point{Name: "x", Table: "holding", Type: "uint32", Bits: "0-3"}, "bits: is only for uint16 points"},
		{Point{Name: "x", Table: "holding", Type: "bool", Bit: &bit, Bits: "0-3"}, "bits: is only for uint16 points"},
		{Point{Name: "x", Table: "coil", Bits: "0-3"}, "bits: is for uint16 points of holding or input registers, not of the coil table"},
	} {
		var errs setting.Errors
		c.p.validate(&errs, "p", MaxRegistersPerRequest)
		err := errs.Err()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("bits %q: %v", c.p.Bits, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("bits %q: got %v, want %q", c.p.Bits, err, c.want)
		}
	}
}

// TestBitFieldOverlaps: bit fields of one register overlap only when they
// share a bit (with each other, or with a bool's bit); a field and the
// whole register overlap unless one is a view.
func TestBitFieldOverlaps(t *testing.T) {
	bit := func(b uint8) *uint8 { return &b }
	for _, c := range []struct {
		name   string
		points []Point
		want   string
	}{
		{"two nibbles", []Point{
			{Name: "mode", Table: "holding", Address: 10, Bits: "0-3"},
			{Name: "step", Table: "holding", Address: 10, Bits: "4-7"},
			{Name: "run", Table: "holding", Address: 10, Type: "bool", Bit: bit(8)},
		}, ""},
		{"fields sharing bit 3", []Point{
			{Name: "mode", Table: "holding", Address: 10, Bits: "0-3"},
			{Name: "step", Table: "holding", Address: 10, Bits: "3-5"},
		}, `points[1]: holding 10 bits 3-5 overlaps point "mode" (holding 10 bits 0-3)`},
		{"a bit inside a field", []Point{
			{Name: "step", Table: "holding", Address: 10, Bits: "4-7"},
			{Name: "run", Table: "holding", Address: 10, Type: "bool", Bit: bit(5)},
		}, `points[1]: holding 10 bit 5 overlaps point "step" (holding 10 bits 4-7)`},
		{"a field of a whole register", []Point{
			{Name: "word", Table: "holding", Address: 10},
			{Name: "step", Table: "holding", Address: 10, Bits: "4-7"},
		}, `points[1]: holding 10 bits 4-7 overlaps point "word" (holding 10)`},
		{"a field of a whole register, as a view", []Point{
			{Name: "word", Table: "holding", Address: 10},
			{Name: "step", Table: "holding", Address: 10, Bits: "4-7", View: true},
		}, ""},
		{"a byte-swapped field on the same wire bits", []Point{
			{Name: "mode", Table: "holding", Address: 10, Bits: "0-3"},
			{Name: "recipe", Table: "holding", Address: 10, Bits: "8-15", Order: "BADC"},
		}, `points[1]: holding 10 bits 8-15 overlaps point "mode" (holding 10 bits 0-3)`},
		{"a byte-swapped field beside another", []Point{
			{Name: "mode", Table: "holding", Address: 10, Bits: "0-3"},
			{Name: "recipe", Table: "holding", Address: 10, Bits: "0-7", Order: "BADC"},
		}, ""},
		{"same bits of two registers", []Point{
			{Name: "a", Table: "holding", Address: 10, Bits: "0-3"},
			{Name: "b", Table: "holding", Address: 11, Bits: "0-3"},
		}, ""},
	} {
		d := Device{Name: "plc", Points: c.points}
		d.Config.SetDefaults()
		d.Config.URL = "tcp://127.0.0.1:502"
		err := d.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
}

// TestBitFieldEncode: a value for a bit field becomes FC22 masks that set
// only the field (moved by the byte swap); a value wider than the field,
// or a device without mask_write, is refused.
func TestBitFieldEncode(t *testing.T) {
	for _, c := range []struct {
		bits, order string
		v           uint64
		and, or     uint16
	}{
		{"4-7", "", 9, 0xFF0F, 0x0090},
		{"0-2", "", 5, 0xFFF8, 0x0005},
		{"12-15", "", 0xF, 0x0FFF, 0xF000},
		{"4-7", "BADC", 9, 0x0FFF, 0x9000},
	} {
		dec, tb := codecFor(t, Point{Name: "x", Bits: c.bits, Order: c.order})
		e, err := dec.encode(tb, ferry.UintValue(c.v), true)
		if err != nil || !e.mask || e.data != nil || e.and != c.and || e.or != c.or {
			t.Errorf("bits %s %s ← %d: %+v %v, want and %04X or %04X", c.bits, c.order, c.v, e, err, c.and, c.or)
			continue
		}
		for _, cur := range []uint16{0x0000, 0xFFFF, 0x5A5A} {
			r := cur&e.and | e.or&^e.and // what the device does with FC22
			got, _ := dec.decode([]byte{byte(r >> 8), byte(r)})
			if !got.Equal(ferry.UintValue(c.v)) || r&e.and != cur&e.and {
				t.Errorf("bits %s %s: register %04X → %04X decodes %v", c.bits, c.order, cur, r, got)
			}
		}
	}
	dec, tb := codecFor(t, Point{Name: "x", Bits: "4-7"})
	for _, c := range []struct {
		v    ferry.Value
		mask bool
		want string
	}{
		{ferry.UintValue(16), true, "16 does not fit bits 4-7 (0..15)"},
		{ferry.IntValue(-1), true, "out of the range of uint16"},
		{ferry.FloatValue(2.5), true, "has a fraction"},
		{ferry.UintValue(3), false, "bits 4-7 of a register can only be written with FC22"},
	} {
		_, err := dec.encode(tb, c.v, c.mask)
		if !errors.Is(err, ferry.ErrWriteRefused) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v (mask %v): %v, want ErrWriteRefused with %q", c.v, c.mask, err, c.want)
		}
	}
}

// TestBitFieldWriteConfig: a writable bit field needs mask_write.
func TestBitFieldWriteConfig(t *testing.T) {
	d := Device{Name: "plc", Points: []Point{{Name: "step", Table: "holding", Address: 10, Bits: "4-7", Write: &ferry.WriteSpec{}}}}
	d.Config.SetDefaults()
	d.Config.URL = "tcp://127.0.0.1:502"
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "points[0].write: bits 4-7 of holding 10 can only be written with FC22") {
		t.Errorf("without mask_write: %v", err)
	}
	d.Config.MaskWrite = true
	if err := d.Validate(); err != nil {
		t.Errorf("with mask_write: %v", err)
	}
}

// TestBitFieldWriteFC22: bit fields of one register are read from a real
// poll and written with FC22 (a small server with FC22: the simonvetter
// server has none), each write leaving the other bits alone and reading
// back the field; a value wider than the field is refused before the wire.
func TestBitFieldWriteFC22(t *testing.T) {
	srv := testpeer.NewMaskWriteServer(t)
	srv.Set(7, 0x5A5A)
	d := dev("press", srv.URL(), 1, 20*time.Millisecond,
		writable(Point{Name: "mode", Table: "holding", Address: 7, Bits: "0-3"}),
		writable(Point{Name: "step", Table: "holding", Address: 7, Bits: "4-7"}),
		writable(Point{Name: "recipe", Table: "holding", Address: 7, Bits: "0-7", Order: "BADC"}))
	d.Config.MaskWrite = true
	drv := newDriver(t, Options{}, d)
	col := newCollector()
	t.Cleanup(run(t, drv, col))
	s := col.waitFor(t, "press", "good", allGood)
	for p, want := range map[string]uint64{"mode": 0xA, "step": 0x5, "recipe": 0x5A} {
		if got := sample(t, s, p).Value; !got.Equal(ferry.UintValue(want)) {
			t.Errorf("poll: %s = %v, want %d", p, got, want)
		}
	}
	write := func(point string, v uint64) {
		t.Helper()
		res, err := drv.Write(context.Background(), ferry.WriteRequest{Device: "press", Point: point, Value: ferry.UintValue(v)})
		if err != nil {
			t.Fatalf("%s ← %d: %v", point, v, err)
		}
		if !res.ReadBack.Equal(ferry.UintValue(v)) {
			t.Errorf("%s ← %d: read back %v", point, v, res.ReadBack)
		}
	}
	write("step", 0xC)
	if got := srv.Get(7); got != 0x5ACA {
		t.Errorf("register %04X after step ← 12, want 5ACA", got)
	}
	write("mode", 0x1)
	if got := srv.Get(7); got != 0x5AC1 {
		t.Errorf("register %04X after mode ← 1, want 5AC1", got)
	}
	// BADC: bits 0-7 of the swapped register are the high byte on the wire.
	write("recipe", 0x33)
	if got := srv.Get(7); got != 0x33C1 {
		t.Errorf("register %04X after recipe ← 0x33, want 33C1", got)
	}
	_, err := drv.Write(context.Background(), ferry.WriteRequest{Device: "press", Point: "step", Value: ferry.UintValue(16)})
	if !errors.Is(err, ferry.ErrWriteRefused) {
		t.Errorf("step ← 16: %v, want ErrWriteRefused", err)
	}
	if srv.Count(0x16) != 3 || srv.Count(0x06) != 0 || srv.Count(0x10) != 0 {
		t.Errorf("FC22 %d, FC06 %d, FC16 %d: want 3 mask writes and nothing else", srv.Count(0x16), srv.Count(0x06), srv.Count(0x10))
	}
}
