package modbus

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/setting"
)

// Protocol limits of one read request.
const (
	MaxRegistersPerRequest = 125
	MaxBitsPerRequest      = 2000
)

// Config is the `modbus:` block of a device.
type Config struct {
	// URL names the link: tcp://host:502, rtu:///dev/ttyUSB0 or
	// rtuovertcp://host:4001. Devices with the same link share one
	// connection (or serial port) and one scheduler.
	URL string `yaml:"url" doc:"the link: tcp://host[:502], rtu:///dev/ttyUSB0 or rtuovertcp://host:port"`
	// Unit is the unit (slave) id: 1..247; on tcp:// also 0 or 255.
	Unit     uint8         `yaml:"unit" doc:"unit (slave) id: 1..247; tcp:// also accepts 0 and 255"`
	Interval time.Duration `yaml:"interval" doc:"poll period; polls run at a fixed rate, a late poll is counted as an overrun"`
	Timeout  time.Duration `yaml:"timeout" doc:"time to wait for one response (and for a TCP connect)"`
	// MaxGap is the largest run of unused registers bridged to merge two
	// requests into one (bits: 16 × MaxGap).
	MaxGap       uint16        `yaml:"max_gap" doc:"largest gap of unused registers read to merge two requests (bit tables: 16 x max_gap bits)"`
	MaxRegisters uint16        `yaml:"max_registers" doc:"registers per request, 1..125 (for devices that accept fewer)"`
	MaxBits      uint16        `yaml:"max_bits" doc:"coils or discrete inputs per request, 1..2000"`
	RequestDelay time.Duration `yaml:"request_delay" doc:"silence on the link before each request to this device (slow serial devices)"`
	Reprobe      time.Duration `yaml:"reprobe" doc:"how often ranges that answered illegal data address are tried again; 0 never"`
	// Serial configures an rtu:// link. Devices sharing a port must agree.
	Serial *Serial `yaml:"serial" doc:"serial line settings (rtu:// only)"`
	// MaskWrite says the device supports FC22 (mask write register): only
	// then may a bit of a holding register be written (write.go).
	MaskWrite bool `yaml:"mask_write" doc:"the device supports FC22 mask write register: bool points with bit: may then be written"`
	// WriteMultiple makes writes use FC15/FC16 even for one coil or
	// register, for devices that lack FC05/FC06.
	WriteMultiple bool `yaml:"write_multiple" doc:"write one coil or register with FC15/FC16 instead of FC05/FC06 (devices without the single-write functions)"`
}

// SetDefaults sets the defaults applied before decoding.
func (c *Config) SetDefaults() {
	c.Unit = 1
	c.Interval = time.Second
	c.Timeout = time.Second
	c.MaxGap = DefaultMaxGap
	c.MaxRegisters = MaxRegistersPerRequest
	c.MaxBits = MaxBitsPerRequest
	c.Reprobe = DefaultReprobe
}

// Defaults of Config.
const (
	DefaultMaxGap  = 8
	DefaultReprobe = 10 * time.Minute
)

// Serial holds the settings of a serial line.
type Serial struct {
	Baud     int    `yaml:"baud" doc:"baud rate"`
	DataBits int    `yaml:"data_bits" doc:"data bits, 7 or 8"`
	Parity   string `yaml:"parity" enum:"none,even,odd"`
	StopBits int    `yaml:"stop_bits" doc:"stop bits, 1 or 2"`
}

// SetDefaults sets 9600 baud, 8 data bits, no parity, 1 stop bit (8N1),
// the most common setting in the field.
func (s *Serial) SetDefaults() {
	s.Baud = 9600
	s.DataBits = 8
	s.Parity = "none"
	s.StopBits = 1
}

func (s Serial) String() string {
	return fmt.Sprintf("%d %d%c%d", s.Baud, s.DataBits, strings.ToUpper(s.Parity)[0], s.StopBits)
}

// baudRates are the rates a Linux serial port can be set to.
var baudRates = []int{50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400,
	57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000, 2500000,
	3000000, 3500000, 4000000}

