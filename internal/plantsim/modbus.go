package plantsim

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	mbserver "github.com/simonvetter/modbus"
)

// The register map every press serves on unit 1 (0-based protocol
// addresses). Configs and tests refer to these.
const (
	PressUnit = 1

	HROilTemp      = 0  // float32, ABCD (high word first), °C
	HROilTempCDAB  = 2  // float32, CDAB (low word first), same value
	HRPressure     = 4  // int16, bar × 10
	HRSpeed        = 5  // uint16, strokes/min
	HRCycles       = 6  // uint32, ABCD
	HRVibration    = 8  // float32, ABCD, mm/s
	HRStatus       = 10 // uint16 bit field: bit 0 running, bit 1 overheating
	HRHoleStart    = 20 // 20..29 are not mapped: reading them is "illegal data address"
	HRHoleEnd      = 29
	HREnergy       = 30 // float64, ABCD, kWh
	HRName         = 34 // string, 8 registers (16 bytes), "PRESS-n" padded with NULs
	HRNameLen      = 8
	HRLastFixed    = HRName + HRNameLen - 1
	HRExtraStart   = 100 // ExtraPoints float32 ABCD at 100, 102, …
	CoilRunning    = 0
	CoilAlarmLamp  = 1
	DIDoorOpen     = 0
	DIEStop        = 1
	IRMotorCurrent = 0 // uint16, A × 100
	IRAmbient      = 1 // int16, °C × 10
)

// Press is one simulated Modbus TCP slave.
type Press struct {
	N     int
	Name  string
	Addr  string
	extra int
	model *Model
	log   *slog.Logger

	mu      sync.Mutex
	srv     *mbserver.ModbusServer
	running bool

	requests atomic.Uint64
	errors   atomic.Uint64
}

func startPress(n int, host string, port, extra int, m *Model, lg *slog.Logger) (*Press, error) {
	if port == 0 {
		var err error
		if port, err = freePort(host); err != nil {
			return nil, err
		}
	}
	p := &Press{N: n, Name: fmt.Sprintf("press%d", n), Addr: hostPort(host, port), extra: extra, model: m, log: lg}
	if err := p.Start(); err != nil {
		return nil, err
	}
	return p, nil
}

// Start (re)starts serving on the press's address.
func (p *Press) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running {
		return nil
	}
	srv, err := mbserver.NewServer(&mbserver.ServerConfiguration{
		URL:        "tcp://" + p.Addr,
		Timeout:    time.Minute,
		MaxClients: 16,
		Logger:     log.New(io.Discard, "", 0),
	}, p)
	if err != nil {
		return fmt.Errorf("modbus server %s: %w", p.Name, err)
	}
	if err := srv.Start(); err != nil {
		return fmt.Errorf("modbus server %s on %s: %w", p.Name, p.Addr, err)
	}
	p.srv, p.running = srv, true
	return nil
}

// Stop stops serving: clients see connection refused until Start.
func (p *Press) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		return nil
	}
	p.running = false
	return p.srv.Stop()
}

// Running reports whether the press answers.
func (p *Press) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running
}

// Requests returns how many read requests the press has served (including
// those answered with an exception).
func (p *Press) Requests() uint64 { return p.requests.Load() }

// Exceptions returns how many requests were answered with an exception.
func (p *Press) Exceptions() uint64 { return p.errors.Load() }

func (p *Press) lastHolding() int {
	if p.extra > 0 {
		return HRExtraStart + 2*p.extra - 1
	}
	return HRLastFixed
}

// holding returns the holding registers the press serves at t.
func (p *Press) holding(t time.Duration) map[int]uint16 {
	m := p.model
	r := make(map[int]uint16, 48+2*p.extra)
	putF32 := func(a int, f float32, lowFirst bool) {
		b := math.Float32bits(f)
		hi, lo := uint16(b>>16), uint16(b)
		if lowFirst {
			hi, lo = lo, hi
		}
		r[a], r[a+1] = hi, lo
	}
	oil := float32(m.OilTemp(p.N, t))
	putF32(HROilTemp, oil, false)
	putF32(HROilTempCDAB, oil, true)
	r[HRPressure] = uint16(int16(math.Round(m.Pressure(p.N, t) * 10)))
	r[HRSpeed] = 30
	c := m.Cycles(p.N, t)
	r[HRCycles], r[HRCycles+1] = uint16(c>>16), uint16(c)
	putF32(HRVibration, float32(m.Vibration(p.N, t)), false)
	status := uint16(1)
	if p.N == 1 && m.overheat(t) > 20 {
		status |= 2
	}
	r[HRStatus] = status
	for a := HRStatus + 1; a < HRHoleStart; a++ {
		r[a] = 0
	}
	e := math.Float64bits(t.Hours() * 55.5 * float64(p.N))
	for i := 0; i < 4; i++ {
		r[HREnergy+i] = uint16(e >> (48 - 16*i))
	}
	name := []byte(fmt.Sprintf("PRESS-%d", p.N))
	for i := 0; i < HRNameLen; i++ {
		var hi, lo byte
		if 2*i < len(name) {
			hi = name[2*i]
		}
		if 2*i+1 < len(name) {
			lo = name[2*i+1]
		}
		r[HRName+i] = uint16(hi)<<8 | uint16(lo)
	}
	for k := 0; k < p.extra; k++ {
		putF32(HRExtraStart+2*k, float32(m.Extra(p.N, k, t)), false)
	}
	return r
}

