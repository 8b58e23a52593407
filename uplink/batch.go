package uplink

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/ferry-edge/ferry"
)

// Batching: the pump gathers consecutive telemetry records into one batch
// message, up to batch.max_bytes of body or batch.max_delay after the
// first record, whichever comes first. Before its first publish a batch is
// sealed — its id and its records' sequences committed to the Source's
// StateStore — so that every later send of those records, after a
// failure, a reconnect or a kill -9, is the same batch: the same id and,
// since a record's JSON depends only on the record, the same bytes.
// JetStream's duplicate window drops the copy as it drops a record sent
// again.
//
// A record that belongs to a stored seal is only ever sent in that batch.
// The Source hands records out in sequence order, a failed batch goes back
// whole, so a seal's records come back together; the pump re-assembles
// them and sends the batch when its last record is in (or when a record
// of another batch comes, or max_delay passed: the buffer dropped a
// record meanwhile, under its max_size or max_age). A batch sent again
// without a record dropped meanwhile has the same id: the stream either
// holds the first copy, with every record, or none.

// Test hooks for the kill -9 test (crash_test.go), nil in production:
// testHookSealed is called with a batch's id once its seal is committed,
// before the batch is published; testHookPublished once the stream's
// PubAck for a batch arrived, before its records go to the Source's Ack.
var testHookSealed, testHookPublished func(batchID string)

// batch is the telemetry gathering into one message; the pump's own.
type batch struct {
	recs    []ferry.Record
	body    []byte // batchHead, then the records' elements, comma-separated
	samples int
	seal    *seal     // the stored seal being re-assembled; nil for a new batch
	since   time.Time // when the first record joined
}

func (b *batch) reset() {
	b.recs = nil
	b.body = b.body[:0]
	b.samples = 0
	b.seal = nil
}

// loadSeals reads the stored seals before the first record is taken; false
// when ctx ended first.
func (d *drain) loadSeals(ctx context.Context) bool {
	if d.u.seals == nil {
		return true
	}
	for ctx.Err() == nil {
		n, err := d.u.seals.load()
		if err == nil {
			if n > 0 {
				d.u.log.Info("batches sealed before the last stop are sent again as they were", "batches", n)
			}
			return true
		}
		d.u.m.err(reasonSourceNext)
		d.u.log.Warn("buffer: read batch seals", "err", err)
		if !d.bo.Wait(ctx) {
			return false
		}
	}
	return false
}

// offer takes one record from the Source: alerts, and everything when
// batching is off, are published at once; telemetry joins the batch, and
// full batches wait in d.ready for sendReady. It returns false when ctx
// ended or trouble started: then the record is back in the Source.
func (d *drain) offer(ctx context.Context, rec ferry.Record) bool {
	ss := d.u.seals
	if ss == nil || rec.Lane != ferry.LaneTelemetry {
		if !d.publish(ctx, rec) {
			d.release([]ferry.Record{rec})
			return false
		}
		return true
	}
	b := &d.bat
	s := ss.of(rec.Seq)
	if len(b.recs) > 0 && b.seal != s {
		d.cut()
	}
	limit := d.msgs.batchLimit()
	if len(b.recs) == 0 {
		if cap(b.body) == 0 {
			// Room for as much as the last batch held: a body grown
			// from nothing by append copied itself a dozen times on
			// its way to 256 KiB (a fifth of the drain's garbage).
			b.body = make([]byte, 0, min(max(d.lastBody+d.lastBody/8, 4<<10), limit+limit/8))
		}
		b.body = d.msgs.batchHead(b.body[:0])
		b.seal = s
		b.since = time.Now()
	}
	start := len(b.body)
	if len(b.recs) > 0 {
		b.body = append(b.body, ',')
	}
	body, n, err := d.msgs.element(b.body, rec)
	if err != nil {
		b.body = b.body[:start]
		if len(b.recs) == 0 {
			b.reset()
		}
		d.dropCorrupt(rec, err)
		return true
	}
	b.body = body
	if s == nil && len(b.body) > limit {
		// Too large for this batch: the batch goes without it, and a
		// record too large for any batch goes alone.
		b.body = b.body[:start]
		if len(b.recs) > 0 {
			d.cut()
			return d.offer(ctx, rec)
		}
		b.reset()
		if !d.publish(ctx, rec) {
			d.release([]ferry.Record{rec})
			return false
		}
		return true
	}
	b.recs = append(b.recs, rec)
	b.samples += n
	full := s == nil && len(b.body) >= limit-limit/64
	if full || s != nil && rec.Seq == s.last() {
		d.cut()
	}
	return true
}

