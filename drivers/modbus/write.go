package modbus

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/grid-x/modbus"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/backoff"
)

var _ ferry.Writer = (*Driver)(nil)

// Function codes of the writes.
const (
	fcWriteSingleCoil        = 0x05
	fcWriteSingleRegister    = 0x06
	fcWriteMultipleCoils     = 0x0F
	fcWriteMultipleRegisters = 0x10
	fcMaskWriteRegister      = 0x16
)

// writeConf is what a device's writes need besides its points.
type writeConf struct {
	mask     bool               // FC22 supported
	multiple bool               // FC15/FC16 only
	specs    []*ferry.WriteSpec // per point; nil: read-only
}

func newWriteConf(dev Device) writeConf {
	w := writeConf{mask: dev.Config.MaskWrite, multiple: dev.Config.WriteMultiple, specs: make([]*ferry.WriteSpec, len(dev.Points))}
	for i := range dev.Points {
		w.specs[i] = dev.Points[i].Write
	}
	return w
}

// writeOp is one write handed to the goroutine of a link.
type writeOp struct {
	ctx context.Context
	dev *device
	pt  *pointDef
	enc encoded
	res chan writeOutcome // buffered: the link never blocks on it
}

type writeOutcome struct {
	res ferry.WriteResult
	err error
}

// writeQueue hands writes to a running link. ch is unbuffered: a write
// is either taken by the link goroutine, which then serves it at once, or
// not sent at all.
type writeQueue struct {
	ch chan *writeOp

	mu   sync.Mutex
	live chan struct{} // closed when the run ends; nil when not running

	wrote bool // run goroutine: the last thing done was a write
}

func newWriteQueue() writeQueue { return writeQueue{ch: make(chan *writeOp)} }

// start marks the link running; the function returned marks it stopped.
func (q *writeQueue) start() func() {
	live := make(chan struct{})
	q.mu.Lock()
	q.live = live
	q.mu.Unlock()
	return func() {
		q.mu.Lock()
		q.live = nil
		q.mu.Unlock()
		close(live)
	}
}

func (q *writeQueue) running() chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.live
}

// Write writes req.Value to a point of one of the driver's devices, then
// reads the point back with the function a poll uses and compares the raw
// registers (or bit). The write goes through the link's scheduler: it is
// sent between two requests, ahead of any poll request still to come
// (while a poll is in progress, writes and its requests alternate), and
// never retried. Errors:
//
//   - ferry.ErrUnknownDevice, ferry.ErrUnknownPoint: no such device or
//     point (nothing sent).
//   - ferry.ErrWriteRefused: nothing was sent. The point is not declared
//     writable, the value is outside its min/max or not in allowed (a
//     backstop: the command path checks them first), the value does not
//     fit the point's type losslessly (see encode), a bit of a register without FC22, the driver is not
//     running, the link is down, or ctx ended before the link was free.
//   - ferry.ErrReadBackMismatch: written, but the device reports another
//     value; the result's ReadBack holds it.
//   - ferry.ErrWriteUnknown: the request went out and no valid answer came
//     (timeout, connection lost, malformed answer, exception 0x05
//     acknowledge or 0x0B gateway target failed to respond), or the
//     device acknowledged the write and the read back failed.
//   - any other error: the device answered the write with an exception;
//     the message names it ("illegal data address", "server device
//     busy", …) and nothing was written.
//
// Once the link has taken the write, Write waits for its outcome even when
// ctx ends (the Modbus request cannot be abandoned; it is bounded by the
// device's timeout), so the outcome reported is what happened.
func (d *Driver) Write(ctx context.Context, req ferry.WriteRequest) (ferry.WriteResult, error) {
	var dev *device
	var l *link
	for _, lk := range d.links {
		for _, x := range lk.devs {
			if x.name == req.Device {
				dev, l = x, lk
			}
		}
	}
	if dev == nil {
		return ferry.WriteResult{}, fmt.Errorf("%w: %q", ferry.ErrUnknownDevice, req.Device)
	}
	res, err := l.submit(ctx, dev, req)
	dev.m.writes[writeResultOf(err)].Inc()
	return res, err
}

