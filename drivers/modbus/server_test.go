package modbus

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mbserver "github.com/simonvetter/modbus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/backoff"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// bank is the register map a test server serves: per unit, sparse tables
// (an address not in the map answers "illegal data address"). It counts
// and logs every request.
type bank struct {
	mu      sync.Mutex
	units   map[uint8]*unitMap
	delay   time.Duration // per request
	maxRegs int           // larger register requests: illegal data value
	reqs    []seenReq

	fail error // answer every read with this exception

	quiet  bool // count requests without logging them (benchmarks)
	served int
	slow   int // requests that began with a delay set (and are or were held)

	writable bool // accept writes (test setup through a client)
	writes   int  // writes refused: the driver must never write
}

type unitMap struct {
	holding, input  map[uint16]uint16
	coils, discrete map[uint16]bool
}

type seenReq struct {
	at    time.Time
	unit  uint8
	table string
	addr  uint16
	qty   uint16
	err   error
}

func (r seenReq) String() string {
	return fmt.Sprintf("unit %d %s %d+%d", r.unit, r.table, r.addr, r.qty)
}

func newBank() *bank { return &bank{units: map[uint8]*unitMap{}} }

func (b *bank) unit(u uint8) *unitMap {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.units[u]
	if m == nil {
		m = &unitMap{holding: map[uint16]uint16{}, input: map[uint16]uint16{}, coils: map[uint16]bool{}, discrete: map[uint16]bool{}}
		b.units[u] = m
	}
	return m
}

// setRegs stores regs at addr of the holding (or input) table of unit u.
func (b *bank) setRegs(u uint8, input bool, addr int, regs ...uint16) {
	m := b.unit(u)
	b.mu.Lock()
	defer b.mu.Unlock()
	t := m.holding
	if input {
		t = m.input
	}
	for i, r := range regs {
		t[uint16(addr+i)] = r
	}
}

// fill maps registers [from, to) of the holding table of u with v(addr).
func (b *bank) fill(u uint8, from, to int, v func(a int) uint16) {
	for a := from; a < to; a++ {
		b.setRegs(u, false, a, v(a))
	}
}

// unmap removes holding registers [from, to) of unit u.
func (b *bank) setBits(u uint8, coils bool, addr int, v ...bool) {
	m := b.unit(u)
	b.mu.Lock()
	defer b.mu.Unlock()
	t := m.discrete
	if coils {
		t = m.coils
	}
	for i, x := range v {
		t[uint16(addr+i)] = x
	}
}

func (b *bank) setFail(err error) {
	b.mu.Lock()
	b.fail = err
	b.mu.Unlock()
}

func (b *bank) setDelay(d time.Duration) {
	b.mu.Lock()
	b.delay = d
	b.mu.Unlock()
}

// requests returns the requests seen so far.
func (b *bank) requests() []seenReq {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]seenReq(nil), b.reqs...)
}

func (b *bank) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.reqs)
}

// slowCount returns how many requests began with a delay set; each is
// counted before its delay, so a new count is a request being held now.
func (b *bank) slowCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.slow
}

func (b *bank) countUnit(u uint8) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, r := range b.reqs {
		if r.unit == u {
			n++
		}
	}
	return n
}

// read serves one read request of qty registers (or bits) at addr.
func (b *bank) read(unit uint8, table string, addr, qty uint16) (regs []uint16, bits []bool, err error) {
	b.mu.Lock()
	delay := b.delay
	defer func() {
		b.served++
		if delay > 0 {
			b.slow++
		}
		if !b.quiet {
			b.reqs = append(b.reqs, seenReq{time.Now(), unit, table, addr, qty, err})
		}
		b.mu.Unlock()
		if delay > 0 {
			time.Sleep(delay) // a slow device: the delay is what the test makes
		}
	}()
	if b.fail != nil {
		return nil, nil, b.fail
	}
	m := b.units[unit]
	if m == nil {
		return nil, nil, mbserver.ErrGWTargetFailedToRespond
	}
	if b.maxRegs > 0 && (table == "holding" || table == "input") && int(qty) > b.maxRegs {
		return nil, nil, mbserver.ErrIllegalDataValue
	}
	for i := 0; i < int(qty); i++ {
		a := addr + uint16(i)
		switch table {
		case "holding", "input":
			t := m.holding
			if table == "input" {
				t = m.input
			}
			v, ok := t[a]
			if !ok {
				return nil, nil, mbserver.ErrIllegalDataAddress
			}
			regs = append(regs, v)
		default:
			t := m.coils
			if table == "discrete" {
				t = m.discrete
			}
			v, ok := t[a]
			if !ok {
				return nil, nil, mbserver.ErrIllegalDataAddress
			}
			bits = append(bits, v)
		}
	}
	return regs, bits, nil
}

