package buffer

import (
	"encoding/binary"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
)

// Retention of acknowledged records (issue 28). An upstream may lose what
// it acknowledged: nats-server answers a publish before it syncs its store
// (sync_interval, 2 minutes by default), so a power cut of the server
// takes back every message acknowledged since its last sync. With
// Config.RetainAcked > 0 a record acknowledged with AckKeep is not
// deleted but moved, in the commit that takes it off the forward queue,
// into a bucket of its own (state/buffer-acked), with the mark the
// uplink gave it (where the upstream stored it). It stays there for
// retain_acked, and until a check of the upstream that started
// retain_acked after its acknowledgement (KeptChecked), bounded by
// retain_max_size (the oldest go first), so that the uplink can check the
// upstream and send again what it lost, with the record's id and bytes.
//
// The retention is not part of the forward backlog: its records are never
// offered by Next, and its bytes do not count against max_size (the file
// may hold up to retain_max_size more).
//
//	state/buffer-acked   lane:u8 seq:u64be → mark:u64be ackTime:i64be then the record's stored value

// keptBucket is the retention's bucket, under the state bucket so that
// compaction and salvage carry it like the rest of the state.
const keptBucket = "buffer-acked"

const (
	keptKeySize = 1 + keySize
	keptHeader  = 16
	// expiredMax is how many expired records are remembered (in memory)
	// so that a loss reaching past the retention can be reported with
	// its ids.
	expiredMax = 1 << 16
	// keptExpirePerCycle bounds the expiry work of one commit.
	keptExpirePerCycle = 1 << 14
)

type keptEnt struct {
	seq  uint64
	mark uint64
	at   int64 // when it was (last) acknowledged, unix ns
	size int32
	// renewed: acknowledged again (sent again after a loss), so at is
	// younger than the entries after it may be.
	renewed bool
}

// keptLane is one lane's retained records, by sequence (acks come nearly in
// sequence order, so inserts are appends).
type keptLane struct {
	ents []keptEnt
	head int
}

func (k *keptLane) live() []keptEnt { return k.ents[k.head:] }

func (k *keptLane) find(seq uint64) int {
	ents := k.live()
	i := sort.Search(len(ents), func(i int) bool { return ents[i].seq >= seq })
	if i < len(ents) && ents[i].seq == seq && ents[i].mark != 0 {
		return k.head + i
	}
	return -1
}

func (k *keptLane) insert(e keptEnt) {
	n := len(k.ents)
	if n == k.head || k.ents[n-1].seq < e.seq {
		k.ents = append(k.ents, e)
		return
	}
	i := k.head + sort.Search(n-k.head, func(i int) bool { return k.ents[k.head+i].seq >= e.seq })
	if i < n && k.ents[i].seq == e.seq {
		k.ents[i] = e
		return
	}
	k.ents = append(k.ents, keptEnt{})
	copy(k.ents[i+1:], k.ents[i:])
	k.ents[i] = e
}

func (k *keptLane) pop() { k.head++ }

// compact gives back the room of popped entries.
func (k *keptLane) compact() {
	if k.head > 1024 && k.head*2 > len(k.ents) {
		k.ents = append(k.ents[:0], k.ents[k.head:]...)
		k.head = 0
	}
}

// keptOp is a change of the retention for the writer's next commit.
type keptOp struct {
	lane ferry.Lane
	seq  uint64
	mark uint64
	at   int64
	kind uint8 // opMove, opUpdate, opDelete
}

const (
	opMove uint8 = iota
	opUpdate
	opDelete
)

// expiredList is the last expiredMax records that left the retention,
// oldest first, as runs: the records of one upstream message have
// consecutive sequences and the same mark, and leave together, so a run
// of them is one entry (24 bytes) instead of one each. A list of 65,536
// records one entry each was 1.5 MiB, a quarter of the live heap in the
// soak (issue 27), and grew for the first hour of a run; as runs of the
// soak's ~17 records a message it is under 100 KiB. Worst case (one
// record a message) it is what it was.
type expiredList struct {
	runs    []expiredRun // runs[head:] are live
	head    int
	records int
}

type expiredRun struct {
	seq  uint64 // the first
	mark uint64
	n    uint32
	lane ferry.Lane
}

// add appends a record that left the retention and forgets the oldest
// beyond expiredMax.
func (x *expiredList) add(lane ferry.Lane, seq, mark uint64) {
	if k := len(x.runs); k > x.head {
		if r := &x.runs[k-1]; r.lane == lane && r.mark == mark && r.seq+uint64(r.n) == seq {
			r.n++
			x.records++
			x.trim()
			return
		}
	}
	x.runs = append(x.runs, expiredRun{seq: seq, mark: mark, n: 1, lane: lane})
	x.records++
	x.trim()
}