// submit checks and encodes req and hands it to the link goroutine.
func (l *link) submit(ctx context.Context, dev *device, req ferry.WriteRequest) (ferry.WriteResult, error) {
	idx := -1
	for i := range dev.points {
		if dev.points[i].name == req.Point {
			idx = i
			break
		}
	}
	if idx < 0 {
		return ferry.WriteResult{}, fmt.Errorf("%w: %q of device %s", ferry.ErrUnknownPoint, req.Point, dev.name)
	}
	pt := &dev.points[idx]
	switch {
	case dev.w.specs[idx] == nil:
		return ferry.WriteResult{}, refuse("point %s.%s is not writable: it has no write: block in the device map", dev.name, pt.name)
	case len(req.Args) > 0:
		return ferry.WriteResult{}, refuse("a Modbus point takes a value, not call arguments")
	}
	// encode reads only the decoder's settings, never the scratch the
	// link goroutine decodes with: it is safe here.
	enc, err := pt.dec.encode(pt.table, req.Value, dev.w.mask)
	if err != nil {
		return ferry.WriteResult{}, fmt.Errorf("write %s.%s: %w", dev.name, pt.name, err)
	}
	if err := pt.dec.within(pt.table, dev.w.specs[idx], req.Value, enc, dev.w.mask); err != nil {
		return ferry.WriteResult{}, fmt.Errorf("write %s.%s: %w", dev.name, pt.name, err)
	}
	live := l.wq.running()
	if live == nil {
		return ferry.WriteResult{}, refuse("the Modbus driver is not running (not started yet, or stopped)")
	}
	op := &writeOp{ctx: ctx, dev: dev, pt: pt, enc: enc, res: make(chan writeOutcome, 1)}
	select {
	case l.wq.ch <- op:
	case <-live:
		return ferry.WriteResult{}, refuse("the Modbus driver stopped")
	case <-ctx.Done():
		return ferry.WriteResult{}, refuse("the link %s was not free before the command's time ran out: %v", l.addr, context.Cause(ctx))
	}
	out := <-op.res
	return out.res, out.err
}

// within checks v, encoded as e, against the point's declared limits: a
// backstop behind the command path, which checks them first. An allowed
// value matches when it encodes to the same registers (or bit), which is
// "compared after conversion to the point's type".
func (d *decoder) within(t table, w *ferry.WriteSpec, v ferry.Value, e encoded, mask bool) error {
	if w.Min != nil || w.Max != nil {
		if n, err := numberOf(v); err == nil {
			f := n.float()
			if w.Min != nil && f < *w.Min {
				return refuse("%s is below the point's min %v", e.valueText, *w.Min)
			}
			if w.Max != nil && f > *w.Max {
				return refuse("%s is above the point's max %v", e.valueText, *w.Max)
			}
		}
	}
	if len(w.Allowed) == 0 {
		return nil
	}
	for _, a := range w.Allowed {
		x, err := d.encode(t, ferry.StringValue(a), mask)
		if err == nil && x.on == e.on && x.mask == e.mask && bytes.Equal(x.data, e.data) {
			return nil
		}
	}
	return refuse("%s is not one of the point's allowed values %v", e.valueText, w.Allowed)
}

// takeWrite returns a write waiting for the link, or nil. Right after a
// write, while a poll is in progress, it returns nil once so that writes
// and poll requests alternate: a burst of writes delays a poll by one
// write per request, it does not stop it.
func (l *link) takeWrite() *writeOp {
	if l.wq.wrote {
		l.wq.wrote = false
		for _, d := range l.devs {
			if d.poll != nil {
				return nil
			}
		}
	}
	select {
	case op := <-l.wq.ch:
		return op
	default:
		return nil
	}
}

