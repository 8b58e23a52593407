package uplink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/backoff"
)

// drain publishes the Source's records on one connection with a bounded
// window of outstanding publishes, and acknowledges them to the Source
// once the stream has.
//
// Three goroutines share it: the pump (takes records, encodes, publishes),
// nats.go's reply handler (onAck, onErr), and the acker (hands acknowledged
// records back to the Source in groups, so that one buffer transaction
// deletes many records).
type drain struct {
	u    *Uplink
	nc   *nats.Conn
	js   jetstream.JetStream
	plan streamPlan
	msgs *msgBuilder

	mu        sync.Mutex
	parts     map[*nats.Msg]part // outstanding publishes
	count     int                // len(parts)
	bytes     int                // bytes of parts
	acked     []ferry.Record     // acknowledged by the stream, not yet by the Source
	ackMarks  []uint64           // where the stream stored each of acked (0: unknown), for the retention (loss.go)
	ackSeals  []*seal            // seals of the batches in acked
	acking    int                // records in the acker's current Source.Ack call
	failed    []*entry           // to release (or reconcile) before publishing again
	lastSeq   uint64             // highest sequence of the main stream acknowledged
	trouble   error              // why publishing paused; nil when it runs
	interrupt context.CancelFunc // cancels the pump's Next when trouble starts
	reason    string             // trouble's metric reason

	room    chan struct{} // a part resolved or trouble started
	ackc    chan struct{} // acked grew
	ackStop chan struct{} // closed at shutdown: the acker flushes and returns
	ackDone chan struct{} // closed when the acker has returned

	// degraded is set after a failure until the next PubAck.
	degraded atomic.Bool

	// stored holds, by record id, the part ids of multi-part records that
	// reconcile found in the stream while others were missing: when the
	// record comes back from the Source, only the missing parts are sent
	// (see reconcile). The pump's; bounded by maxStoredParts.
	stored map[string]map[string]bool

	bat      batch            // telemetry records gathering into a batch (the pump's)
	lastBody int              // bytes of the last batch cut, to size the next one
	ready    []batch          // batches cut, to seal and send (the pump's)
	bo       *backoff.Backoff // the pump's
}

// part is one published message; a record is one message, or several when
// it exceeds the server's max_payload; a batch is one message.
type part struct {
	e       *entry
	idx     int // the part's place in its record's messages (0: the first)
	size    int
	samples int
	sent    time.Time
}

// entry is one record in flight, or the records of one batch.
type entry struct {
	recs  []ferry.Record
	id    string // Nats-Msg-Id: the record's (before -p<n>), or the batch's
	seal  *seal  // the batch's seal
	parts int    // unresolved parts
	total int    // parts published
	// partIDs are the ids of the parts published when they are not
	// <id>-p1…-p<total> (a record sent without the parts the stream
	// already held); nil otherwise.
	partIDs []string
	// skipped are the ids of the parts not published because the stream
	// held them (see skipStored).
	skipped []string
	failed  bool
	// uncertain: a part failed without an answer (ack timeout,
	// disconnect), so the stream may hold it.
	uncertain bool
	// after is the highest stream sequence acknowledged when the record
	// was published: a stored copy has a higher one.
	after uint64
	// streamSeq is where the stream stored the first part (0 until its
	// PubAck).
	streamSeq uint64
	sent      time.Time
}