// write stores a write of the test's setup client, or counts a refused
// write.
func (b *bank) write(unit uint8, coils bool, addr uint16, regs []uint16, bits []bool) error {
	if !b.writableNow() {
		b.mu.Lock()
		b.writes++
		b.mu.Unlock()
		return mbserver.ErrIllegalFunction
	}
	if coils {
		b.setBits(unit, true, int(addr), bits...)
	} else {
		b.setRegs(unit, false, int(addr), regs...)
	}
	return nil
}

func (b *bank) writableNow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.writable
}

func (b *bank) refusedWrites() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.writes
}

func (b *bank) HandleCoils(req *mbserver.CoilsRequest) ([]bool, error) {
	if req.IsWrite {
		return nil, b.write(req.UnitId, true, req.Addr, nil, req.Args)
	}
	_, bits, err := b.read(req.UnitId, "coil", req.Addr, req.Quantity)
	return bits, err
}

func (b *bank) HandleDiscreteInputs(req *mbserver.DiscreteInputsRequest) ([]bool, error) {
	_, bits, err := b.read(req.UnitId, "discrete", req.Addr, req.Quantity)
	return bits, err
}

func (b *bank) HandleHoldingRegisters(req *mbserver.HoldingRegistersRequest) ([]uint16, error) {
	if req.IsWrite {
		return nil, b.write(req.UnitId, false, req.Addr, req.Args, nil)
	}
	regs, _, err := b.read(req.UnitId, "holding", req.Addr, req.Quantity)
	return regs, err
}

func (b *bank) HandleInputRegisters(req *mbserver.InputRegistersRequest) ([]uint16, error) {
	regs, _, err := b.read(req.UnitId, "input", req.Addr, req.Quantity)
	return regs, err
}

// startServer starts a Modbus TCP server serving b; it can be stopped
// and started again on the same address.
func startServer(t testing.TB, b *bank) *testpeer.ModbusTCP {
	t.Helper()
	return testpeer.ModbusServer(t, b)
}

// collector gathers emitted scans.
type collector struct {
	mu    sync.Mutex
	scans []ferry.Scan
	ch    chan ferry.Scan
	hook  func(ferry.Scan)
}

func newCollector() *collector { return &collector{ch: make(chan ferry.Scan, 10000)} }

func (c *collector) emit(s ferry.Scan) {
	if c.hook != nil {
		c.hook(s)
	}
	c.mu.Lock()
	c.scans = append(c.scans, s)
	c.mu.Unlock()
	select {
	case c.ch <- s:
	default:
	}
}

// of returns the scans of device so far.
func (c *collector) of(device string) []ferry.Scan {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []ferry.Scan
	for _, s := range c.scans {
		if s.Device == device {
			out = append(out, s)
		}
	}
	return out
}

// next waits for the next scan of device.
func (c *collector) next(t testing.TB, device string) ferry.Scan {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case s := <-c.ch:
			if s.Device == device {
				return s
			}
		case <-timeout:
			t.Fatalf("no scan of %s within 10s", device)
		}
	}
}

// waitFor waits until cond holds for a scan of device.
func (c *collector) waitFor(t testing.TB, device string, what string, cond func(ferry.Scan) bool) ferry.Scan {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case s := <-c.ch:
			if s.Device == device && cond(s) {
				return s
			}
		case <-deadline:
			t.Fatalf("%s: %s did not happen within 15s", device, what)
		}
	}
}

// sample returns the sample of point in s.
func sample(t testing.TB, s ferry.Scan, point string) ferry.Sample {
	t.Helper()
	for _, x := range s.Samples {
		if x.Point == point {
			return x
		}
	}
	t.Fatalf("scan of %s has no point %s", s.Device, point)
	return ferry.Sample{}
}

func allGood(s ferry.Scan) bool {
	for _, x := range s.Samples {
		if !x.Quality.IsGood() {
			return false
		}
	}
	return true
}

// testLogger logs to t at Debug when FERRY_TEST_LOG is set.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("FERRY_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// run starts drv and returns a stop function that cancels it and waits
// (failing the test if Run does not return in time).
func run(t testing.TB, drv *Driver, c *collector) (stop func()) {
	t.Helper()
	return testutil.Run(t, "Run", 10*time.Second, func(ctx context.Context) error { return drv.Run(ctx, c.emit) })
}

// fastBackoff makes reconnects quick in tests.
var fastBackoff = backoff.Backoff{Min: 20 * time.Millisecond, Max: 100 * time.Millisecond}

// dev builds a device for url with points.
func dev(name, url string, unit uint8, interval time.Duration, points ...Point) Device {
	c := Config{}
	c.SetDefaults()
	c.URL, c.Unit, c.Interval, c.Timeout = url, unit, interval, 500*time.Millisecond
	return Device{Name: name, Config: c, Points: points}
}

func hr(name string, addr uint16, typ string) Point {
	return Point{Name: name, Table: "holding", Address: addr, Type: typ}
}

func newDriver(t testing.TB, opts Options, devs ...Device) *Driver {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	if opts.Backoff == (backoff.Backoff{}) {
		opts.Backoff = fastBackoff
	}
	d, err := New(devs, opts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func itoa(i int) string { return strconv.Itoa(i) }