// serveWrite makes one write and its read back on the link goroutine and
// sends the outcome to op.res.
func (l *link) serveWrite(ctx context.Context, op *writeOp) {
	l.wq.wrote = true
	res, err := l.write(ctx, op)
	// The error goes back to the caller, which logs and audits it (the
	// command path): Debug only here.
	op.dev.log.Debug("write", "point", op.pt.name, "value", op.enc.valueText, "read_back", res.ReadBack.String(), "err", err)
	op.res <- writeOutcome{res, err}
}

func (l *link) write(ctx context.Context, op *writeOp) (ferry.WriteResult, error) {
	d, pt := op.dev, op.pt
	if ctx.Err() != nil {
		return ferry.WriteResult{}, refuse("the Modbus driver is stopping")
	}
	if !l.ensureOpen(d) {
		return ferry.WriteResult{}, refuse("link down: %v", l.downErr)
	}
	if d.delay > 0 && !l.lastEnd.IsZero() {
		if !backoff.Sleep(op.ctx, time.Until(l.lastEnd.Add(d.delay))) {
			return ferry.WriteResult{}, refuse("the command's time ran out before the link was free: %v", context.Cause(op.ctx))
		}
	}
	if err := op.ctx.Err(); err != nil {
		return ferry.WriteResult{}, refuse("the command's time ran out before the link was free: %v", context.Cause(op.ctx))
	}
	fc, err := l.writeCall(d, pt, &op.enc)
	where := fmt.Sprintf("unit %d %s %d (FC%02d) on %s", d.unit, pt.table, pt.addr, fc, l.addr)
	if err != nil {
		return ferry.WriteResult{}, l.writeError(d, fc, where, err)
	}
	l.silent = 0
	l.bo.Reset()
	d.stat.Connected()

	// Read back with the function a poll uses.
	r := &request{table: pt.table, span: span{pt.addr, pt.addr + pt.n}}
	data, err := l.exchange(d, r)
	if err != nil {
		return ferry.WriteResult{}, fmt.Errorf("%w: the device acknowledged the write (%s) but the read back failed: %w", ferry.ErrWriteUnknown, where, err)
	}
	res := ferry.WriteResult{Time: l.now()}
	var same, ok bool
	switch {
	case pt.table.bits():
		res.ReadBack, ok = decodeBit(data, 0)
		same = ok && res.ReadBack.Bool() == op.enc.on
	case op.enc.mask:
		r := binary.BigEndian.Uint16(data)
		res.ReadBack, ok = pt.dec.decode(data)
		same = (r>>op.enc.wire&1 == 1) == op.enc.on
	default:
		res.ReadBack, ok = pt.dec.decode(data)
		same = bytes.Equal(data[:len(op.enc.data)], op.enc.data)
	}
	if !ok {
		return res, fmt.Errorf("%w: wrote %s (%s), read back registers % X that do not decode", ferry.ErrReadBackMismatch, op.enc.valueText, where, data[:2*pt.n])
	}
	if !same {
		return res, fmt.Errorf("%w: wrote %s (%s), read back %s", ferry.ErrReadBackMismatch, op.enc.valueText, where, res.ReadBack)
	}
	return res, nil
}

// writeCall sends the write request of e and returns its function code.
func (l *link) writeCall(d *device, pt *pointDef, e *encoded) (fc byte, err error) {
	l.h.SetSlave(d.unit)
	l.setTimeout(d.timeout)
	a := uint16(pt.addr)
	multi := d.w.multiple
	switch {
	case pt.table == tableCoil && multi:
		fc = fcWriteMultipleCoils
	case pt.table == tableCoil:
		fc = fcWriteSingleCoil
	case e.mask:
		fc = fcMaskWriteRegister
	case len(e.data) == 2 && !multi:
		fc = fcWriteSingleRegister
	default:
		fc = fcWriteMultipleRegisters
	}
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("malformed response (library panic: %v)", p)
			l.log.Error("modbus library panicked on a response", "panic", p)
		}
		l.lastEnd = time.Now()
		l.m.duration.Observe(l.lastEnd.Sub(start).Seconds())
		var me *modbus.Error
		if errors.As(err, &me) && me.FunctionCode != fc|0x80 {
			err = fmt.Errorf("response has function code 0x%02X, not 0x%02X or its exception", me.FunctionCode, fc)
		}
		l.m.results[outcomeOf(err).result()].Inc()
	}()
	switch fc {
	case fcWriteSingleCoil:
		var v uint16
		if e.on {
			v = 0xFF00
		}
		_, err = l.client.WriteSingleCoil(a, v)
	case fcWriteMultipleCoils:
		var b byte
		if e.on {
			b = 1
		}
		_, err = l.client.WriteMultipleCoils(a, 1, []byte{b})
	case fcMaskWriteRegister:
		_, err = l.client.MaskWriteRegister(a, e.and, e.or)
	case fcWriteSingleRegister:
		_, err = l.client.WriteSingleRegister(a, binary.BigEndian.Uint16(e.data))
	default:
		_, err = l.client.WriteMultipleRegisters(a, uint16(len(e.data)/2), e.data)
	}
	return fc, err
}