// Point is one value read from a device.
type Point struct {
	Name  string `yaml:"name"`
	Table string `yaml:"table" enum:"coil,discrete,holding,input"`
	// Address is the 0-based protocol address (the number on the wire).
	Address uint16 `yaml:"address" doc:"0-based protocol address"`
	// Ref is a Modicon reference that gives table and address at once:
	// 40001 is holding address 0, 30001 input 0, 10001 discrete 0, 00001
	// coil 0 (5 digits up to x9999, or 6 digits up to x65536).
	Ref  string `yaml:"ref" doc:"Modicon reference instead of table+address: 40001 = holding 0, 30001 = input 0, 10001 = discrete 0, 00001 = coil 0"`
	Type string `yaml:"type" enum:"bool,int16,uint16,int32,uint32,int64,uint64,float32,float64,string"`
	// Bit selects one bit (0 = least significant) of a register for a
	// bool point; without it a bool register point is true when non-zero.
	Bit *uint8 `yaml:"bit" doc:"bit 0..15 of the register for a bool point (0 = least significant)"`
	// Length is the number of registers of a string point.
	Length uint16 `yaml:"length" doc:"registers of a string point (2 characters each)"`
	// Order is the byte layout of a value: ABCD (big-endian, the Modbus
	// default), CDAB (word swap), BADC (byte swap) or DCBA. ByteOrder and
	// WordOrder say the same in two words; give one form or the other.
	Order     string  `yaml:"order" enum:"ABCD,CDAB,BADC,DCBA"`
	ByteOrder string  `yaml:"byte_order" enum:"big,little"`
	WordOrder string  `yaml:"word_order" enum:"high_first,low_first"`
	Scale     float64 `yaml:"scale" doc:"value = raw x scale + offset (0 means 1)"`
	Offset    float64 `yaml:"offset"`
	Unit      string  `yaml:"unit" doc:"engineering unit"`

	Description string `yaml:"description"`
	// View marks a point that reads registers another point of the
	// device reads too, on purpose (a status word and its bits).
	View bool `yaml:"view" doc:"this point reads registers another point reads too, on purpose (e.g. a status word and its bits); without it overlapping points are refused"`

	// Write declares the point writable (coils and holding registers
	// only); without it no command may write the point.
	Write *ferry.WriteSpec `yaml:"write" doc:"declares the point writable by commands: limits, allowed values, interlock, rate limit"`
}

// Info describes the point for the catalog and the console.
func (p *Point) Info() ferry.PointInfo {
	t, addr, _ := p.location()
	typ := p.Type
	if typ == "" {
		typ = defaultType(t)
	}
	src := t.String() + " " + strconv.Itoa(int(addr))
	if p.Bit != nil {
		src += "." + strconv.Itoa(int(*p.Bit))
	}
	return ferry.PointInfo{Point: p.Name, Protocol: "modbus", Source: src, Type: typ,
		Unit: p.Unit, Description: p.Description, Scale: p.Scale, Offset: p.Offset, Write: p.Write}
}

// Device is one configured Modbus device: its name, its `modbus:` block
// and its points.
type Device struct {
	Name   string
	Config Config
	Points []Point
}

