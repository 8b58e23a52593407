package testpeer

import (
	"sync"

	mbserver "github.com/simonvetter/modbus"
)

// RegBank is a Modbus device for write tests (serve it with
// ModbusServer): 1024 holding registers and 64 coils on every unit id, and
// the log of every write it took, in order: the server's view of what a
// command did.
type RegBank struct {
	mu     sync.Mutex
	regs   [1024]uint16
	coils  [64]bool
	writes []BankWrite
	reads  int
}

// BankWrite is one write a RegBank took.
type BankWrite struct {
	Coils bool
	Addr  uint16
	Regs  []uint16
	Bits  []bool
}

// HandleCoils reads or writes coils.
func (b *RegBank) HandleCoils(req *mbserver.CoilsRequest) ([]bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if int(req.Addr)+int(req.Quantity) > len(b.coils) {
		return nil, mbserver.ErrIllegalDataAddress
	}
	if req.IsWrite {
		copy(b.coils[req.Addr:], req.Args)
		b.writes = append(b.writes, BankWrite{Coils: true, Addr: req.Addr, Bits: append([]bool(nil), req.Args...)})
		return nil, nil
	}
	b.reads++
	return append([]bool(nil), b.coils[req.Addr:req.Addr+req.Quantity]...), nil
}

// HandleDiscreteInputs answers illegal data address.
func (b *RegBank) HandleDiscreteInputs(*mbserver.DiscreteInputsRequest) ([]bool, error) {
	return nil, mbserver.ErrIllegalDataAddress
}

// HandleHoldingRegisters reads or writes holding registers.
func (b *RegBank) HandleHoldingRegisters(req *mbserver.HoldingRegistersRequest) ([]uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if int(req.Addr)+int(req.Quantity) > len(b.regs) {
		return nil, mbserver.ErrIllegalDataAddress
	}
	if req.IsWrite {
		copy(b.regs[req.Addr:], req.Args)
		b.writes = append(b.writes, BankWrite{Addr: req.Addr, Regs: append([]uint16(nil), req.Args...)})
		return nil, nil
	}
	b.reads++
	return append([]uint16(nil), b.regs[req.Addr:req.Addr+req.Quantity]...), nil
}

// HandleInputRegisters answers illegal data address.
func (b *RegBank) HandleInputRegisters(*mbserver.InputRegistersRequest) ([]uint16, error) {
	return nil, mbserver.ErrIllegalDataAddress
}

// Set sets holding register addr.
func (b *RegBank) Set(addr int, v uint16) {
	b.mu.Lock()
	b.regs[addr] = v
	b.mu.Unlock()
}

// Reg returns holding register addr.
func (b *RegBank) Reg(addr int) uint16 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.regs[addr]
}

// Writes returns the writes taken so far.
func (b *RegBank) Writes() []BankWrite {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]BankWrite(nil), b.writes...)
}

// Reads returns how many read requests were served.
func (b *RegBank) Reads() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reads
}