// writeError classifies the failure of a write request.
func (l *link) writeError(d *device, fc byte, where string, err error) error {
	switch outcomeOf(err) {
	case outException:
		var me *modbus.Error
		errors.As(err, &me)
		l.silent = 0
		d.stat.Connected()
		reason := exceptionReason(me.ExceptionCode)
		switch me.ExceptionCode {
		case modbus.ExceptionCodeAcknowledge:
			return fmt.Errorf("%w: %s: the device acknowledged and is still processing (exception 0x05): read the point to learn the outcome", ferry.ErrWriteUnknown, where)
		case modbus.ExceptionCodeGatewayTargetDeviceFailedToRespond:
			return fmt.Errorf("%w: %s: %s (exception 0x0B): the unit may have written", ferry.ErrWriteUnknown, where, reason)
		}
		return &WriteException{Code: me.ExceptionCode, Reason: reason, Function: fc, where: where}
	case outTimeout:
		l.silent++
		if l.addr.scheme != schemeRTU {
			l.closeConn() // a late answer must not be taken for the next one
		}
		return fmt.Errorf("%w: %s: no answer within %v: the device may have written", ferry.ErrWriteUnknown, where, d.timeout)
	case outLink:
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "dial" {
			l.down(err)
			return refuse("%s: connect: %v", where, err)
		}
		l.down(err)
		return fmt.Errorf("%w: %s: connection lost: %v", ferry.ErrWriteUnknown, where, err)
	}
	if l.addr.scheme != schemeRTU {
		l.closeConn() // resynchronise the stream
	}
	return fmt.Errorf("%w: %s: %s: %v", ferry.ErrWriteUnknown, where, ReasonBadFrame, err)
}

// WriteException is the error of a write the device refused with a Modbus
// exception: nothing was written. Reason is the short text
// ("illegal data address", "server device busy", …).
type WriteException struct {
	Code     byte
	Reason   string
	Function byte
	where    string
}

func (e *WriteException) Error() string {
	return fmt.Sprintf("write %s: %s (exception 0x%02X)", e.where, e.Reason, e.Code)
}

// writeResultOf is the result label of a write's metric.
func writeResultOf(err error) string {
	switch {
	case err == nil:
		return writeDone
	case errors.Is(err, ferry.ErrWriteRefused), errors.Is(err, ferry.ErrUnknownPoint):
		return writeRefused
	case errors.Is(err, ferry.ErrWriteUnknown):
		return writeUnknown
	case errors.Is(err, ferry.ErrReadBackMismatch):
		return writeMismatch
	}
	return writeFailed
}

// Write results, the values of the result label of
// ferry_modbus_writes_total.
const (
	writeDone     = "done"
	writeRefused  = "refused"
	writeFailed   = "failed"
	writeUnknown  = "unknown"
	writeMismatch = "mismatch"
)

func (m *Metrics) writeSeries(device string) map[string]prometheus.Counter {
	out := map[string]prometheus.Counter{}
	for _, r := range []string{writeDone, writeRefused, writeFailed, writeUnknown, writeMismatch} {
		out[r] = m.writes.WithLabelValues(device, r)
	}
	return out
}