// Validate checks the device; error paths are relative to the device entry
// ("modbus.url", "points[2].type").
func (d *Device) Validate() error {
	var errs setting.Errors
	c := &d.Config
	lk, err := parseLink(c.URL)
	if err != nil {
		errs.Add("modbus.url", "%v", err)
	}
	switch {
	case err != nil:
	case lk.scheme == schemeTCP:
		if c.Unit > 247 && c.Unit != 255 {
			errs.Add("modbus.unit", "%d is out of range: want 1..247 (0 and 255 are also accepted on tcp://)", c.Unit)
		}
	default:
		if c.Unit == 0 || c.Unit > 247 {
			errs.Add("modbus.unit", "%d is out of range 1..247 (0 is the broadcast address, serial devices do not answer it)", c.Unit)
		}
	}
	if c.Interval <= 0 {
		errs.Add("modbus.interval", "must be positive")
	}
	if c.Timeout <= 0 {
		errs.Add("modbus.timeout", "must be positive")
	}
	if c.MaxRegisters < 1 || c.MaxRegisters > MaxRegistersPerRequest {
		errs.Add("modbus.max_registers", "%d is out of range 1..%d", c.MaxRegisters, MaxRegistersPerRequest)
	}
	if c.MaxBits < 1 || c.MaxBits > MaxBitsPerRequest {
		errs.Add("modbus.max_bits", "%d is out of range 1..%d", c.MaxBits, MaxBitsPerRequest)
	}
	if c.MaxGap > MaxRegistersPerRequest {
		errs.Add("modbus.max_gap", "%d is out of range 0..%d", c.MaxGap, MaxRegistersPerRequest)
	}
	if c.RequestDelay < 0 {
		errs.Add("modbus.request_delay", "must not be negative")
	}
	if c.Reprobe < 0 {
		errs.Add("modbus.reprobe", "must not be negative (0 never re-probes)")
	}
	if s := c.Serial; s != nil {
		if err == nil && lk.scheme != schemeRTU {
			errs.Add("modbus.serial", "is only for rtu:// links (this one is %s://)", lk.scheme)
		}
		if !slices.Contains(baudRates, s.Baud) {
			errs.Add("modbus.serial.baud", "%d is not a standard baud rate (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, …)", s.Baud)
		}
		if s.DataBits < 5 || s.DataBits > 8 {
			errs.Add("modbus.serial.data_bits", "%d is out of range 5..8 (Modbus RTU uses 8)", s.DataBits)
		}
		if err := setting.OneOf(s.Parity, "none", "even", "odd"); err != nil {
			errs.Add("modbus.serial.parity", "%v", err)
		}
		if s.StopBits != 1 && s.StopBits != 2 {
			errs.Add("modbus.serial.stop_bits", "%d is not 1 or 2", s.StopBits)
		}
	}
	if len(d.Points) == 0 {
		errs.Add("points", "a Modbus device needs at least one point")
	}
	maxRegs := int(c.MaxRegisters)
	if maxRegs < 1 || maxRegs > MaxRegistersPerRequest {
		maxRegs = MaxRegistersPerRequest
	}
	for i := range d.Points {
		d.Points[i].validate(&errs, setting.Index("points", i), maxRegs)
		d.Points[i].validateWrite(&errs, setting.Index("points", i), c)
	}
	checkOverlaps(&errs, d.Points)
	return errs.Err()
}

func (p *Point) validate(errs *setting.Errors, at string, maxRegs int) {
	field := func(f string) string { return at + "." + f }
	t, addr, msg := p.location()
	if msg != "" {
		f := "table"
		if p.Ref != "" {
			f = "ref"
		}
		errs.Add(field(f), "%s", msg)
		return
	}
	typ := p.Type
	if typ == "" {
		typ = defaultType(t)
	}
	ti, known := typeInfo[typ]
	if !known {
		errs.Add(field("type"), "%v", setting.OneOf(typ, typeNames...))
		return
	}
	if t.bits() && typ != "bool" {
		errs.Add(field("type"), "%s is a bit table: its points are bool, not %s", t, typ)
		return
	}
	if p.Bit != nil {
		switch {
		case t.bits():
			errs.Add(field("bit"), "is for bool points of holding or input registers, not of the %s table", t)
		case typ != "bool":
			errs.Add(field("bit"), "is only for bool points (this one is %s)", typ)
		case *p.Bit > 15:
			errs.Add(field("bit"), "%d is out of range 0..15", *p.Bit)
		}
	}
	n := ti.regs
	if typ == "string" {
		switch {
		case p.Length == 0:
			errs.Add(field("length"), "is required for a string: the number of registers (2 characters each)")
			return
		case int(p.Length) > maxRegs:
			errs.Add(field("length"), "%d registers do not fit one request (max %d)", p.Length, maxRegs)
			return
		}
		n = int(p.Length)
	} else if p.Length != 0 {
		errs.Add(field("length"), "is only for string points")
	}
	unit := "registers"
	if t.bits() {
		unit = "bits"
	}
	if int(addr)+n-1 > math.MaxUint16 {
		errs.Add(field("address"), "%d + %d %s exceeds 65535", addr, n, unit)
	}
	if _, err := p.order(); err != nil {
		f := "order"
		if p.Order == "" {
			f = "word_order"
			if p.ByteOrder != "" && p.WordOrder == "" {
				f = "byte_order"
			}
		}
		errs.Add(field(f), "%v", err)
	} else if (p.Order != "" || p.ByteOrder != "" || p.WordOrder != "") && t.bits() {
		errs.Add(field("order"), "has no meaning for the bits of the %s table", t)
	}
	if p.Scale != 0 || p.Offset != 0 {
		switch {
		case typ == "bool" || typ == "string":
			errs.Add(field("scale"), "scale and offset are only for numbers, not %s", typ)
		case math.IsNaN(p.Scale) || math.IsInf(p.Scale, 0):
			errs.Add(field("scale"), "must be a finite number")
		case math.IsNaN(p.Offset) || math.IsInf(p.Offset, 0):
			errs.Add(field("offset"), "must be a finite number")
		}
	}
}