func newDrain(u *Uplink, nc *nats.Conn) *drain {
	return &drain{
		u:       u,
		nc:      nc,
		msgs:    newMsgBuilder(u, nc.MaxPayload()),
		parts:   map[*nats.Msg]part{}, // grows to what is in flight, not max_inflight
		room:    make(chan struct{}, 1),
		ackc:    make(chan struct{}, 1),
		ackStop: make(chan struct{}),
		ackDone: make(chan struct{}),
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// onAck is called by nats.go for every PubAck, on its reply goroutine.
func (d *drain) onAck(_ jetstream.JetStream, m *nats.Msg, pa *jetstream.PubAck) {
	d.mu.Lock()
	p, ok := d.take(m)
	if !ok {
		d.mu.Unlock()
		return
	}
	if pa.Stream == d.u.cfg.Stream && pa.Sequence > d.lastSeq {
		d.lastSeq = pa.Sequence
	}
	if p.idx == 0 && pa.Stream == d.u.cfg.Stream {
		p.e.streamSeq = pa.Sequence
	}
	done := p.e.parts == 0 && !p.e.failed
	if done && p.e.seal != nil && testHookPublished != nil {
		testHookPublished(p.e.id)
	}
	if done {
		d.acked = append(d.acked, p.e.recs...)
		d.ackMarks = marksFor(d.ackMarks, len(p.e.recs), markOf(p.e))
		if p.e.seal != nil {
			d.ackSeals = append(d.ackSeals, p.e.seal)
		}
	}
	d.mu.Unlock()

	if d.degraded.Load() && d.degraded.CompareAndSwap(true, false) {
		d.u.setState(nil, "")
	}
	mt := d.u.m
	// Records, not messages: a batch counts each of its records.
	mt.ack[laneIndex(p.e.recs[0].Lane)].Add(float64(len(p.e.recs)))
	mt.ackLatency.Observe(time.Since(p.sent).Seconds())
	if p.samples > 0 {
		mt.samples.Add(float64(p.samples))
	}
	if pa.Duplicate {
		mt.duplicates.Inc()
	}
	signal(d.room)
	if done {
		signal(d.ackc)
	}
}

// onErr is called by nats.go when a publish failed: an error reply, no
// PubAck within ack_timeout, or a disconnect with the publish outstanding.
func (d *drain) onErr(_ jetstream.JetStream, m *nats.Msg, err error) {
	uncertain := errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrTimeout)
	d.resolveFailed(m, err, uncertain)
}

// resolveFailed records that the publish of m failed; uncertain when the
// message may have been stored all the same.
func (d *drain) resolveFailed(m *nats.Msg, err error, uncertain bool) {
	reason := publishReason(err)
	d.mu.Lock()
	p, ok := d.take(m)
	if !ok {
		d.mu.Unlock()
		return
	}
	p.e.uncertain = p.e.uncertain || uncertain
	if !p.e.failed {
		p.e.failed = true
		d.failed = append(d.failed, p.e)
	}
	if d.trouble == nil {
		// Without the record id, so that the same failure repeated is
		// one state (logged once).
		d.trouble = fmt.Errorf("publish: %w", err)
		d.reason = reason
		d.interruptNext()
	}
	d.mu.Unlock()
	d.u.m.err(reason)
	d.u.log.Debug("publish failed", "id", p.e.id, "err", err)
	signal(d.room)
}

// take removes the in-flight part published as m (d.mu held) and
// updates the in-flight counts; ok is false when m was resolved already.
func (d *drain) take(m *nats.Msg) (p part, ok bool) {
	p, ok = d.parts[m]
	if !ok {
		return part{}, false
	}
	delete(d.parts, m)
	d.count--
	d.bytes -= p.size
	p.e.parts--
	d.u.m.inflight.Set(float64(d.count))
	d.u.m.inflightBytes.Set(float64(d.bytes))
	return p, true
}

func publishReason(err error) string {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return reasonTimeout
	case errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting):
		return reasonDisconnected
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return reasonNoStream
	case errors.As(err, &apiErr):
		return reasonRejected
	case errors.Is(err, errSourceAck):
		return reasonSourceAck
	}
	return reasonPublish
}

var errSourceAck = errors.New("buffer ack")

func laneIndex(l ferry.Lane) int {
	if int(l) < ferry.NumLanes {
		return int(l)
	}
	return int(ferry.LaneTelemetry)
}

func (d *drain) currentPlan() streamPlan {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.plan
}

// troubled reports whether publishing is paused.
func (d *drain) troubled() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.trouble != nil
}

// used is how much of the count window is taken: messages outstanding and
// records acknowledged by the stream but not yet deleted by the Source.
// The window bounds both, so that the Source never has more than
// max_inflight records out. Call with d.mu held.
func (d *drain) used() int { return d.count + len(d.acked) + d.acking }