func (x *expiredList) trim() {
	for x.records > expiredMax {
		r := &x.runs[x.head]
		r.seq++
		r.n--
		x.records--
		if r.n == 0 {
			x.head++
		}
	}
	// Give back the room of forgotten runs once they are a quarter.
	if x.head >= 256 && x.head*4 >= len(x.runs) {
		x.runs = append(x.runs[:0], x.runs[x.head:]...)
		x.head = 0
	}
}

// each calls fn for every record, oldest first.
func (x *expiredList) each(fn func(lane ferry.Lane, seq, mark uint64)) {
	for _, r := range x.runs[x.head:] {
		for i := range uint64(r.n) {
			fn(r.lane, r.seq+i, r.mark)
		}
	}
}

// retention is the Buffer's retention state, guarded by Buffer.mu.
type retention struct {
	lanes   [ferry.NumLanes]keptLane
	bytes   int64
	records int
	ops     []keptOp // for the writer
	expired expiredList
}

// AckKeep is Ack for records the upstream stored: each record is deleted
// from the forward queue and, when the retention is on and marks[i] is not
// 0, kept for retain_acked with marks[i] (opaque to the buffer: the
// uplink's note of where the upstream stored it). A record already
// retained (sent again after the upstream lost it) gets the new mark and
// a new retention time. With the retention off AckKeep is Ack.
func (b *Buffer) AckKeep(recs []ferry.Record, marks []uint64) error {
	if len(marks) != len(recs) {
		return fmt.Errorf("buffer: AckKeep: %d marks for %d records", len(marks), len(recs))
	}
	if b.RetainWindow() <= 0 {
		return b.Ack(recs...)
	}
	now := b.now().UnixNano()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ferry.ErrClosed
	}
	n := 0
	rt := &b.kept
	for i, r := range recs {
		if int(r.Lane) >= len(b.lanes) {
			continue
		}
		li := &b.lanes[r.Lane]
		if j := li.find(r.Seq); j >= 0 {
			size := li.ents[j].size
			if !li.remove(j) {
				continue
			}
			b.acks[r.Lane] = append(b.acks[r.Lane], r.Seq)
			n++
			if marks[i] == 0 {
				continue
			}
			sz := int32(size) + keptHeader + 1
			rt.lanes[r.Lane].insert(keptEnt{seq: r.Seq, mark: marks[i], at: now, size: sz})
			rt.bytes += int64(sz)
			rt.records++
			rt.ops = append(rt.ops, keptOp{lane: r.Lane, seq: r.Seq, mark: marks[i], at: now, kind: opMove})
			continue
		}
		kl := &rt.lanes[r.Lane]
		if j := kl.find(r.Seq); j >= 0 && marks[i] != 0 {
			kl.ents[j].mark, kl.ents[j].at, kl.ents[j].renewed = marks[i], now, true
			rt.ops = append(rt.ops, keptOp{lane: r.Lane, seq: r.Seq, mark: marks[i], at: now, kind: opUpdate})
			n++
		}
	}
	b.mu.Unlock()
	if n > 0 {
		b.signal()
	}
	return nil
}

// RetainWindow is how long acknowledged records are kept (retain_acked);
// 0 when the retention is off. The retention serves a buffer with one
// consumer: with several (Options.Consumers) it is off, and AckKeep is Ack.
func (b *Buffer) RetainWindow() int64 {
	if len(b.consumers) > 1 {
		return 0
	}
	return int64(b.cfg.RetainAcked)
}

// KeptChecked tells the retention that a check of the upstream that
// started at t found every retained record there (or sent the missing
// ones again). A record leaves the retention only once it is retain_acked
// old and a check started retain_acked after its acknowledgement: the
// upstream's unsynced window has passed and a look at the upstream since
// found it. While the upstream cannot be checked (down, unreachable),
// nothing expires but by retain_max_size. Until the first call of a run
// nothing expires by time.
func (b *Buffer) KeptChecked(t time.Time) {
	ns := t.UnixNano()
	for {
		old := b.keptChecked.Load()
		if ns <= old || b.keptChecked.CompareAndSwap(old, ns) {
			return
		}
	}
}