// location returns the point's table and 0-based address, from ref or
// from table and address; msg says what is wrong when they are not valid.
func (p *Point) location() (t table, addr uint16, msg string) {
	if p.Ref != "" {
		if p.Table != "" || p.Address != 0 {
			return 0, 0, "give either ref or table and address, not both"
		}
		return parseRef(p.Ref)
	}
	if p.Table == "" {
		return 0, 0, "is required: coil, discrete, holding or input (or give ref: 40001)"
	}
	t, ok := parseTable(p.Table)
	if !ok {
		return 0, 0, setting.OneOf(p.Table, "coil", "discrete", "holding", "input").Error()
	}
	return t, p.Address, ""
}

// parseRef parses a Modicon reference: a leading table digit (0 coil,
// 1 discrete input, 3 input register, 4 holding register) and a 1-based
// number of 4 digits (5 in all) or 5 digits (6 in all).
func parseRef(s string) (table, uint16, string) {
	bad := func(why string) (table, uint16, string) {
		return 0, 0, fmt.Sprintf("%q is not a reference: %s", s, why)
	}
	if len(s) != 5 && len(s) != 6 {
		return bad("want 5 digits (40001..49999) or 6 (400001..465536)")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return bad("want digits only")
		}
	}
	var t table
	switch s[0] {
	case '0':
		t = tableCoil
	case '1':
		t = tableDiscrete
	case '3':
		t = tableInput
	case '4':
		t = tableHolding
	default:
		return bad("the first digit names the table: 0 coil, 1 discrete input, 3 input register, 4 holding register")
	}
	n, _ := strconv.Atoi(s[1:])
	maxN := 9999
	if len(s) == 6 {
		maxN = 65536
	}
	if n < 1 || n > maxN {
		return bad(fmt.Sprintf("the number after the table digit counts from 1 (%c%0*d is %s address 0)", s[0], len(s)-1, 1, t))
	}
	return t, uint16(n - 1), ""
}

// table is one of the four Modbus data tables.
type table uint8

const (
	tableCoil table = iota
	tableDiscrete
	tableHolding
	tableInput
	numTables
)

var tableNames = [numTables]string{"coil", "discrete", "holding", "input"}

func (t table) String() string {
	if t < numTables {
		return tableNames[t]
	}
	return "table(" + strconv.Itoa(int(t)) + ")"
}

// bits reports whether t holds bits (coils, discrete inputs) rather than
// registers.
func (t table) bits() bool { return t == tableCoil || t == tableDiscrete }

// function returns the Modbus function code that reads t.
func (t table) function() byte {
	switch t {
	case tableCoil:
		return 0x01
	case tableDiscrete:
		return 0x02
	case tableHolding:
		return 0x03
	}
	return 0x04
}

func parseTable(s string) (table, bool) {
	for i, n := range tableNames {
		if s == n {
			return table(i), true
		}
	}
	return 0, false
}

func defaultType(t table) string {
	if t.bits() {
		return "bool"
	}
	return "uint16"
}

type typeDesc struct {
	kind valueKind
	regs int // registers (strings: Length)
}

var typeInfo = map[string]typeDesc{
	"bool":    {kindBool, 1},
	"int16":   {kindInt16, 1},
	"uint16":  {kindUint16, 1},
	"int32":   {kindInt32, 2},
	"uint32":  {kindUint32, 2},
	"float32": {kindFloat32, 2},
	"int64":   {kindInt64, 4},
	"uint64":  {kindUint64, 4},
	"float64": {kindFloat64, 4},
	"string":  {kindString, 0},
}

