package modbus

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	mbserver "github.com/simonvetter/modbus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// writable returns p declared writable with no limits.
func writable(p Point) Point {
	p.Write = &ferry.WriteSpec{}
	return p
}

// writeRig is a running driver behind a counting proxy in front of the
// in-process simonvetter server.
type writeRig struct {
	bank *bank
	wire *testpeer.ModbusCounter
	drv  *Driver
	col  *collector
}

// startWriteRig serves a bank that accepts writes (holding 0..999 and
// coils 0..99 of unit 1 mapped), counts function codes on the wire, and
// runs a driver on devs (their URL set to the proxy).
func startWriteRig(t *testing.T, h mbserver.RequestHandler, b *bank, devs ...Device) *writeRig {
	t.Helper()
	if b == nil {
		b = newBank()
		b.writable = true
		b.fill(1, 0, 1000, func(int) uint16 { return 0 })
		for a := 0; a < 100; a++ {
			b.setBits(1, true, a, false)
		}
	}
	if h == nil {
		h = b
	}
	srv := testpeer.ModbusServer(t, h)
	wire := testpeer.NewModbusCounter(t, srv.Addr())
	for i := range devs {
		devs[i].Config.URL = wire.URL()
	}
	r := &writeRig{bank: b, wire: wire, drv: newDriver(t, Options{}, devs...), col: newCollector()}
	t.Cleanup(run(t, r.drv, r.col))
	waitRunning(t, r.drv)
	return r
}

// waitRunning waits until every link of drv takes writes.
func waitRunning(t testing.TB, drv *Driver) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, "the driver's links running", func() bool {
		for _, l := range drv.links {
			if l.wq.running() == nil {
				return false
			}
		}
		return true
	})
}

func (r *writeRig) write(device, point string, v ferry.Value) (ferry.WriteResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return r.drv.Write(ctx, ferry.WriteRequest{Device: device, Point: point, Value: v})
}

// TestWriteRoundTrip writes every type in every order, with and without
// scale, to the simonvetter server: each write reads back what was
// written, and the next poll reads the same value. The function codes on
// the wire are FC06 for one register, FC16 for several, FC05 for a coil.
func TestWriteRoundTrip(t *testing.T) {
	type tc struct {
		typ    string
		scale  float64
		offset float64
		length uint16
		in     ferry.Value
		want   ferry.Value // zero: in
	}
	values := []tc{
		{typ: "int16", in: ferry.IntValue(-12345)},
		{typ: "uint16", in: ferry.UintValue(54321)},
		{typ: "int32", in: ferry.IntValue(-123456789)},
		{typ: "uint32", in: ferry.UintValue(3_000_000_001)},
		{typ: "int64", in: ferry.IntValue(-1234567890123456789)},
		{typ: "uint64", in: ferry.UintValue(18_000_000_000_000_000_123)},
		{typ: "float32", in: ferry.FloatValue(-273.15), want: ferry.FloatValue(ferry.Widen32(-273.15))},
		{typ: "float64", in: ferry.FloatValue(1234.5678e10)},
		{typ: "string", length: 5, in: ferry.StringValue("PRESS-42")},
		{typ: "int16", scale: 0.1, in: ferry.FloatValue(23.4)},
		{typ: "uint32", scale: 0.001, offset: -10, in: ferry.FloatValue(4000.125)},
		{typ: "int64", scale: 0.5, in: ferry.FloatValue(-7.5)},
		{typ: "float32", scale: 0.1, offset: 5, in: ferry.FloatValue(12.5)},
		{typ: "float64", scale: 2, offset: -1, in: ferry.FloatValue(-0.25)},
		{typ: "bool", in: ferry.BoolValue(true)},
	}
	var points []Point
	var cases []tc
	addr := uint16(0)
	for _, v := range values {
		for _, order := range orderNames {
			if v.typ == "bool" && order != "ABCD" {
				continue
			}
			p := writable(Point{Name: v.typ + "_" + order + "_" + itoa(len(points)), Table: "holding", Address: addr,
				Type: v.typ, Order: order, Scale: v.scale, Offset: v.offset, Length: v.length})
			points = append(points, p)
			cases = append(cases, v)
			addr += uint16(typeInfo[v.typ].regs) + v.length
		}
	}
	points = append(points, writable(Point{Name: "start", Table: "coil", Address: 7}))
	cases = append(cases, tc{typ: "coil", in: ferry.BoolValue(true)})
	r := startWriteRig(t, nil, nil, dev("press", "", 1, 50*time.Millisecond, points...))

	wantFC := map[byte]int{}
	for i, p := range points {
		c := cases[i]
		want := c.want
		if want.IsNone() {
			want = c.in
		}
		res, err := r.write("press", p.Name, c.in)
		if err != nil {
			t.Errorf("%s ← %v: %v", p.Name, c.in, err)
			continue
		}
		if !same(res.ReadBack, want, c.scale != 0 || c.offset != 0) {
			t.Errorf("%s ← %v: read back %v, want %v", p.Name, c.in, res.ReadBack, want)
		}
		switch {
		case p.Table == "coil":
			wantFC[fcWriteSingleCoil]++
		case typeInfo[c.typ].regs == 1:
			wantFC[fcWriteSingleRegister]++
		default:
			wantFC[fcWriteMultipleRegisters]++
		}
	}
	// A poll that starts after the last write reads every value.
	after := time.Now()
	s := r.col.waitFor(t, "press", "a poll after the writes", func(s ferry.Scan) bool { return s.Time.After(after) })
	for i, p := range points {
		want := cases[i].want
		if want.IsNone() {
			want = cases[i].in
		}
		got := sample(t, s, p.Name)
		if !got.Quality.IsGood() || !same(got.Value, want, cases[i].scale != 0 || cases[i].offset != 0) {
			t.Errorf("poll of %s: %v %v, want %v", p.Name, got.Value, got.Quality, want)
		}
	}
	for _, fc := range []byte{fcWriteSingleCoil, fcWriteMultipleCoils, fcWriteSingleRegister, fcWriteMultipleRegisters, fcMaskWriteRegister} {
		if got := r.wire.Count(fc); got != wantFC[fc] {
			t.Errorf("FC%02d: %d requests on the wire, want %d", fc, got, wantFC[fc])
		}
	}
	t.Logf("%d writes; function codes on the wire: %v", len(points), r.wire.Counts())
}

