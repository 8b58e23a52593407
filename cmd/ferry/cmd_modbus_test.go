package main

import (
	"strings"
	"testing"

	mbserver "github.com/simonvetter/modbus"

	"github.com/ferry-edge/ferry/internal/testpeer"
)

// unitsBank answers as a Modbus TCP gateway with two devices behind it:
// unit 3 holds registers, unit 7 has none at address 0 (an exception of its
// own), every other unit is absent (the gateway's "target failed to
// respond").
type unitsBank struct{}

func (unitsBank) HandleCoils(*mbserver.CoilsRequest) ([]bool, error) {
	return nil, mbserver.ErrIllegalFunction
}
func (unitsBank) HandleDiscreteInputs(*mbserver.DiscreteInputsRequest) ([]bool, error) {
	return nil, mbserver.ErrIllegalFunction
}
func (unitsBank) HandleInputRegisters(*mbserver.InputRegistersRequest) ([]uint16, error) {
	return nil, mbserver.ErrIllegalFunction
}
func (unitsBank) HandleHoldingRegisters(r *mbserver.HoldingRegistersRequest) ([]uint16, error) {
	switch r.UnitId {
	case 3:
		return make([]uint16, r.Quantity), nil
	case 7:
		return nil, mbserver.ErrIllegalDataAddress
	}
	return nil, mbserver.ErrGWTargetFailedToRespond
}

func TestModbusScan(t *testing.T) {
	s := testpeer.ModbusServer(t, unitsBank{})
	code, out, errOut := run(t, "modbus", "scan", s.URL(), "-units", "1-10", "-timeout", "500ms")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"unit   3  answered  ok", "unit   7  answered  illegal data address",
		"2 of 10 answered: units 3, 7 (the rest: 8 gateway target failed to respond)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Nobody listening: exit 1 with the reason.
	r := testpeer.Reserve(t)
	code, out, _ = run(t, "modbus", "scan", "tcp://"+r.Addr(), "-units", "1,2", "-timeout", "200ms")
	if code != 1 || !strings.Contains(out, "no unit answered (2 connection refused)") {
		t.Errorf("refused: exit %d\n%s", code, out)
	}
	for _, args := range [][]string{
		{"modbus"}, {"modbus", "frob"}, {"modbus", "scan"},
		{"modbus", "scan", s.URL(), "-units", "5-1"}, {"modbus", "scan", s.URL(), "-units", "300"},
	} {
		if code, _, _ := run(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
