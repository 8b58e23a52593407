package modbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/grid-x/modbus"
	"github.com/grid-x/serial"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/backoff"
	"github.com/ferry-edge/ferry/internal/devstat"
)

// ReasonBadFrame is the quality reason of points whose response was not a
// valid Modbus frame (wrong length, transaction id, unit, CRC, …).
const ReasonBadFrame = "bad frame"

// link is one physical link — a TCP connection or a serial port — and the
// devices on it. One goroutine (run) owns it and serialises every request.
type link struct {
	addr linkAddr
	// name labels the link's metric series: the name of its first device
	// (configuration order), not its URL — see newLink.
	name   string
	serial Serial
	log    *slog.Logger
	m      linkMetrics
	now    func() time.Time
	boTmpl backoff.Backoff
	devs   []*device
	wq     writeQueue // write.go

	// Run state, owned by the run goroutine.
	h          modbus.ClientHandler
	client     modbus.Client
	setTimeout func(time.Duration)
	open       bool
	bo         backoff.Backoff
	nextDial   time.Time
	downErr    error
	silent     int       // timeouts in a row with no answer from any unit
	lastEnd    time.Time // when the last request ended (wall clock)
	rr         int       // round-robin position among devices
}

// newLink returns the link at addr. name (its first device's name) is
// the value of the link label of its series: a name from the
// configuration, in the label style of every other series, where the
// URL would put slashes (and a serial device path) into label values.
// The log keeps the URL.
func newLink(addr linkAddr, name string, s Serial, opts Options) *link {
	return &link{
		addr:   addr,
		name:   name,
		serial: s,
		log:    opts.Logger.With("link", addr.String()),
		m:      opts.Metrics.link(name),
		now:    opts.Now,
		boTmpl: opts.Backoff,
		wq:     newWriteQueue(),
	}
}

// newHandler creates the library's handler for the link (no I/O).
func (l *link) newHandler() {
	idle := time.Minute
	var maxTimeout time.Duration
	for _, d := range l.devs {
		idle = max(idle, 3*d.interval)
		maxTimeout = max(maxTimeout, d.timeout)
	}
	switch l.addr.scheme {
	case schemeTCP:
		// ferry's transport (tcpframe.go): stale bytes are discarded
		// before each request, a late answer to an earlier, timed-out
		// request is skipped by its transaction id, and every answer is
		// checked against its request; errors come back at once.
		h := newTCPHandler(l.addr.addr, idle, maxTimeout, l.discarded)
		l.h, l.setTimeout = h, func(t time.Duration) { h.tr.timeout = t }
	case schemeRTUOverTCP:
		h := modbus.NewRTUOverTCPClientHandler(l.addr.addr)
		h.IdleTimeout = idle
		h.Timeout = maxTimeout
		l.h, l.setTimeout = h, func(t time.Duration) { h.Timeout = t }
	default:
		h := modbus.NewRTUClientHandler(l.addr.addr)
		h.BaudRate = l.serial.Baud
		h.DataBits = l.serial.DataBits
		h.StopBits = l.serial.StopBits
		h.Parity = strings.ToUpper(l.serial.Parity[:1])
		h.IdleTimeout = 0 // keep the port open: it is ours
		// The port's read timeout is fixed when it opens: the longest
		// timeout of its devices.
		h.Timeout = maxTimeout
		l.h, l.setTimeout = h, func(t time.Duration) { h.Timeout = t }
	}
	l.client = modbus.NewClient(l.h)
}

// discarded counts n bytes that arrived unasked and were thrown away
// before a request.
func (l *link) discarded(n int) {
	l.m.stale.Add(float64(n))
	l.log.Debug("discarded bytes that arrived unasked", "bytes", n)
}

// run polls the link's devices until ctx ends, then closes the link.
func (l *link) run(ctx context.Context, emit ferry.EmitFunc) {
	l.newHandler()
	l.open, l.nextDial, l.downErr, l.silent, l.rr = false, time.Time{}, nil, 0, 0
	l.bo = l.boTmpl
	l.bo.Reset()
	defer l.closeConn()
	defer l.wq.start()()
	now := l.now()
	for _, d := range l.devs {
		d.next, d.poll = now, nil
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		now = l.now()
		l.schedule(now)
		if op := l.takeWrite(); op != nil {
			l.serveWrite(ctx, op)
			continue
		}
		if d := l.pick(); d != nil {
			l.step(ctx, d, emit)
			continue
		}
		wake := l.devs[0].next
		for _, d := range l.devs[1:] {
			if d.next.Before(wake) {
				wake = d.next
			}
		}
		timer.Reset(wake.Sub(now))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case op := <-l.wq.ch:
			l.serveWrite(ctx, op)
		}
	}
}

