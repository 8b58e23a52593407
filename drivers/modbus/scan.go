package modbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/grid-x/modbus"

	"github.com/ferry-edge/ferry/internal/devstat"
)

// UnitAnswer is what one unit id answered to ScanUnits.
type UnitAnswer struct {
	Unit uint8
	// Answered is true when a device answered for the unit: with the
	// register, or with an exception of its own (illegal address or
	// function: the unit exists but holds no holding register 0). A
	// gateway's "target failed to respond" or "path unavailable" is no
	// answer.
	Answered bool
	// Reason is "ok", the exception's reason, or why nothing answered.
	Reason string
	Took   time.Duration
}

// ScanUnits asks every unit of units on the link at rawURL for holding
// register 0 (FC03, one register) with timeout per unit, through the same
// link code a poll uses (reconnects, frame checks, a library panic turned
// into an error), and reports each answer to progress as it comes. It
// stops early when ctx ends. It never writes.
func ScanUnits(ctx context.Context, rawURL string, s Serial, units []uint8, timeout time.Duration, progress func(UnitAnswer)) ([]UnitAnswer, error) {
	addr, err := parseLink(rawURL)
	if err != nil {
		return nil, fmt.Errorf("url: %v", err)
	}
	if addr.scheme != schemeRTU {
		s = Serial{}
	} else if s.Baud == 0 {
		s.SetDefaults()
	}
	l := newLink(addr, "scan", s, Options{}.withDefaults())
	probe := &device{unit: 1, interval: timeout, timeout: timeout}
	l.devs = []*device{probe}
	l.newHandler()
	defer l.closeConn()
	r := &request{table: tableHolding, span: span{0, 1}}
	var out []UnitAnswer
	for _, u := range units {
		if ctx.Err() != nil {
			break
		}
		probe.unit = u
		start := time.Now()
		a := UnitAnswer{Unit: u}
		// Connect now (not after the link's backoff): a scan is one pass.
		l.nextDial = time.Time{}
		if !l.ensureOpen(probe) {
			a.Reason = devstat.Reason(l.downErr)
		} else {
			_, err := l.exchange(probe, r)
			a.Answered, a.Reason = answered(err)
			if outcomeOf(err) == outTimeout {
				// A late answer must not be taken for the next unit's.
				l.closeConn()
			}
		}
		a.Took = time.Since(start)
		out = append(out, a)
		if progress != nil {
			progress(a)
		}
	}
	return out, ctx.Err()
}

// answered tells whether err (of a one-register read) shows a device that
// answered for the unit.
func answered(err error) (bool, string) {
	if err == nil {
		return true, "ok"
	}
	var me *modbus.Error
	if errors.As(err, &me) {
		switch me.ExceptionCode {
		case modbus.ExceptionCodeGatewayPathUnavailable, modbus.ExceptionCodeGatewayTargetDeviceFailedToRespond:
			return false, exceptionReason(me.ExceptionCode)
		}
		return true, exceptionReason(me.ExceptionCode)
	}
	if outcomeOf(err) == outBadFrame {
		// Something answered, wrongly: worth a look, so say so.
		return true, "bad frame: " + devstat.Reason(err)
	}
	return false, devstat.Reason(err)
}