func (p *Press) count(err error) error {
	p.requests.Add(1)
	if err != nil {
		p.errors.Add(1)
	}
	return err
}

func (p *Press) checkUnit(unit uint8) error {
	if unit != PressUnit {
		return mbserver.ErrGWTargetFailedToRespond
	}
	return nil
}

// HandleHoldingRegisters serves reads of the holding registers; writes are
// refused (ferry is read-only).
func (p *Press) HandleHoldingRegisters(req *mbserver.HoldingRegistersRequest) ([]uint16, error) {
	if err := p.checkUnit(req.UnitId); err != nil {
		return nil, p.count(err)
	}
	if req.IsWrite {
		return nil, p.count(mbserver.ErrIllegalFunction)
	}
	regs := p.holding(p.model.elapsed())
	out := make([]uint16, req.Quantity)
	for i := range out {
		a := int(req.Addr) + i
		v, ok := regs[a]
		if !ok || a > p.lastHolding() {
			return nil, p.count(mbserver.ErrIllegalDataAddress)
		}
		out[i] = v
	}
	return out, p.count(nil)
}

// HandleInputRegisters serves the input registers.
func (p *Press) HandleInputRegisters(req *mbserver.InputRegistersRequest) ([]uint16, error) {
	if err := p.checkUnit(req.UnitId); err != nil {
		return nil, p.count(err)
	}
	if int(req.Addr)+int(req.Quantity) > IRAmbient+1 {
		return nil, p.count(mbserver.ErrIllegalDataAddress)
	}
	t := p.model.elapsed()
	all := []uint16{
		uint16(math.Round(p.model.MotorCurrent(p.N, t) * 100)),
		uint16(int16(245)),
	}
	return all[req.Addr : int(req.Addr)+int(req.Quantity)], p.count(nil)
}

// HandleCoils serves the coils; writes are refused.
func (p *Press) HandleCoils(req *mbserver.CoilsRequest) ([]bool, error) {
	if err := p.checkUnit(req.UnitId); err != nil {
		return nil, p.count(err)
	}
	if req.IsWrite {
		return nil, p.count(mbserver.ErrIllegalFunction)
	}
	if int(req.Addr)+int(req.Quantity) > CoilAlarmLamp+1 {
		return nil, p.count(mbserver.ErrIllegalDataAddress)
	}
	all := []bool{true, p.N == 1 && p.model.overheat(p.model.elapsed()) > 20}
	return all[req.Addr : int(req.Addr)+int(req.Quantity)], p.count(nil)
}

// HandleDiscreteInputs serves the discrete inputs.
func (p *Press) HandleDiscreteInputs(req *mbserver.DiscreteInputsRequest) ([]bool, error) {
	if err := p.checkUnit(req.UnitId); err != nil {
		return nil, p.count(err)
	}
	if int(req.Addr)+int(req.Quantity) > DIEStop+1 {
		return nil, p.count(mbserver.ErrIllegalDataAddress)
	}
	all := []bool{false, false}
	return all[req.Addr : int(req.Addr)+int(req.Quantity)], p.count(nil)
}

// ExtraPoint is one of a press's load-test points: a float32 (ABCD) in two
// holding registers.
type ExtraPoint struct {
	Name    string
	Address int
}

// ExtraPoints lists the press's load-test points (Options.ExtraPoints).
func (p *Press) ExtraPoints() []ExtraPoint {
	out := make([]ExtraPoint, p.extra)
	for k := range out {
		out[k] = ExtraPoint{Name: fmt.Sprintf("x%04d", k), Address: HRExtraStart + 2*k}
	}
	return out
}