// schedule starts the polls that are due at now. Polls run at a fixed rate
// (start + k × interval); a tick that finds the previous poll still
// running, or that passed while the link was busy, is skipped and counted
// as an overrun.
func (l *link) schedule(now time.Time) {
	for _, d := range l.devs {
		if now.Before(d.next) {
			continue
		}
		if d.poll == nil {
			d.begin(now)
			d.next = d.next.Add(d.interval)
		}
		if !now.Before(d.next) {
			n := 1 + now.Sub(d.next)/d.interval
			for i := time.Duration(0); i < n && i < 1<<20; i++ {
				d.stat.Overrun()
			}
			d.next = d.next.Add(n * d.interval)
		}
	}
}

// pick returns the next device with a poll in progress, round-robin, so
// that the requests of devices polled at the same time interleave.
func (l *link) pick() *device {
	n := len(l.devs)
	for i := 0; i < n; i++ {
		k := (l.rr + i) % n
		if l.devs[k].poll != nil {
			l.rr = (k + 1) % n
			return l.devs[k]
		}
	}
	return nil
}

// step makes the next request of d's poll (finishing the poll when it was
// the last).
func (l *link) step(ctx context.Context, d *device, emit ferry.EmitFunc) {
	p := d.poll
	if len(p.queue) > 0 {
		if !l.ensureOpen(d) {
			d.abort(d.stat.Lost(l.downErr), l.now())
		} else {
			j := p.queue[0]
			p.queue = p.queue[1:]
			if d.delay > 0 && !l.lastEnd.IsZero() {
				if !backoff.Sleep(ctx, time.Until(l.lastEnd.Add(d.delay))) {
					return
				}
			}
			data, err := l.exchange(d, j.req)
			l.handle(d, j, data, err, l.now())
		}
	}
	if len(d.poll.queue) == 0 {
		d.finish(l.now(), emit)
	}
}

// ensureOpen connects (or opens the serial port) unless the link is open,
// or is down and its backoff has not passed yet.
func (l *link) ensureOpen(d *device) bool {
	if l.open {
		return true
	}
	if l.now().Before(l.nextDial) {
		return false
	}
	l.setTimeout(d.timeout)
	if err := l.h.Connect(); err != nil {
		l.m.connErr.Inc()
		l.down(fmt.Errorf("connect %s: %w", l.addr, err))
		return false
	}
	l.m.connOK.Inc()
	l.open, l.silent = true, 0
	l.log.Debug("link open")
	return true
}

// down marks the link down after err: no new connection before the
// backoff delay.
func (l *link) down(err error) {
	l.closeConn()
	l.downErr = err
	d := l.bo.Next()
	l.nextDial = l.now().Add(d)
	l.log.Debug("link down", "err", err, "retry_in", d)
}

func (l *link) closeConn() {
	if l.h != nil {
		_ = l.h.Close() // nothing to do about a failing close
	}
	l.open = false
}

// exchange makes one request for d. A connection that broke since the last
// request is re-established and the request retried once (devices close
// idle connections); a second failure takes the link down.
func (l *link) exchange(d *device, r *request) ([]byte, error) {
	data, err := l.call(d, r)
	if outcomeOf(err) != outLink {
		return data, err
	}
	l.closeConn()
	if !l.ensureOpen(d) {
		return nil, l.downErr
	}
	data, err = l.call(d, r)
	if outcomeOf(err) == outLink {
		l.down(err)
	}
	return data, err
}

