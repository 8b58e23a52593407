package buffer

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
)

// Next blocks until records are ready (or ctx ends, or the buffer closes)
// and returns up to max of them, with at most maxBytes of Data between them
// but at least one: every ready alert before any telemetry, each lane in
// sequence order. The records are in flight until Ack or Release; Next does
// not return them again before that, or before a restart. Data is copied
// out of the store and belongs to the caller.
//
// A stored record that fails its checksum is dropped (counted as
// reason="corrupt", logged) instead of being returned.
func (b *Buffer) Next(ctx context.Context, max, maxBytes int) ([]ferry.Record, error) {
	return b.next(ctx, 0, max, maxBytes)
}

// next is Next for consumer c.
func (b *Buffer) next(ctx context.Context, c, max, maxBytes int) ([]ferry.Record, error) {
	if max < 1 {
		max = 1
	}
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, ferry.ErrClosed
		}
		picks := b.pick(c, max, maxBytes)
		wait := b.avail
		b.mu.Unlock()
		if len(picks) > 0 {
			recs, err := b.read(c, picks)
			if err != nil || len(recs) > 0 {
				return recs, err
			}
			continue // every pick was damaged
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wait:
		}
	}
}

type pick struct {
	lane ferry.Lane
	seq  uint64
}

// pick marks up to max records ready for consumer c in flight for it,
// alerts first. b.mu is held.
func (b *Buffer) pick(c, max, maxBytes int) []pick {
	var picks []pick
	bytes := 0
	for l := range b.lanes {
		li := &b.lanes[l]
		i := li.nextFor(li.hints[c], c)
		if i < 0 {
			li.hints[c] = len(li.ents)
			continue
		}
		li.hints[c] = i
		for ; i >= 0 && len(picks) < max; i = li.nextFor(i+1, c) {
			n := int(li.ents[i].size) - keySize - valueHeader - recordOverhead
			if len(picks) > 0 && bytes+n > maxBytes {
				return picks
			}
			li.take(i, c)
			picks = append(picks, pick{ferry.Lane(l), li.ents[i].seq})
			bytes += n
		}
		if len(picks) >= max {
			return picks
		}
	}
	return picks
}

// read copies the picked records out of the store. A record that is
// missing or damaged is dropped (for every consumer); on a read error the
// picks are released.
func (b *Buffer) read(c int, picks []pick) ([]ferry.Record, error) {
	recs := make([]ferry.Record, 0, len(picks))
	var bad []pick
	var badErr []error
	err := b.viewDB(func(tx *bolt.Tx) error {
		var bk *bolt.Bucket
		var c *bolt.Cursor
		lane := ferry.Lane(255)
		var key [keySize]byte
		var k, v []byte
		// One copy for all the data, in arenas sized by what is left to
		// read (a record's size times the picks left, at most 64 KiB): a
		// read of one small record used to allocate and clear 64 KiB.
		var arena []byte
		for i, p := range picks {
			if p.lane != lane {
				lane = p.lane
				if bk = tx.Bucket(laneBuckets[lane]); bk == nil {
					return fmt.Errorf("bucket %s is missing", laneBuckets[lane])
				}
				c = bk.Cursor()
				k = nil
			}
			seqKey(key[:0], p.seq)
			// The picks of a lane are mostly consecutive: step the
			// cursor, seek when it falls behind by more than a little.
			for steps := 0; k != nil && string(k) < string(key[:]) && steps < 8; steps++ {
				k, v = c.Next()
			}
			if k == nil || string(k) != string(key[:]) {
				k, v = c.Seek(key[:])
			}
			if k == nil || string(k) != string(key[:]) {
				bad = append(bad, p)
				badErr = append(badErr, errors.New("missing"))
				continue
			}
			t, data, err := parseValue(k, v)
			if err != nil {
				bad = append(bad, p)
				badErr = append(badErr, err)
				continue
			}
			if cap(arena)-len(arena) < len(data) {
				arena = make([]byte, 0, max(len(data), min(len(data)*(len(picks)-i), 64<<10)))
			}
			off := len(arena)
			arena = append(arena, data...)
			recs = append(recs, ferry.Record{
				Lane: lane,
				Seq:  p.seq,
				ID:   ferry.RecordID(b.opts.Gateway, lane, p.seq),
				Time: timeOf(t),
				Data: arena[off:len(arena):len(arena)],
			})
		}
		return nil
	})
	if err != nil {
		b.release(c, recordsOf(picks))
		return nil, fmt.Errorf("buffer: read %s: %w", b.path, err)
	}
	if len(bad) > 0 {
		b.mu.Lock()
		for i, p := range bad {
			li := &b.lanes[p.lane]
			if j := li.find(p.seq); j >= 0 && li.remove(j) {
				b.acks[p.lane] = append(b.acks[p.lane], p.seq)
			}
			b.log.Warn("damaged record dropped", "id", ferry.RecordID(b.opts.Gateway, p.lane, p.seq), "err", badErr[i])
		}
		b.mu.Unlock()
		for _, p := range bad {
			b.m.dropped(p.lane, reasonCorrupt, 1)
		}
		b.otherDrops.Add(uint64(len(bad)))
		b.signal()
	}
	return recs, nil
}