// dropCorrupt drops a record that cannot be decoded: it can never be
// sent, and keeping it would stall every record behind it.
func (d *drain) dropCorrupt(rec ferry.Record, err error) {
	d.u.m.err(reasonCorrupt)
	d.u.log.Error("dropping a record that cannot be decoded", "id", rec.ID, "lane", rec.Lane, "bytes", len(rec.Data), "err", err)
	d.mu.Lock()
	d.acked = append(d.acked, rec)
	d.ackMarks = append(d.ackMarks, 0)
	d.mu.Unlock()
	signal(d.ackc)
}

// cut ends the batch gathering: it waits in d.ready to be sealed and sent.
func (d *drain) cut() {
	b := &d.bat
	if len(b.recs) == 0 {
		return
	}
	d.ready = append(d.ready, batch{recs: b.recs, body: b.body, samples: b.samples, seal: b.seal})
	d.lastBody = len(b.body)
	*b = batch{}
}

// sendReady seals the batches cut and publishes them, in order. Their
// seals are stored together — concurrent Puts share the buffer's commit,
// so a backlog costs one fsync per Next rather than one per batch — and
// each batch is published only once its own seal is committed. It returns
// false when it could not send them all: the rest is back in the Source.
func (d *drain) sendReady(ctx context.Context) bool {
	ready := d.ready
	d.ready = nil
	if len(ready) == 0 {
		return true
	}
	errs := make([]error, len(ready))
	var wg sync.WaitGroup
	for i := range ready {
		bt := &ready[i]
		if bt.seal != nil {
			continue
		}
		recs := bt.recs
		bt.seal = &seal{id: recs[0].ID + "-b", key: binary.BigEndian.AppendUint64(nil, recs[0].Seq), seqs: make([]uint64, len(recs))}
		for j, r := range recs {
			bt.seal.seqs[j] = r.Seq
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = d.u.seals.put(bt.seal)
		}()
	}
	wg.Wait()
	for i := range ready {
		bt := &ready[i]
		if errs[i] != nil {
			d.release(bt.recs)
			d.u.m.err(reasonSourceAck)
			d.u.log.Warn("buffer: seal a batch", "err", errs[i])
			continue
		}
		if testHookSealed != nil {
			testHookSealed(bt.seal.id)
		}
		if !d.sendBatch(ctx, bt) {
			for _, rest := range ready[i+1:] {
				d.release(rest.recs)
			}
			return false
		}
	}
	if err := errors.Join(errs...); err != nil {
		d.bo.Wait(ctx)
		return false
	}
	return true
}

// sendBatch publishes one sealed batch; false when it could not (its
// records are back in the Source).
func (d *drain) sendBatch(ctx context.Context, bt *batch) bool {
	s, recs := bt.seal, bt.recs
	if len(bt.body)+2 > d.msgs.maxPayload-len(d.u.batchSubject)-512 {
		// Sealed under a larger max_payload than the server's now: the
		// records go one by one, under their own ids, once the seal is
		// gone (were it kept, a restart would send them as the batch).
		if err := d.u.seals.done([]*seal{s}); err != nil {
			d.release(recs)
			d.u.m.err(reasonSourceAck)
			d.u.log.Warn("buffer: delete a batch seal", "err", err)
			return false
		}
		d.u.log.Warn("a sealed batch exceeds the server's max_payload; its records are sent one by one", "id", s.id, "records", len(recs))
		for i, r := range recs {
			if !d.publish(ctx, r) {
				d.release(recs[i:])
				return false
			}
		}
		return true
	}
	msg, err := d.msgs.batch(s.id, bt.body, bt.samples)
	if err != nil {
		// Only an encoder that cannot start fails here.
		d.release(recs)
		d.u.m.err(reasonPublish)
		d.u.log.Error("compress a batch", "id", s.id, "err", err)
		return false
	}
	if !d.send(ctx, &entry{recs: recs, id: s.id, seal: s}, []outMsg{msg}) {
		d.release(recs)
		return false
	}
	return true
}

// dropBatch hands the records gathered and not published back to the
// Source; a stored seal stays, and the records come back to it.
func (d *drain) dropBatch() {
	d.cut()
	var recs []ferry.Record
	for _, bt := range d.ready {
		recs = append(recs, bt.recs...)
	}
	d.ready = nil
	if len(recs) > 0 {
		d.release(recs)
	}
}