// call makes one request and counts it. A panic of the library on a
// malformed frame becomes an error.
func (l *link) call(d *device, r *request) (data []byte, err error) {
	l.h.SetSlave(d.unit)
	l.setTimeout(d.timeout)
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("malformed response (library panic: %v)", p)
			l.log.Error("modbus library panicked on a response", "panic", p)
		}
		l.lastEnd = time.Now()
		l.m.duration.Observe(l.lastEnd.Sub(start).Seconds())
		o := outcomeOf(err)
		var me *modbus.Error
		switch {
		case err == nil:
			if msg := checkLength(r, data); msg != "" {
				err, o = errors.New(msg), outBadFrame
			}
		case errors.As(err, &me) && me.FunctionCode != r.table.function()|0x80:
			// The library takes any other function code for an exception.
			err, o = fmt.Errorf("response has function code 0x%02X, not 0x%02X or its exception", me.FunctionCode, r.table.function()), outBadFrame
		}
		if o == outTimeout && devstat.Reason(err) != ferry.ReasonTimeout {
			err = &timeoutError{err}
		}
		l.m.results[o.result()].Inc()
		if err != nil {
			err = fmt.Errorf("read unit %d %s %s on %s: %w", d.unit, r.table, r.span, l.addr, err)
		}
	}()
	a, n := uint16(r.start), uint16(r.count())
	switch r.table {
	case tableCoil:
		return l.client.ReadCoils(a, n)
	case tableDiscrete:
		return l.client.ReadDiscreteInputs(a, n)
	case tableHolding:
		return l.client.ReadHoldingRegisters(a, n)
	default:
		return l.client.ReadInputRegisters(a, n)
	}
}

// checkLength checks that data holds what r asked for.
func checkLength(r *request, data []byte) string {
	want, what := 2*r.count(), "registers"
	if r.table.bits() {
		want, what = (r.count()+7)/8, "bits"
	}
	if len(data) < want {
		return fmt.Sprintf("short response: %d bytes for %d %s", len(data), r.count(), what)
	}
	return ""
}

// handle applies the outcome of one request to d's poll.
func (l *link) handle(d *device, j *job, data []byte, err error, now time.Time) {
	o := outcomeOf(err)
	if o == outOK || o == outException {
		l.silent = 0
		l.bo.Reset()
	}
	switch o {
	case outOK:
		d.stat.Connected()
		d.fill(j.req, data, now)
		l.done(d, j, true)
	case outException:
		var me *modbus.Error
		errors.As(err, &me)
		reason := exceptionReason(me.ExceptionCode)
		if me.ExceptionCode == modbus.ExceptionCodeGatewayTargetDeviceFailedToRespond {
			// The gateway answers, the unit behind it does not.
			d.abort(d.stat.Lost(&timeoutError{err}), now)
			return
		}
		isolate := me.ExceptionCode == modbus.ExceptionCodeIllegalDataAddress || me.ExceptionCode == modbus.ExceptionCodeIllegalDataValue
		if !isolate {
			d.poll.clean = false
		}
		d.stat.Connected()
		d.stat.Error(reason, err)
		if isolate {
			if len(j.req.atoms) > 1 {
				l.split(d, j)
				return
			}
			l.learn(d, badRange{table: j.req.table, span: j.req.span, reason: reason})
		}
		d.fail(j.req, reason, now)
		l.done(d, j, false)
	case outTimeout:
		l.silent++
		switch {
		case l.addr.scheme == schemeRTUOverTCP:
			// No transaction ids: a late answer would be taken for the
			// next one. A new connection starts clean.
			l.closeConn()
		case l.addr.scheme == schemeTCP && l.silent >= 2:
			// Nobody on this connection answers: it may be half-open.
			l.closeConn()
		}
		d.abort(d.stat.Lost(err), now)
	case outLink:
		d.abort(d.stat.Lost(err), now)
	default:
		if l.addr.scheme != schemeRTU {
			l.closeConn() // resynchronise the stream
		}
		d.stat.Error(ReasonBadFrame, err)
		d.poll.clean = false
		d.fail(j.req, ReasonBadFrame, now)
		l.done(d, j, false)
	}
}

// split replaces a refused merged request by its two halves, read next.
func (l *link) split(d *device, j *job) {
	atoms := j.req.atoms
	h := len(atoms) / 2
	half := func(as []*atom) *job {
		r := &request{table: j.req.table, span: as[0].span, atoms: as}
		for _, a := range as {
			r.end = max(r.end, a.end)
		}
		return &job{req: r, parent: j}
	}
	left, right := half(atoms[:h]), half(atoms[h:])
	j.pending, j.allOK, j.kids = 2, true, [2]*job{left, right}
	p := d.poll
	p.queue = append([]*job{left, right}, p.queue...)
	d.m.splits.Inc()
}