func recordsOf(picks []pick) []ferry.Record {
	recs := make([]ferry.Record, len(picks))
	for i, p := range picks {
		recs[i] = ferry.Record{Lane: p.lane, Seq: p.seq}
	}
	return recs
}

// Ack deletes records the upstream has acknowledged. They are never
// offered again by this process; the deletion is committed with the next
// commit (within Options.Linger, or by Flush): if ferry dies before that,
// they are offered again after the restart with the same ids, and
// JetStream's duplicate window drops them. Acking a record that is not
// stored (already acked, or dropped by a bound) does nothing. Ack returns
// ferry.ErrClosed after Close.
//
// With several consumers (Options.Consumers) Ack is the first consumer's
// (see Cursor.Ack): a record is deleted once every consumer acknowledged it.
func (b *Buffer) Ack(recs ...ferry.Record) error { return b.ack(0, recs) }

// ack records consumer c's acknowledgement of recs: a record no consumer
// has pending any more is queued for deletion; otherwise c's mark is
// queued, so that a restart does not offer it to c again.
func (b *Buffer) ack(c int, recs []ferry.Record) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ferry.ErrClosed
	}
	n := 0
	var acked [ferry.NumLanes]int
	for _, r := range recs {
		if int(r.Lane) >= len(b.lanes) {
			continue
		}
		li := &b.lanes[r.Lane]
		i := li.find(r.Seq)
		if i < 0 {
			continue
		}
		ok, last := li.ack(i, c)
		if !ok {
			continue
		}
		n++
		acked[r.Lane]++
		if last {
			b.acks[r.Lane] = append(b.acks[r.Lane], r.Seq)
		} else {
			b.marks = append(b.marks, markOp{lane: r.Lane, seq: r.Seq, name: b.consumers[c]})
		}
	}
	b.mu.Unlock()
	if n > 0 {
		b.cm.ackedN(c, acked)
		b.signal()
	}
	return nil
}

// Stored reports whether the record of lane and seq is still stored:
// neither acknowledged nor dropped (it may be in flight). Sequences do not
// repeat, so a record acknowledged is never stored again (only a drop
// whose commit fails puts its records back).
func (b *Buffer) Stored(lane ferry.Lane, seq uint64) bool {
	if int(lane) >= len(b.lanes) {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	li := &b.lanes[lane]
	i := li.find(seq)
	return i >= 0 && li.ents[i].state != gone
}

// Release puts records that were returned by Next, and not acknowledged,
// back: Next offers them again, ahead of later records of their lane.
func (b *Buffer) Release(recs ...ferry.Record) { b.release(0, recs) }

// release is Release for consumer c.
func (b *Buffer) release(c int, recs []ferry.Record) {
	b.mu.Lock()
	n := 0
	for _, r := range recs {
		if int(r.Lane) >= len(b.lanes) {
			continue
		}
		li := &b.lanes[r.Lane]
		if i := li.find(r.Seq); i >= 0 && li.release(i, c) {
			n++
		}
	}
	if n > 0 && !b.closed {
		close(b.avail)
		b.avail = make(chan struct{})
	}
	b.mu.Unlock()
}