// EachKept calls fn for every retained record, lane by lane in sequence
// order, with its mark. fn is called outside the buffer's locks.
func (b *Buffer) EachKept(fn func(lane ferry.Lane, seq, mark uint64)) {
	type ref struct {
		lane      ferry.Lane
		seq, mark uint64
	}
	b.mu.Lock()
	refs := make([]ref, 0, b.kept.records)
	for l := range b.kept.lanes {
		for _, e := range b.kept.lanes[l].live() {
			if e.mark == 0 {
				continue
			}
			refs = append(refs, ref{ferry.Lane(l), e.seq, e.mark})
		}
	}
	b.mu.Unlock()
	for _, r := range refs {
		fn(r.lane, r.seq, r.mark)
	}
}

// EachExpired calls fn for the most recent records that left the
// retention (up to 65536, oldest first, lost at a restart): what the
// uplink reports when a loss reaches past the retention.
func (b *Buffer) EachExpired(fn func(lane ferry.Lane, seq, mark uint64)) {
	b.mu.Lock()
	x := &b.kept.expired
	out := expiredList{runs: append([]expiredRun(nil), x.runs[x.head:]...), records: x.records}
	b.mu.Unlock()
	out.each(fn)
}

// KeptStats is what the retention holds now.
func (b *Buffer) KeptStats() (records int, bytes int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.kept.records, b.kept.bytes
}