// done records that job j finished (ok: its own request succeeded). When
// both halves of a split request succeeded on their own, what the merged
// request had and they lack is learned: the gap between them, or (when
// they touch) that the merged request was too large.
func (l *link) done(d *device, j *job, ok bool) {
	for p := j.parent; p != nil; j, p = p, p.parent {
		p.pending--
		p.allOK = p.allOK && ok
		if p.pending > 0 {
			return
		}
		if p.allOK {
			left, right := p.kids[0].req, p.kids[1].req
			if right.start > left.end {
				l.learn(d, badRange{table: p.req.table, span: span{left.end, right.start}, gap: true})
			} else if n := max(left.count(), right.count()); d.learnLimit(p.req.table, n) {
				d.poll.learned = true
				d.log.Info("device refuses large requests; reading fewer at a time", "table", p.req.table.String(), "refused", p.req.count(), "max", n)
			}
		}
		ok = false // p's own request failed
	}
}

// learn records a bad range found by fault isolation.
func (l *link) learn(d *device, b badRange) {
	if !d.learn(b) {
		return
	}
	p := d.poll
	p.learned = true
	known := false
	for _, x := range p.before.bad {
		if x.table == b.table && x.span == b.span && x.gap == b.gap {
			known = true
		}
	}
	switch {
	case known:
		d.log.Debug("bad range still refused", "table", b.table.String(), "range", b.span.String())
	case b.gap:
		d.log.Info("device refuses the gap between points; not bridging it", "table", b.table.String(), "range", b.span.String())
	default:
		var names []string
		for _, pt := range d.points {
			if pt.table == b.table && b.overlaps(span{pt.addr, pt.addr + pt.n}) {
				names = append(names, pt.name)
			}
		}
		d.log.Warn("device refuses points; they are Bad until a re-probe reads them",
			"table", b.table.String(), "range", b.span.String(), "reason", b.reason, "points", strings.Join(names, ","))
	}
}

// outcome classifies the result of a request.
type outcome uint8

const (
	outOK outcome = iota
	outException
	outTimeout
	outLink     // the connection or port failed: reconnect
	outBadFrame // something answered, but not a valid response
)

func (o outcome) result() string {
	switch o {
	case outOK:
		return resultOK
	case outException:
		return resultException
	case outTimeout:
		return resultTimeout
	case outLink:
		return resultDisconnected
	}
	return resultBadFrame
}

func outcomeOf(err error) outcome {
	if err == nil {
		return outOK
	}
	var me *modbus.Error
	if errors.As(err, &me) {
		return outException
	}
	var te *timeoutError
	if errors.As(err, &te) || errors.Is(err, serial.ErrTimeout) ||
		strings.Contains(err.Error(), "from serial port within deadline") {
		return outTimeout
	}
	switch devstat.Reason(err) {
	case ferry.ReasonTimeout:
		return outTimeout
	case ferry.ReasonDisconnected, ferry.ReasonConnRefused, "unreachable", "dns":
		return outLink
	}
	var ne net.Error
	var pe *os.PathError
	var errno syscall.Errno
	if errors.As(err, &ne) || errors.As(err, &pe) || errors.As(err, &errno) {
		return outLink
	}
	return outBadFrame
}

// timeoutError marks a timeout the standard library would not recognise
// (serial port, gateway exception 0x0B) so that devstat reports "timeout".
type timeoutError struct{ err error }

func (e *timeoutError) Error() string   { return e.err.Error() }
func (e *timeoutError) Unwrap() error   { return e.err }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

// exceptionReason returns the quality reason for a Modbus exception code.
func exceptionReason(code byte) string {
	switch code {
	case modbus.ExceptionCodeIllegalFunction:
		return "illegal function"
	case modbus.ExceptionCodeIllegalDataAddress:
		return ferry.ReasonIllegalAddress
	case modbus.ExceptionCodeIllegalDataValue:
		return "illegal data value"
	case modbus.ExceptionCodeServerDeviceFailure:
		return "server device failure"
	case modbus.ExceptionCodeAcknowledge:
		return "acknowledge"
	case modbus.ExceptionCodeServerDeviceBusy:
		return "server device busy"
	case modbus.ExceptionCodeMemoryParityError:
		return "memory parity error"
	case modbus.ExceptionCodeGatewayPathUnavailable:
		return "gateway path unavailable"
	case modbus.ExceptionCodeGatewayTargetDeviceFailedToRespond:
		return "gateway target failed to respond"
	}
	return fmt.Sprintf("exception 0x%02X", code)
}