// waitRoom waits until parts more messages of size bytes fit in the window
// (a record larger than the byte window goes alone), or until trouble
// starts or ctx ends (false).
func (d *drain) waitRoom(ctx context.Context, parts, size int) bool {
	for ctx.Err() == nil {
		d.mu.Lock()
		used := d.used()
		fits := used == 0 || used+parts <= d.u.cfg.MaxInflight && d.bytes+size <= int(d.u.cfg.MaxInflightBytes)
		trouble := d.trouble != nil
		d.mu.Unlock()
		if trouble {
			return false
		}
		if fits {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-d.room:
		}
	}
	return false
}

// pump takes records from the Source and publishes them until ctx ends.
func (d *drain) pump(ctx context.Context, ev *connEvents, bo *backoff.Backoff) {
	cfg := &d.u.cfg
	d.bo = bo
	// Records gathered and not yet published go back to the Source.
	defer d.dropBatch()
	if !d.loadSeals(ctx) {
		return
	}
	for ctx.Err() == nil {
		if bo.Attempt() > 0 && !d.degraded.Load() {
			bo.Reset() // publishing works again
		}
		if d.troubled() {
			d.dropBatch()
			d.recover(ctx, ev, bo)
			continue
		}
		var due time.Time
		if len(d.bat.recs) > 0 {
			due = d.bat.since.Add(cfg.Batch.MaxDelay)
			if !time.Now().Before(due) {
				d.cut()
				d.sendReady(ctx)
				continue
			}
		}

		// Ask for a full batch only when the window has room for it; a
		// smaller request keeps the window bounded.
		if !d.waitRoom(ctx, 1, 1) {
			continue
		}
		d.mu.Lock()
		// Records gathering into a batch are out of the Source too.
		n := min(cfg.BatchSize, cfg.MaxInflight-d.used()-len(d.bat.recs))
		nb := min(int(cfg.BatchBytes), int(cfg.MaxInflightBytes)-d.bytes)
		d.mu.Unlock()
		if n <= 0 && len(d.bat.recs) > 0 {
			d.cut()
			d.sendReady(ctx)
			continue
		}
		recs, err := d.next(ctx, max(n, 1), max(nb, 1), due)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if d.troubled() {
				continue // interrupted: the failed records wait for recover
			}
			if errors.Is(err, errBatchDue) {
				continue // the batch is due: sent at the top of the loop
			}
			d.u.m.err(reasonSourceNext)
			d.u.log.Warn("buffer next", "err", err)
			if !bo.Wait(ctx) {
				return
			}
			continue
		}
		for i := range recs {
			if !d.offer(ctx, recs[i]) {
				d.u.src.Release(recs[i+1:]...)
				d.u.m.released.Add(float64(len(recs) - i - 1))
				break
			}
		}
		// The batches this Next filled: sealed together, then sent.
		d.sendReady(ctx)
	}
}

// errBatchDue is returned by next when the batch's max_delay came before
// more records.
var errBatchDue = errors.New("batch due")

// next calls the Source's Next with a context that trouble cancels: when
// every record is out and publishes fail, the pump must not sit in Next
// while the failed records wait for it to release them. A batch waiting
// to be sent ends the wait at due.
func (d *drain) next(ctx context.Context, n, nb int, due time.Time) ([]ferry.Record, error) {
	nctx, cancel := context.WithCancel(ctx)
	if !due.IsZero() {
		cancel()
		nctx, cancel = context.WithDeadline(ctx, due)
	}
	defer cancel()
	d.mu.Lock()
	if d.trouble != nil {
		d.mu.Unlock()
		return nil, context.Canceled
	}
	d.interrupt = cancel
	d.mu.Unlock()
	recs, err := d.u.src.Next(nctx, n, nb)
	d.mu.Lock()
	d.interrupt = nil
	d.mu.Unlock()
	if err != nil && ctx.Err() == nil && errors.Is(nctx.Err(), context.DeadlineExceeded) {
		return nil, errBatchDue
	}
	return recs, err
}

// interruptNext cancels a pending Next. Call with d.mu held.
func (d *drain) interruptNext() {
	if d.interrupt != nil {
		d.interrupt()
	}
}