var typeNames = []string{"bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"}

// byteOrder is the layout of a multi-byte value in registers: bit 0 swaps
// the two bytes of each register, bit 1 puts the low word first.
type byteOrder uint8

const (
	swapBytes byteOrder = 1
	swapWords byteOrder = 2
)

var orderNames = [4]string{"ABCD", "BADC", "CDAB", "DCBA"}

func (o byteOrder) String() string { return orderNames[o&3] }

// order returns the point's byte order from `order` or from
// `byte_order`/`word_order`.
func (p *Point) order() (byteOrder, error) {
	if p.Order != "" {
		if p.ByteOrder != "" || p.WordOrder != "" {
			return 0, fmt.Errorf("give either order or byte_order/word_order, not both")
		}
		for i, n := range orderNames {
			if p.Order == n {
				return byteOrder(i), nil
			}
		}
		return 0, setting.OneOf(p.Order, "ABCD", "CDAB", "BADC", "DCBA")
	}
	var o byteOrder
	switch p.ByteOrder {
	case "", "big":
	case "little":
		o |= swapBytes
	default:
		return 0, setting.OneOf(p.ByteOrder, "big", "little")
	}
	switch p.WordOrder {
	case "", "high_first":
	case "low_first":
		o |= swapWords
	default:
		return 0, setting.OneOf(p.WordOrder, "high_first", "low_first")
	}
	return o, nil
}

// Link schemes.
const (
	schemeTCP        = "tcp"
	schemeRTU        = "rtu"
	schemeRTUOverTCP = "rtuovertcp"
)

// linkAddr is a parsed link URL.
type linkAddr struct {
	scheme string
	addr   string // host:port, or the serial device path
}

// String returns the normalized URL: the GroupKey.
func (l linkAddr) String() string {
	if l.scheme == schemeRTU {
		return "rtu://" + l.addr
	}
	return l.scheme + "://" + l.addr
}

// parseLink parses and normalizes a link URL.
func parseLink(raw string) (linkAddr, error) {
	if raw == "" {
		return linkAddr{}, fmt.Errorf("is required (tcp://host:502, rtu:///dev/ttyUSB0 or rtuovertcp://host:4001)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return linkAddr{}, fmt.Errorf("%q is not a URL: %v", raw, unwrapURLError(err))
	}
	scheme := strings.ToLower(u.Scheme)
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return linkAddr{}, fmt.Errorf("%q: user, query and fragment are not used; set serial options in modbus.serial", raw)
	}
	switch scheme {
	case schemeTCP, schemeRTUOverTCP:
		if u.Host == "" || (u.Path != "" && u.Path != "/") {
			return linkAddr{}, fmt.Errorf("%q: want %s://host:port", raw, scheme)
		}
		host, port := u.Hostname(), u.Port()
		if host == "" {
			return linkAddr{}, fmt.Errorf("%q has no host", raw)
		}
		if port == "" {
			if scheme == schemeRTUOverTCP {
				return linkAddr{}, fmt.Errorf("%q needs a port: serial gateways listen on various ports (4001, 502, 8899, …)", raw)
			}
			port = "502"
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return linkAddr{}, fmt.Errorf("%q: port %s is out of range 1..65535", raw, port)
		}
		return linkAddr{scheme: scheme, addr: net.JoinHostPort(strings.ToLower(host), port)}, nil
	case schemeRTU:
		if u.Host != "" || u.Path == "" || u.Path == "/" {
			return linkAddr{}, fmt.Errorf("%q: want rtu:///dev/ttyUSB0 (three slashes, then the device path)", raw)
		}
		return linkAddr{scheme: scheme, addr: path.Clean(u.Path)}, nil
	case "":
		return linkAddr{}, fmt.Errorf("%q has no scheme: want tcp://, rtu:// or rtuovertcp://", raw)
	}
	return linkAddr{}, fmt.Errorf("%q: scheme %q is not one of tcp, rtu, rtuovertcp", raw, u.Scheme)
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
