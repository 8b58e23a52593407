package modbus

import (
	"strings"
	"testing"
)

// TestOverlaps: points of one device that read the same registers are
// refused unless one is a view; bits of one register are not an overlap.
func TestOverlaps(t *testing.T) {
	bit := func(b uint8) *uint8 { return &b }
	tests := []struct {
		name   string
		points []Point
		want   string // "" = valid
	}{
		{"float32 over a uint16", []Point{
			{Name: "a", Table: "holding", Address: 0, Type: "float32"},
			{Name: "b", Table: "holding", Address: 1, Type: "uint16"},
		}, `points[1]: holding 1 overlaps point "a" (holding 0..1); if that is on purpose`},
		{"same coil twice", []Point{
			{Name: "a", Table: "coil", Address: 5},
			{Name: "b", Ref: "00006"},
		}, `points[1]: coil 5 overlaps point "a" (coil 5)`},
		{"a view", []Point{
			{Name: "status", Table: "holding", Address: 10, Type: "uint16"},
			{Name: "running", Table: "holding", Address: 10, Type: "bool", Bit: bit(0), View: true},
		}, ""},
		{"two bits of one register", []Point{
			{Name: "running", Table: "holding", Address: 10, Type: "bool", Bit: bit(0)},
			{Name: "fault", Table: "holding", Address: 10, Type: "bool", Bit: bit(3)},
		}, ""},
		{"the same bit twice", []Point{
			{Name: "running", Table: "holding", Address: 10, Type: "bool", Bit: bit(0)},
			{Name: "on", Table: "holding", Address: 10, Type: "bool", Bit: bit(0)},
		}, `points[1]: holding 10 bit 0 overlaps point "running" (holding 10 bit 0)`},
		{"a string over a number", []Point{
			{Name: "n", Table: "holding", Address: 22, Type: "uint16"},
			{Name: "s", Table: "holding", Address: 20, Type: "string", Length: 4},
		}, `points[1]: holding 20..23 overlaps point "n" (holding 22)`},
		{"adjacent", []Point{
			{Name: "a", Table: "holding", Address: 0, Type: "float32"},
			{Name: "b", Table: "holding", Address: 2, Type: "float32"},
			{Name: "c", Table: "input", Address: 0, Type: "float32"},
		}, ""},
	}
	for _, tt := range tests {
		d := Device{Name: "plc", Points: tt.points}
		d.Config.SetDefaults()
		d.Config.URL = "tcp://127.0.0.1:502"
		err := d.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
	}
}

// TestSharedUnitOnBus: two devices with one unit id on an RS-485 bus are
// refused; on tcp:// they may be one device split in two.
func TestSharedUnitOnBus(t *testing.T) {
	mk := func(name, url string, unit uint8) Device {
		d := Device{Name: name, Points: []Point{{Name: "a", Ref: "40001"}}}
		d.Config.SetDefaults()
		d.Config.URL, d.Config.Unit = url, unit
		return d
	}
	_, err := New([]Device{mk("m1", "rtu:///dev/ttyUSB0", 1), mk("m2", "rtu:///dev/ttyUSB0", 1)}, Options{})
	if err == nil || !strings.Contains(err.Error(), "m2.modbus.unit: unit 1 is also device m1's on the same bus rtu:///dev/ttyUSB0") {
		t.Errorf("rtu: %v", err)
	}
	_, err = New([]Device{mk("m1", "rtuovertcp://10.0.0.5:4001", 7), mk("m2", "rtuovertcp://10.0.0.5:4001", 7)}, Options{})
	if err == nil || !strings.Contains(err.Error(), "unit 7 is also device m1's") {
		t.Errorf("rtuovertcp: %v", err)
	}
	if _, err := New([]Device{mk("m1", "tcp://10.0.0.5:502", 1), mk("m2", "tcp://10.0.0.5:502", 1)}, Options{}); err != nil {
		t.Errorf("tcp: %v", err)
	}
	if _, err := New([]Device{mk("m1", "rtu:///dev/ttyUSB0", 1), mk("m2", "rtu:///dev/ttyUSB0", 2)}, Options{}); err != nil {
		t.Errorf("two units: %v", err)
	}
}