// publish encodes rec and publishes its message(s). It returns false, and
// publishes nothing, when ctx ended or trouble started before there was
// room; the caller releases rec then.
func (d *drain) publish(ctx context.Context, rec ferry.Record) bool {
	msgs, err := d.msgs.build(rec)
	if err != nil {
		// A record that cannot be decoded can never be sent; keeping it
		// would stall every record behind it. It is dropped, loudly.
		d.dropCorrupt(rec, err)
		return true
	}
	e := &entry{recs: []ferry.Record{rec}, id: rec.ID}
	msgs, e.partIDs, e.skipped = d.skipStored(rec.ID, msgs)
	return d.send(ctx, e, msgs)
}

// send publishes the message(s) of e. It returns false, and publishes
// nothing, when ctx ended or trouble started before there was room; the
// caller releases e's records then.
func (d *drain) send(ctx context.Context, e *entry, msgs []outMsg) bool {
	size := 0
	for _, m := range msgs {
		size += m.size
	}
	if !d.waitRoom(ctx, len(msgs), size) {
		return false
	}
	now := time.Now()
	d.mu.Lock()
	e.parts, e.total, e.after, e.sent = len(msgs), len(msgs), d.lastSeq, now
	for i, m := range msgs {
		d.parts[m.msg] = part{e: e, idx: i, size: m.size, samples: m.samples, sent: now}
	}
	d.count += len(msgs)
	d.bytes += size
	d.u.m.inflight.Set(float64(d.count))
	d.u.m.inflightBytes.Set(float64(d.bytes))
	d.mu.Unlock()
	lane := laneIndex(e.recs[0].Lane)
	for i, m := range msgs {
		if _, err := d.js.PublishMsgAsync(m.msg); err != nil {
			// This part and those after it were never sent.
			for _, r := range msgs[i:] {
				d.resolveFailed(r.msg, err, false)
			}
			break
		}
		d.u.m.pub[lane].Inc()
		d.u.m.bytes.Add(float64(m.size))
	}
	return true
}

// recover runs after a failure: it waits until every outstanding publish
// has resolved, hands the failed records back to the Source, backs off,
// waits for the connection and checks the stream again.
func (d *drain) recover(ctx context.Context, ev *connEvents, bo *backoff.Backoff) {
	for {
		d.mu.Lock()
		n := d.count
		d.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-d.room:
		}
	}
	d.mu.Lock()
	trouble, reason := d.trouble, d.reason
	d.mu.Unlock()
	if reason != reasonDisconnected || d.nc.IsConnected() {
		d.u.setState(trouble, reason) // counted when it happened
	}
	// Else the publishes failed because the connection is down: the
	// connection's handlers keep the state (disconnected, and why each
	// reconnect attempt fails), which says more than "outbound buffer
	// limit exceeded".
	for {
		if !waitOrClosed(ctx, ev.closed, bo) {
			return
		}
		if !d.nc.IsConnected() {
			select {
			case <-ctx.Done():
				return
			case <-ev.closed:
				return
			case <-ev.changed:
			}
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 2*d.u.cfg.ConnectTimeout)
		plan, err := d.u.ensureStreams(sctx, d.js)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.u.fail(err, streamReason(err))
			continue
		}
		for _, w := range plan.warnings {
			d.u.log.Debug(w)
		}
		d.mu.Lock()
		d.plan = plan
		d.lastSeq = max(d.lastSeq, plan.lastSeq)
		failed := d.failed
		d.failed = nil
		d.mu.Unlock()
		// Before anything is sent again: records whose fate is unknown
		// and whose replay would come too late for the stream's dedupe
		// are looked up in the stream.
		delivered, rest := d.reconcile(ctx, failed)
		if len(delivered) > 0 {
			d.mu.Lock()
			for _, e := range delivered {
				d.acked = append(d.acked, e.recs...)
				// Where the stream holds them is not known here: they are
				// not retained.
				d.ackMarks = append(d.ackMarks, make([]uint64, len(e.recs))...)
				if e.seal != nil {
					d.ackSeals = append(d.ackSeals, e.seal)
				}
			}
			d.mu.Unlock()
			signal(d.ackc)
		}
		d.releaseEntries(rest)
		// The server may have come back with less than it acknowledged.
		signal(ev.lossKick)
		d.mu.Lock()
		d.trouble = nil
		d.reason = ""
		d.mu.Unlock()
		// Healthy again once a PubAck arrives (onAck), not before: a
		// failure that repeats does not flap between "not ready" and
		// "back". With nothing to send again, it is healthy now.
		if len(rest) > 0 {
			d.degraded.Store(true)
		} else {
			d.u.setState(nil, "")
		}
		return
	}
}