// same compares a value read with the one expected: exactly, or for a
// scaled value up to float64 noise.
func same(got, want ferry.Value, scaled bool) bool {
	if !scaled {
		return got.Equal(want)
	}
	w, _ := want.Number()
	return got.Kind() == ferry.KindFloat && closeTo(got.Float64(), w)
}

// TestWriteMultipleFunctions: a device declared write_multiple gets FC15
// for a coil and FC16 for a single register.
func TestWriteMultipleFunctions(t *testing.T) {
	d := dev("press", "", 1, time.Hour,
		writable(Point{Name: "start", Table: "coil", Address: 3}),
		writable(hr("speed", 10, "uint16")))
	d.Config.WriteMultiple = true
	r := startWriteRig(t, nil, nil, d)
	if _, err := r.write("press", "start", ferry.BoolValue(true)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.write("press", "speed", ferry.UintValue(1500)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.write("press", "start", ferry.BoolValue(false)); err != nil {
		t.Fatal(err)
	}
	c := r.wire.Counts()
	if c[fcWriteMultipleCoils] != 2 || c[fcWriteMultipleRegisters] != 1 || c[fcWriteSingleCoil] != 0 || c[fcWriteSingleRegister] != 0 {
		t.Errorf("function codes on the wire %v: want FC15 ×2, FC16 ×1", c)
	}
	m := r.bank.unit(1)
	r.bank.mu.Lock()
	defer r.bank.mu.Unlock()
	if m.coils[3] || m.holding[10] != 1500 {
		t.Errorf("server holds coil %v, register %d", m.coils[3], m.holding[10])
	}
}

// TestWriteRefusals: what the driver refuses never reaches the device:
// the wire shows no write request and the server's registers are as
// they were.
func TestWriteRefusals(t *testing.T) {
	r := startWriteRig(t, nil, nil, dev("press", "", 1, 50*time.Millisecond,
		writable(hr("speed", 10, "uint16")),
		writable(Point{Name: "temp", Table: "holding", Address: 11, Type: "int16", Scale: 0.1}),
		writable(Point{Name: "recipe", Table: "holding", Address: 12, Type: "string", Length: 2}),
		Point{Name: "sp", Table: "holding", Address: 14, Type: "float32", Write: &ferry.WriteSpec{Min: ptr(20.0), Max: ptr(80.0)}},
		Point{Name: "mode", Table: "holding", Address: 16, Type: "uint16", Write: &ferry.WriteSpec{Allowed: []string{"1", "2"}}},
		hr("limit", 20, "uint16"),
		Point{Name: "pressure", Table: "input", Address: 0},
	))
	r.bank.setRegs(1, true, 0, 7)
	r.col.next(t, "press")
	for _, c := range []struct {
		point string
		in    ferry.Value
		want  error
		why   string
	}{
		{"speed", ferry.IntValue(70000), ferry.ErrWriteRefused, "out of the range of uint16"},
		{"speed", ferry.IntValue(-1), ferry.ErrWriteRefused, "out of the range of uint16"},
		{"speed", ferry.StringValue("fast"), ferry.ErrWriteRefused, "is not a number"},
		{"speed", ferry.FloatValue(1.5), ferry.ErrWriteRefused, "has a fraction"},
		{"temp", ferry.FloatValue(23.45), ferry.ErrWriteRefused, "not a whole count"},
		{"recipe", ferry.IntValue(3), ferry.ErrWriteRefused, "is not text"},
		{"recipe", ferry.StringValue("RECIPE"), ferry.ErrWriteRefused, "does not fit 2 registers"},
		{"sp", ferry.FloatValue(19.5), ferry.ErrWriteRefused, "below the point's min 20"},
		{"sp", ferry.StringValue("80.01"), ferry.ErrWriteRefused, "above the point's max 80"},
		{"mode", ferry.UintValue(3), ferry.ErrWriteRefused, "not one of the point's allowed values [1 2]"},
		{"limit", ferry.UintValue(1), ferry.ErrWriteRefused, "no write: block"},
		{"pressure", ferry.UintValue(1), ferry.ErrWriteRefused, "no write: block"},
		{"nope", ferry.UintValue(1), ferry.ErrUnknownPoint, `"nope"`},
	} {
		_, err := r.write("press", c.point, c.in)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%s ← %v: %v, want %v with %q", c.point, c.in, err, c.want, c.why)
		}
	}
	if _, err := r.write("lathe", "speed", ferry.UintValue(1)); !errors.Is(err, ferry.ErrUnknownDevice) {
		t.Errorf("unknown device: %v", err)
	}
	// An input register cannot even be declared writable.
	in := dev("meter", "tcp://127.0.0.1:502", 1, time.Second, writable(Point{Name: "p", Table: "input", Address: 0}))
	if _, err := New([]Device{in}, Options{}); err == nil || !strings.Contains(err.Error(), "points[0].write: input registers are read-only") {
		t.Errorf("write: on an input register: %v", err)
	}
	if n := r.wire.Writes(); n != 0 {
		t.Errorf("%d write requests reached the server: %v", n, r.wire.Counts())
	}
	if n := promtest.ToFloat64(r.drv.metrics.writes.WithLabelValues("press", writeRefused)); n != 13 {
		t.Errorf("ferry_modbus_writes_total{result=refused} %v, want 13", n)
	}
	m := r.bank.unit(1)
	r.bank.mu.Lock()
	defer r.bank.mu.Unlock()
	for a := uint16(10); a < 21; a++ {
		if m.holding[a] != 0 {
			t.Errorf("holding %d is %d", a, m.holding[a])
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestWriteWithinLimits: values inside min/max and allowed values (given
// as a number or as text) are written.
func TestWriteWithinLimits(t *testing.T) {
	r := startWriteRig(t, nil, nil, dev("press", "", 1, time.Hour,
		Point{Name: "sp", Table: "holding", Address: 14, Type: "float32", Write: &ferry.WriteSpec{Min: ptr(20.0), Max: ptr(80.0)}},
		Point{Name: "mode", Table: "holding", Address: 16, Type: "uint16", Write: &ferry.WriteSpec{Allowed: []string{"1", "2"}}},
		Point{Name: "recipe", Table: "holding", Address: 20, Type: "string", Length: 4, Write: &ferry.WriteSpec{Allowed: []string{"BREAD", "PIZZA"}}}))
	for _, c := range []struct {
		point string
		in    ferry.Value
	}{
		{"sp", ferry.FloatValue(20)}, {"sp", ferry.IntValue(80)}, {"mode", ferry.UintValue(2)},
		{"mode", ferry.StringValue("1")}, {"mode", ferry.FloatValue(2)}, {"recipe", ferry.StringValue("PIZZA")},
	} {
		if _, err := r.write("press", c.point, c.in); err != nil {
			t.Errorf("%s ← %v: %v", c.point, c.in, err)
		}
	}
	if _, err := r.write("press", "recipe", ferry.StringValue("CAKE")); !errors.Is(err, ferry.ErrWriteRefused) {
		t.Errorf("CAKE: %v", err)
	}
}

// TestWriteNotRunning: a driver that does not run refuses at once.
func TestWriteNotRunning(t *testing.T) {
	drv := newDriver(t, Options{}, dev("press", "tcp://127.0.0.1:502", 1, time.Second, writable(hr("speed", 10, "uint16"))))
	_, err := drv.Write(context.Background(), ferry.WriteRequest{Device: "press", Point: "speed", Value: ferry.UintValue(1)})
	if !errors.Is(err, ferry.ErrWriteRefused) || !strings.Contains(err.Error(), "not running") {
		t.Errorf("%v", err)
	}
}

// writeFault wraps a bank: writes answer the exception in err (nil:
// stored), or are stored with add added (a device that keeps another
// value than it was sent).
type writeFault struct {
	*bank
	mu     sync.Mutex
	err    error
	add    uint16
	writes int
}

func (f *writeFault) set(err error, add uint16) {
	f.mu.Lock()
	f.err, f.add = err, add
	f.mu.Unlock()
}

func (f *writeFault) HandleHoldingRegisters(req *mbserver.HoldingRegistersRequest) ([]uint16, error) {
	if !req.IsWrite {
		return f.bank.HandleHoldingRegisters(req)
	}
	f.mu.Lock()
	err, add := f.err, f.add
	f.writes++
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	args := append([]uint16(nil), req.Args...)
	args[len(args)-1] += add
	return nil, f.bank.write(req.UnitId, false, req.Addr, args, nil)
}

// TestWriteExceptions: a device's exception is a clear reason, not a
// refusal (the request went out) and not unknown (the device answered);
// 0x0B (gateway target failed to respond) is unknown; a device that keeps
// another value is a read back mismatch with the value it reports.
func TestWriteExceptions(t *testing.T) {
	b := newBank()
	b.writable = true
	b.fill(1, 0, 100, func(int) uint16 { return 0 })
	f := &writeFault{bank: b}
	r := startWriteRig(t, f, b, dev("press", "", 1, time.Hour, writable(hr("speed", 10, "uint16"))))
	for _, c := range []struct {
		err    error
		reason string
		code   byte
	}{
		{mbserver.ErrIllegalDataAddress, "illegal data address", 0x02},
		{mbserver.ErrIllegalDataValue, "illegal data value", 0x03},
		{mbserver.ErrServerDeviceFailure, "server device failure", 0x04},
		{mbserver.ErrServerDeviceBusy, "server device busy", 0x06},
		{mbserver.ErrGWPathUnavailable, "gateway path unavailable", 0x0A},
		{mbserver.ErrIllegalFunction, "illegal function", 0x01},
	} {
		f.set(c.err, 0)
		_, err := r.write("press", "speed", ferry.UintValue(5))
		var we *WriteException
		if !errors.As(err, &we) || we.Code != c.code || we.Reason != c.reason || we.Function != fcWriteSingleRegister ||
			errors.Is(err, ferry.ErrWriteRefused) || errors.Is(err, ferry.ErrWriteUnknown) || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("exception %v: %v", c.err, err)
		}
	}
	f.set(mbserver.ErrGWTargetFailedToRespond, 0)
	if _, err := r.write("press", "speed", ferry.UintValue(5)); !errors.Is(err, ferry.ErrWriteUnknown) || !strings.Contains(err.Error(), "0x0B") {
		t.Errorf("exception 0x0B: %v", err)
	}
	f.set(nil, 1)
	res, err := r.write("press", "speed", ferry.UintValue(5))
	if !errors.Is(err, ferry.ErrReadBackMismatch) || !res.ReadBack.Equal(ferry.UintValue(6)) || !strings.Contains(err.Error(), "wrote 5") {
		t.Errorf("mismatch: %v, read back %v", err, res.ReadBack)
	}
	f.set(nil, 0)
	if res, err := r.write("press", "speed", ferry.UintValue(5)); err != nil || !res.ReadBack.Equal(ferry.UintValue(5)) {
		t.Errorf("after the faults: %v, read back %v", err, res.ReadBack)
	}
	for result, want := range map[string]float64{writeFailed: 6, writeUnknown: 1, writeMismatch: 1, writeDone: 1} {
		if n := promtest.ToFloat64(r.drv.metrics.writes.WithLabelValues("press", result)); n != want {
			t.Errorf("ferry_modbus_writes_total{result=%s} %v, want %v", result, n, want)
		}
	}
	// Every write went out once: none was retried.
	if got, want := r.wire.Count(fcWriteSingleRegister), 9; got != want || f.writes != want {
		t.Errorf("%d FC06 requests on the wire, %d at the server, want %d", got, f.writes, want)
	}
}

// TestWriteTimeoutUnknown: a device that takes the write and never
// answers makes the outcome unknown; the write is not retried (the server
// saw it once), and the link reads again once answers come back.
func TestWriteTimeoutUnknown(t *testing.T) {
	d := dev("press", "", 1, 50*time.Millisecond, writable(hr("speed", 10, "uint16")))
	d.Config.Timeout = 200 * time.Millisecond
	r := startWriteRig(t, nil, nil, d)
	r.col.next(t, "press")
	r.wire.Mute.Store(true)
	start := time.Now()
	_, err := r.write("press", "speed", ferry.UintValue(42))
	if !errors.Is(err, ferry.ErrWriteUnknown) || !strings.Contains(err.Error(), "no answer") {
		t.Fatalf("%v", err)
	}
	t.Logf("unknown after %v: %v", time.Since(start).Round(time.Millisecond), err)
	r.wire.Mute.Store(false)
	after := time.Now()
	s := r.col.waitFor(t, "press", "a good poll after the timeout", func(s ferry.Scan) bool { return s.Time.After(after) && allGood(s) })
	if v := sample(t, s, "speed").Value; !v.Equal(ferry.UintValue(42)) {
		t.Errorf("the server holds %v: the write reached it", v)
	}
	if n := r.wire.Count(fcWriteSingleRegister); n != 1 {
		t.Errorf("%d FC06 requests on the wire: a write must never be retried", n)
	}
}

// TestWriteContextEndsBeforeLink: a write whose time runs out while the
// link is busy with a slow request is refused and never sent.
func TestWriteContextEndsBeforeLink(t *testing.T) {
	b := newBank()
	b.writable = true
	b.fill(1, 0, 100, func(int) uint16 { return 0 })
	d := dev("press", "", 1, 20*time.Millisecond, writable(hr("speed", 10, "uint16")))
	d.Config.Timeout = 2 * time.Second
	r := startWriteRig(t, nil, b, d)
	r.col.next(t, "press")
	b.setDelay(500 * time.Millisecond)
	testutil.WaitFor(t, 5*time.Second, "a slow poll request being held", func() bool { return b.slowCount() > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := r.drv.Write(ctx, ferry.WriteRequest{Device: "press", Point: "speed", Value: ferry.UintValue(9)})
	if !errors.Is(err, ferry.ErrWriteRefused) || !strings.Contains(err.Error(), "not free") {
		t.Errorf("%v", err)
	}
	b.setDelay(0)
	r.col.next(t, "press")
	if n := r.wire.Writes(); n != 0 {
		t.Errorf("%d writes on the wire", n)
	}
}

// TestWriteMaskFC22: a bit of a register is written with FC22 on a device
// that declares mask_write (a small fake server: the simonvetter server
// has no FC22), leaving the other bits alone, with and without a byte
// swap; the simonvetter server answers FC22 with illegal function, which
// is the device's reason.
func TestWriteMaskFC22(t *testing.T) {
	srv := testpeer.NewMaskWriteServer(t)
	srv.Set(7, 0x5A5A)
	bit := func(b uint8) *uint8 { return &b }
	d := dev("press", srv.URL(), 1, time.Hour,
		writable(Point{Name: "pump", Table: "holding", Address: 7, Type: "bool", Bit: bit(0)}),
		writable(Point{Name: "valve", Table: "holding", Address: 7, Type: "bool", Bit: bit(2), Order: "BADC"}))
	d.Config.MaskWrite = true
	drv := newDriver(t, Options{}, d)
	t.Cleanup(run(t, drv, newCollector()))
	waitRunning(t, drv)
	write := func(point string, on bool) ferry.WriteResult {
		t.Helper()
		res, err := drv.Write(context.Background(), ferry.WriteRequest{Device: "press", Point: point, Value: ferry.BoolValue(on)})
		if err != nil {
			t.Fatalf("%s ← %v: %v", point, on, err)
		}
		if !res.ReadBack.Equal(ferry.BoolValue(on)) {
			t.Errorf("%s ← %v: read back %v", point, on, res.ReadBack)
		}
		return res
	}
	write("pump", true) // 0x5A5A | bit 0
	if got := srv.Get(7); got != 0x5A5B {
		t.Errorf("register %04X after pump on, want 5A5B", got)
	}
	write("valve", true) // bit 2 of the swapped register: wire bit 10
	if got := srv.Get(7); got != 0x5E5B {
		t.Errorf("register %04X after valve on, want 5E5B", got)
	}
	write("pump", false)
	if got := srv.Get(7); got != 0x5E5A {
		t.Errorf("register %04X after pump off, want 5E5A", got)
	}
	if srv.Count(0x16) != 3 || srv.Count(0x06) != 0 || srv.Count(0x10) != 0 {
		t.Errorf("FC22 %d, FC06 %d, FC16 %d: want 3 mask writes and nothing else", srv.Count(0x16), srv.Count(0x06), srv.Count(0x10))
	}

	// A device that declares mask_write but lacks it: illegal function.
	d2 := dev("lathe", "", 1, time.Hour, writable(Point{Name: "pump", Table: "holding", Address: 7, Type: "bool", Bit: bit(0)}))
	d2.Config.MaskWrite = true
	r := startWriteRig(t, nil, nil, d2)
	_, err := r.write("lathe", "pump", ferry.BoolValue(true))
	var we *WriteException
	if !errors.As(err, &we) || we.Reason != "illegal function" || we.Function != fcMaskWriteRegister {
		t.Errorf("FC22 to simonvetter: %v", err)
	}
	if r.wire.Count(fcMaskWriteRegister) != 1 || r.wire.Writes() != 1 {
		t.Errorf("wire %v: want one FC22 and no other write", r.wire.Counts())
	}
}

// TestWriteAheadOfPoll: with polls an hour apart, a write is served at
// once, not at the next poll; the value written is what the device holds.
func TestWriteAheadOfPoll(t *testing.T) {
	r := startWriteRig(t, nil, nil, dev("press", "", 1, time.Hour, writable(Point{Name: "sp", Table: "holding", Address: 0, Type: "float32", Scale: 0.1})))
	r.col.next(t, "press")
	start := time.Now()
	res, err := r.write("press", "sp", ferry.FloatValue(math.Pi))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("write took %v", d)
	}
	if !closeTo(res.ReadBack.Float64(), ferry.Widen32(float32(math.Pi/0.1))*0.1) {
		t.Errorf("read back %v", res.ReadBack)
	}
}

// TestWriteRTUOverTCP: FC06 and FC05 through a serial gateway speaking
// RTU frames (with CRC) over TCP, read back over the same link; a refused
// write (the responder's bank not writable) is the device's exception.
func TestWriteRTUOverTCP(t *testing.T) {
	b := rtuBank()
	b.writable = true
	r := &rtuResponder{b: b}
	d := dev("meter", startRTUOverTCP(t, r), 7, time.Hour,
		writable(Point{Name: "limit", Table: "holding", Address: 3, Type: "int16", Scale: 0.5}),
		writable(Point{Name: "relay", Table: "coil", Address: 1}))
	drv := newDriver(t, Options{}, d)
	t.Cleanup(run(t, drv, newCollector()))
	waitRunning(t, drv)
	ctx := context.Background()
	res, err := drv.Write(ctx, ferry.WriteRequest{Device: "meter", Point: "limit", Value: ferry.FloatValue(-20.5)})
	if err != nil || !res.ReadBack.Equal(ferry.FloatValue(-20.5)) {
		t.Fatalf("limit: %v, read back %v", err, res.ReadBack)
	}
	res, err = drv.Write(ctx, ferry.WriteRequest{Device: "meter", Point: "relay", Value: ferry.BoolValue(true)})
	if err != nil || !res.ReadBack.Equal(ferry.BoolValue(true)) {
		t.Fatalf("relay: %v, read back %v", err, res.ReadBack)
	}
	m := b.unit(7)
	b.mu.Lock()
	reg, coil := m.holding[3], m.coils[1]
	b.writable = false
	b.mu.Unlock()
	if int16(reg) != -41 || !coil {
		t.Errorf("the responder holds register %d, coil %v", int16(reg), coil)
	}
	_, err = drv.Write(ctx, ferry.WriteRequest{Device: "meter", Point: "limit", Value: ferry.IntValue(1)})
	var we *WriteException
	if !errors.As(err, &we) || we.Reason != "illegal function" {
		t.Errorf("refused by the device: %v", err)
	}
}