// ReadKept returns the retained records of lane with the given sequences
// (those still retained), with their ids and data, in the order asked.
func (b *Buffer) ReadKept(lane ferry.Lane, seqs []uint64) ([]ferry.Record, error) {
	var recs []ferry.Record
	err := b.viewDB(func(tx *bolt.Tx) error {
		bk := keptBucketOf(tx)
		if bk == nil {
			return nil
		}
		var key [keptKeySize]byte
		for _, seq := range seqs {
			keptKey(key[:0], lane, seq)
			v := bk.Get(key[:])
			if len(v) < keptHeader {
				continue
			}
			t, data, err := parseValue(key[1:], v[keptHeader:])
			if err != nil {
				b.log.Warn("damaged retained record skipped", "id", ferry.RecordID(b.opts.Gateway, lane, seq), "err", err)
				continue
			}
			recs = append(recs, ferry.Record{
				Lane: lane, Seq: seq,
				ID:   ferry.RecordID(b.opts.Gateway, lane, seq),
				Time: timeOf(t),
				Data: append([]byte(nil), data...),
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("buffer: read retained records: %w", err)
	}
	return recs, nil
}

func keptKey(dst []byte, lane ferry.Lane, seq uint64) []byte {
	dst = append(dst, byte(lane))
	return seqKey(dst, seq)
}

func keptBucketOf(tx *bolt.Tx) *bolt.Bucket {
	root := tx.Bucket(bucketState)
	if root == nil {
		return nil
	}
	return root.Bucket([]byte(keptBucket))
}

// loadKept builds the retention's index from the file (Open, before the
// writer starts).
func (b *Buffer) loadKept() error {
	rt := &b.kept
	if err := b.viewDB(func(tx *bolt.Tx) error {
		bk := keptBucketOf(tx)
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, v []byte) error {
			if len(k) != keptKeySize || int(k[0]) >= ferry.NumLanes {
				return nil // not ours: left alone
			}
			if len(v) < keptHeader+valueHeader {
				rt.ops = append(rt.ops, keptOp{lane: ferry.Lane(k[0]), seq: binary.BigEndian.Uint64(k[1:]), kind: opDelete})
				return nil
			}
			l := ferry.Lane(k[0])
			e := keptEnt{
				seq:  binary.BigEndian.Uint64(k[1:]),
				mark: binary.BigEndian.Uint64(v),
				at:   int64(binary.BigEndian.Uint64(v[8:])),
				size: int32(len(k) + len(v) + recordOverhead),
			}
			rt.lanes[l].insert(e)
			rt.bytes += int64(e.size)
			rt.records++
			return nil
		})
	}); err != nil {
		return err
	}
	// An entry younger than one after it was renewed.
	for l := range rt.lanes {
		ents := rt.lanes[l].ents
		least := int64(1<<63 - 1)
		for i := len(ents) - 1; i >= 0; i-- {
			ents[i].renewed = ents[i].at > least
			least = min(least, ents[i].at)
		}
	}
	return nil
}

// expireKept takes out of the index what is past retain_acked or beyond
// retain_max_size, oldest first, and queues its deletion (b.mu held).
// A lane is walked from its first entry while entries are old; an entry
// renewed by a resend (younger than its place says) is stepped over.
func (b *Buffer) expireKept(nowNs int64) {
	rt := &b.kept
	cutoff := nowNs - int64(b.cfg.RetainAcked)
	if b.cfg.RetainAcked > 0 {
		cutoff = min(cutoff, b.keptChecked.Load()-int64(b.cfg.RetainAcked))
	}
	budget := keptExpirePerCycle
	for l := range rt.lanes {
		kl := &rt.lanes[l]
		for i := kl.head; i < len(kl.ents) && budget > 0; i++ {
			e := &kl.ents[i]
			switch {
			case e.mark == 0: // expired before
			case e.at < cutoff:
				b.expireEnt(ferry.Lane(l), e)
				budget--
			case e.renewed:
				continue
			default:
				i = len(kl.ents)
				continue
			}
			if i == kl.head {
				kl.pop()
				i--
			}
		}
	}
	limit := int64(b.cfg.RetainMaxSize)
	for ; budget > 0 && rt.bytes > limit; budget-- {
		// The lane whose first entry is the oldest.
		best := -1
		for l := range rt.lanes {
			kl := &rt.lanes[l]
			for kl.head < len(kl.ents) && kl.ents[kl.head].mark == 0 {
				kl.pop()
			}
			if kl.head == len(kl.ents) {
				continue
			}
			if best < 0 || kl.ents[kl.head].at < rt.lanes[best].ents[rt.lanes[best].head].at {
				best = l
			}
		}
		if best < 0 {
			break
		}
		kl := &rt.lanes[best]
		b.expireEnt(ferry.Lane(best), &kl.ents[kl.head])
		kl.pop()
	}
	for l := range rt.lanes {
		rt.lanes[l].compact()
	}
}

// expireEnt takes e out of the retention: its deletion is queued and it
// stays in the index, as a tombstone (mark 0), until it is popped.
func (b *Buffer) expireEnt(lane ferry.Lane, e *keptEnt) {
	rt := &b.kept
	rt.bytes -= int64(e.size)
	rt.records--
	rt.ops = append(rt.ops, keptOp{lane: lane, seq: e.seq, kind: opDelete})
	rt.expired.add(lane, e.seq, e.mark)
	e.mark = 0
}

// fillKept applies the retention's operations of this cycle (before the
// acks delete the records from their lanes, in the same transaction).
func (w *writer) fillKept(tx *bolt.Tx, lanes [ferry.NumLanes]*bolt.Bucket) error {
	if len(w.keptOps) == 0 {
		return nil
	}
	root := tx.Bucket(bucketState)
	if root == nil {
		return fmt.Errorf("%w: bucket %s is missing", errCorrupt, bucketState)
	}
	bk, err := root.CreateBucketIfNotExists([]byte(keptBucket))
	if err != nil {
		return err
	}
	// Values must stay valid until the commit: one arena per cycle, never
	// reused within it (a grown arena leaves the old one to the values
	// that point into it).
	// Sized by what is left to copy (a value's size times the operations
	// left, at most 256 KiB): an ack of one small record used to allocate
	// and clear 256 KiB.
	var arena []byte
	left := len(w.keptOps)
	hold := func(n int) []byte {
		if cap(arena)-len(arena) < n {
			arena = make([]byte, 0, max(n, min(n*left, 256<<10)))
		}
		off := len(arena)
		arena = arena[:off+n]
		return arena[off : off+n : off+n]
	}
	var key [keptKeySize]byte
	var lkey [keySize]byte
	for i, op := range w.keptOps {
		left = len(w.keptOps) - i
		keptKey(key[:0], op.lane, op.seq)
		switch op.kind {
		case opDelete:
			if err := bk.Delete(key[:]); err != nil {
				return err
			}
		case opMove:
			v := lanes[op.lane].Get(seqKey(lkey[:0], op.seq))
			if v == nil {
				continue // dropped meanwhile
			}
			val := hold(keptHeader + len(v))
			binary.BigEndian.PutUint64(val, op.mark)
			binary.BigEndian.PutUint64(val[8:], uint64(op.at))
			copy(val[keptHeader:], v)
			if err := bk.Put(key[:], val); err != nil {
				return err
			}
		case opUpdate:
			v := bk.Get(key[:])
			if len(v) < keptHeader {
				continue
			}
			val := hold(len(v))
			copy(val, v)
			binary.BigEndian.PutUint64(val, op.mark)
			binary.BigEndian.PutUint64(val[8:], uint64(op.at))
			if err := bk.Put(key[:], val); err != nil {
				return err
			}
		}
	}
	return nil
}