func (d *drain) releaseEntries(es []*entry) {
	var recs []ferry.Record
	for _, e := range es {
		recs = append(recs, e.recs...)
	}
	d.release(recs)
}

// release hands records back to the Source, in lane and sequence order.
func (d *drain) release(recs []ferry.Record) {
	if len(recs) == 0 {
		return
	}
	slices.SortFunc(recs, func(a, b ferry.Record) int {
		return cmp.Or(cmp.Compare(a.Lane, b.Lane), cmp.Compare(a.Seq, b.Seq))
	})
	d.u.src.Release(recs...)
	d.u.m.released.Add(float64(len(recs)))
}

// ackLoop hands acknowledged records to the Source. While one Ack call
// runs (a buffer transaction), the next group gathers.
func (d *drain) ackLoop() {
	defer close(d.ackDone)
	for {
		stop := false
		select {
		case <-d.ackc:
		case <-d.ackStop:
			stop = true
		}
		for {
			d.mu.Lock()
			recs, seals, marks := d.acked, d.ackSeals, d.ackMarks
			d.acked, d.ackSeals, d.ackMarks = nil, nil, nil
			d.acking = len(recs)
			d.mu.Unlock()
			if len(recs) == 0 {
				break
			}
			err := d.u.ack(recs, marks)
			if err == nil && len(seals) > 0 {
				// After the records: the Source deletes them no later
				// than the commit that deletes their seals.
				if serr := d.u.seals.done(seals); serr != nil {
					d.u.m.err(reasonSourceAck)
					d.u.log.Warn("could not delete the seals of acknowledged batches; they are removed at the next start", "err", serr)
				}
			}
			d.mu.Lock()
			d.acking = 0
			d.mu.Unlock()
			signal(d.room)
			if err != nil {
				d.u.m.err(reasonSourceAck)
				d.mu.Lock()
				d.failed = append(d.failed, &entry{recs: recs})
				if d.trouble == nil {
					d.trouble = fmt.Errorf("%w: %w", errSourceAck, err)
					d.reason = reasonSourceAck
					d.interruptNext()
				}
				d.mu.Unlock()
				signal(d.room)
				break
			}
			d.u.m.lag.Set(d.u.opts.Now().Sub(recs[len(recs)-1].Time).Seconds())
			if !stop {
				break
			}
		}
		if stop {
			return
		}
	}
}

// shutdown gives outstanding publishes up to timeout to be acknowledged,
// then releases whatever is left and stops the acker. The pump has
// returned.
func (d *drain) shutdown(timeout time.Duration) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for !d.nc.IsClosed() {
		d.mu.Lock()
		n := d.count
		d.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-t.C:
			d.u.log.Warn("uplink flush timed out; outstanding records go back to the buffer", "outstanding", n, "timeout", timeout)
		case <-d.room:
			continue
		}
		break
	}
	d.mu.Lock()
	var left []ferry.Record
	seen := map[*entry]bool{}
	for _, p := range d.parts {
		if !p.e.failed && !seen[p.e] {
			seen[p.e] = true
			left = append(left, p.e.recs...)
		}
	}
	clear(d.parts)
	d.count, d.bytes = 0, 0
	d.u.m.inflight.Set(0)
	d.u.m.inflightBytes.Set(0)
	d.mu.Unlock()
	// The acker hands over what was acknowledged; what it cannot, it
	// adds to failed.
	close(d.ackStop)
	<-d.ackDone
	d.mu.Lock()
	for _, e := range d.failed {
		left = append(left, e.recs...)
	}
	d.failed = nil
	d.mu.Unlock()
	d.release(left)
}
