package modbus

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/setting"
)

func TestValidate(t *testing.T) {
	u8 := func(v uint8) *uint8 { return &v }
	base := func(mod func(*Device)) Device {
		d := dev("d", "tcp://10.0.0.21", 1, time.Second, hr("a", 100, "float32"))
		if mod != nil {
			mod(&d)
		}
		return d
	}
	point := func(p Point) func(*Device) { return func(d *Device) { d.Points = []Point{p} } }
	tests := []struct {
		name string
		dev  Device
		want string // "path: message" substring; "" = valid
	}{
		{"valid", base(nil), ""},
		{"rtu", base(func(d *Device) {
			d.Config.URL = "rtu:///dev/ttyUSB0"
			d.Config.Serial = &Serial{Baud: 19200, DataBits: 8, Parity: "even", StopBits: 1}
		}), ""},
		{"rtu over tcp", base(func(d *Device) { d.Config.URL = "rtuovertcp://gw:4001" }), ""},
		{"unit 255 on tcp", base(func(d *Device) { d.Config.Unit = 255 }), ""},
		{"unit 0 on tcp", base(func(d *Device) { d.Config.Unit = 0 }), ""},
		{"every type", base(func(d *Device) {
			d.Points = nil
			for i, ty := range typeNames {
				p := hr("p"+itoa(i), uint16(10*i), ty)
				if ty == "string" {
					p.Length = 4
				}
				d.Points = append(d.Points, p)
			}
		}), ""},
		{"ref", base(point(Point{Name: "a", Ref: "40001"})), ""},
		{"six digit ref", base(point(Point{Name: "a", Ref: "465536", Type: "uint16"})), ""},
		{"bit", base(point(Point{Name: "a", Table: "input", Address: 3, Type: "bool", Bit: u8(15)})), ""},
		{"word order form", base(point(Point{Name: "a", Table: "holding", Type: "float32", WordOrder: "low_first", ByteOrder: "little"})), ""},

		{"no url", base(func(d *Device) { d.Config.URL = "" }), "modbus.url: is required"},
		{"bad scheme", base(func(d *Device) { d.Config.URL = "udp://h:502" }), `modbus.url: "udp://h:502": scheme "udp" is not one of tcp, rtu, rtuovertcp`},
		{"no scheme", base(func(d *Device) { d.Config.URL = "10.0.0.1:502" }), "modbus.url:"},
		{"rtu two slashes", base(func(d *Device) { d.Config.URL = "rtu://dev/ttyUSB0" }), "three slashes"},
		{"rtuovertcp needs port", base(func(d *Device) { d.Config.URL = "rtuovertcp://gw" }), "needs a port"},
		{"bad port", base(func(d *Device) { d.Config.URL = "tcp://h:70000" }), "port 70000 is out of range"},
		{"query", base(func(d *Device) { d.Config.URL = "tcp://h:502?baud=9600" }), "query"},
		{"unit 248", base(func(d *Device) { d.Config.Unit = 248 }), "modbus.unit: 248 is out of range"},
		{"unit 0 serial", base(func(d *Device) { d.Config.URL = "rtu:///dev/ttyS0"; d.Config.Unit = 0 }), "modbus.unit: 0 is out of range 1..247 (0 is the broadcast address"},
		{"interval", base(func(d *Device) { d.Config.Interval = 0 }), "modbus.interval: must be positive"},
		{"timeout", base(func(d *Device) { d.Config.Timeout = -time.Second }), "modbus.timeout: must be positive"},
		{"max_registers", base(func(d *Device) { d.Config.MaxRegisters = 126 }), "modbus.max_registers: 126 is out of range 1..125"},
		{"max_bits", base(func(d *Device) { d.Config.MaxBits = 0 }), "modbus.max_bits: 0 is out of range 1..2000"},
		{"max_gap", base(func(d *Device) { d.Config.MaxGap = 200 }), "modbus.max_gap: 200 is out of range 0..125"},
		{"request_delay", base(func(d *Device) { d.Config.RequestDelay = -1 }), "modbus.request_delay: must not be negative"},
		{"reprobe", base(func(d *Device) { d.Config.Reprobe = -1 }), "modbus.reprobe: must not be negative"},
		{"serial on tcp", base(func(d *Device) { d.Config.Serial = &Serial{Baud: 9600, DataBits: 8, Parity: "none", StopBits: 1} }), "modbus.serial: is only for rtu:// links"},
		{"baud", base(func(d *Device) {
			d.Config.URL = "rtu:///dev/ttyS0"
			d.Config.Serial = &Serial{Baud: 9601, DataBits: 8, Parity: "none", StopBits: 1}
		}), "modbus.serial.baud: 9601 is not a standard baud rate"},
		{"parity", base(func(d *Device) {
			d.Config.URL = "rtu:///dev/ttyS0"
			d.Config.Serial = &Serial{Baud: 9600, DataBits: 8, Parity: "N", StopBits: 1}
		}), `modbus.serial.parity: "N" is not one of none, even, odd`},
		{"stop bits", base(func(d *Device) {
			d.Config.URL = "rtu:///dev/ttyS0"
			d.Config.Serial = &Serial{Baud: 9600, DataBits: 8, Parity: "none", StopBits: 3}
		}), "modbus.serial.stop_bits: 3 is not 1 or 2"},
		{"no points", base(func(d *Device) { d.Points = nil }), "points: a Modbus device needs at least one point"},
		{"no table", base(point(Point{Name: "a", Address: 1})), "points[0].table: is required"},
		{"bad table", base(point(Point{Name: "a", Table: "holdings"})), `points[0].table: "holdings" is not one of coil, discrete, holding, input`},
		{"bad type", base(point(Point{Name: "a", Table: "holding", Type: "flaot32"})), `points[0].type: "flaot32" is not one of bool, int16`},
		{"float on coil", base(point(Point{Name: "a", Table: "coil", Type: "float32"})), "points[0].type: coil is a bit table: its points are bool, not float32"},
		{"address overflow", base(point(Point{Name: "a", Table: "holding", Address: 65535, Type: "uint32"})), "points[0].address: 65535 + 2 registers exceeds 65535"},
		{"string overflow", base(point(Point{Name: "a", Table: "holding", Address: 65530, Type: "string", Length: 10})), "points[0].address: 65530 + 10 registers exceeds 65535"},
		{"string no length", base(point(Point{Name: "a", Table: "holding", Type: "string"})), "points[0].length: is required for a string"},
		{"string too long", base(point(Point{Name: "a", Table: "holding", Type: "string", Length: 126})), "points[0].length: 126 registers do not fit one request (max 125)"},
		{"length on int", base(point(Point{Name: "a", Table: "holding", Type: "int16", Length: 2})), "points[0].length: is only for string points"},
		{"bit too big", base(point(Point{Name: "a", Table: "holding", Type: "bool", Bit: u8(16)})), "points[0].bit: 16 is out of range 0..15"},
		{"bit on int", base(point(Point{Name: "a", Table: "holding", Type: "uint16", Bit: u8(1)})), "points[0].bit: is only for bool points (this one is uint16)"},
		{"bit on coil", base(point(Point{Name: "a", Table: "coil", Bit: u8(1)})), "points[0].bit: is for bool points of holding or input registers"},
		{"bad order", base(point(Point{Name: "a", Table: "holding", Type: "float32", Order: "ABDC"})), `points[0].order: "ABDC" is not one of ABCD, CDAB, BADC, DCBA`},
		{"both orders", base(point(Point{Name: "a", Table: "holding", Type: "float32", Order: "CDAB", WordOrder: "low_first"})), "points[0].order: give either order or byte_order/word_order, not both"},
		{"bad word order", base(point(Point{Name: "a", Table: "holding", Type: "float32", WordOrder: "little"})), `points[0].word_order: "little" is not one of high_first, low_first`},
		{"bad byte order", base(point(Point{Name: "a", Table: "holding", Type: "float32", ByteOrder: "middle"})), `points[0].byte_order: "middle" is not one of big, little`},
		{"order on coil", base(point(Point{Name: "a", Table: "coil", Order: "CDAB"})), "points[0].order: has no meaning for the bits of the coil table"},
		{"scale on bool", base(point(Point{Name: "a", Table: "coil", Scale: 2})), "points[0].scale: scale and offset are only for numbers, not bool"},
		{"ref and table", base(point(Point{Name: "a", Ref: "40001", Table: "holding"})), "points[0].ref: give either ref or table and address, not both"},
		{"ref 40000", base(point(Point{Name: "a", Ref: "40000"})), `points[0].ref: "40000" is not a reference: the number after the table digit counts from 1 (40001 is holding address 0)`},
		{"ref table digit", base(point(Point{Name: "a", Ref: "20001"})), "the first digit names the table"},
		{"ref length", base(point(Point{Name: "a", Ref: "4001"})), "want 5 digits"},
		{"ref letters", base(point(Point{Name: "a", Ref: "4000x"})), "want digits only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.dev.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			var fe *setting.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a setting.FieldError", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestRefResolution(t *testing.T) {
	tests := []struct {
		ref   string
		table table
		addr  uint16
	}{
		{"00001", tableCoil, 0}, {"09999", tableCoil, 9998}, {"10001", tableDiscrete, 0},
		{"30001", tableInput, 0}, {"30101", tableInput, 100}, {"40001", tableHolding, 0},
		{"49999", tableHolding, 9998}, {"400001", tableHolding, 0}, {"465536", tableHolding, 65535},
		{"000010", tableCoil, 9},
	}
	for _, tt := range tests {
		p := Point{Name: "a", Ref: tt.ref}
		tb, a, msg := p.location()
		if msg != "" || tb != tt.table || a != tt.addr {
			t.Errorf("ref %s = %s %d %q, want %s %d", tt.ref, tb, a, msg, tt.table, tt.addr)
		}
	}
}

func TestGroupKey(t *testing.T) {
	tests := []struct{ url, want string }{
		{"tcp://10.0.0.21", "tcp://10.0.0.21:502"},
		{"TCP://PLC.local:502/", "tcp://plc.local:502"},
		{"tcp://[fe80::1]:1502", "tcp://[fe80::1]:1502"},
		{"rtu:///dev/ttyUSB0", "rtu:///dev/ttyUSB0"},
		{"rtu:///dev/../dev/ttyUSB0", "rtu:///dev/ttyUSB0"},
		{"rtuovertcp://gw:4001", "rtuovertcp://gw:4001"},
	}
	for _, tt := range tests {
		d := Device{Config: Config{URL: tt.url}}
		if got := GroupKey(&d); got != tt.want {
			t.Errorf("GroupKey(%s) = %s, want %s", tt.url, got, tt.want)
		}
	}
}

func TestNew(t *testing.T) {
	s1 := &Serial{Baud: 9600, DataBits: 8, Parity: "none", StopBits: 1}
	s2 := &Serial{Baud: 19200, DataBits: 8, Parity: "none", StopBits: 1}
	a := dev("a", "rtu:///dev/ttyS0", 1, time.Second, hr("x", 0, "uint16"))
	a.Config.Serial = s1
	b := dev("b", "rtu:///dev/ttyS0", 2, time.Second, hr("x", 0, "uint16"))
	b.Config.Serial = s2
	c := dev("c", "rtu:///dev/ttyS0", 3, time.Second, hr("x", 0, "uint16")) // default 9600 8N1
	bad := dev("bad", "tcp://h", 1, time.Second, Point{Name: "x"})
	tests := []struct {
		name    string
		devs    []Device
		want    string
		wantErr error
	}{
		{"shared port", []Device{a, c}, "", nil},
		{"serial mismatch", []Device{a, b}, "b.modbus.serial: 19200 8N1 differs from 9600 8N1 of device a on the same port rtu:///dev/ttyS0", ferry.ErrInvalidConfig},
		{"invalid device", []Device{bad}, "bad.points[0].table: is required", ferry.ErrInvalidConfig},
		{"duplicate", []Device{a, a}, "a: duplicate device name", ferry.ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drv, err := New(tt.devs, Options{})
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if len(drv.links) != 1 || len(drv.DeviceStatus()) != len(tt.devs) {
					t.Fatalf("links %d, status %d", len(drv.links), len(drv.DeviceStatus()))
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %v containing %q", err, tt.wantErr, tt.want)
			}
		})
	}
}
