package buffer

import (
	"math/bits"
	"sort"
)

// The in-memory index of a lane: one entry per stored record, in sequence
// order. It answers Next, Ack, Release, the bounds and Stats without reading
// the file. It is built at Open from the walk that checks the file.
//
// Each entry carries two small bitmasks over the buffer's consumers
// (Options.Consumers, bit i for the i-th; one bit for the default
// consumer): pending, the consumers that have not acknowledged it yet, and
// flight, those it is in flight for (a subset of pending). A record is gone
// once no consumer has it pending, or when a bound drops it.

type entryState uint8

const (
	ready    entryState = iota // stored, in flight for no consumer
	inFlight                   // returned by Next to at least one consumer, waiting for its Ack or Release
	gone                       // acked by every consumer or dropped: its deletion is committed or queued
)

type entry struct {
	seq     uint64
	time    int64 // when the record was committed, Unix nanoseconds
	size    uint32
	state   entryState
	pending uint8 // consumers that have not acknowledged it
	flight  uint8 // consumers it is in flight for
}

// consumerCount is what one consumer has pending in a lane.
type consumerCount struct {
	records  int
	bytes    int64
	inFlight int
}

// laneIndex is guarded by Buffer.mu.
type laneIndex struct {
	ents []entry
	head int // ents[:head] are popped
	// hints, per consumer: every entry in ents[head:hints[c]] is in
	// flight for c, acknowledged by c, or gone, so c's Next starts looking
	// at hints[c].
	hints    [maxConsumers]int
	all      uint8 // the bits of every consumer: what a new entry is pending for
	live     int   // entries that are not gone
	bytes    int64 // size of the live entries
	inFlight int   // live entries in flight for at least one consumer
	per      [maxConsumers]consumerCount
}

// recordOverhead is what bbolt adds to each key/value beside the key:
// its leaf element.
const recordOverhead = 16

// eachBit calls fn for every consumer whose bit is set in mask.
func eachBit(mask uint8, fn func(c int)) {
	for mask != 0 {
		c := bits.TrailingZeros8(mask)
		fn(c)
		mask &^= 1 << c
	}
}

func (l *laneIndex) add(seq uint64, t int64, size int) {
	l.ents = append(l.ents, entry{seq: seq, time: t, size: uint32(size), pending: l.all})
	l.live++
	l.bytes += int64(size)
	eachBit(l.all, func(c int) {
		l.per[c].records++
		l.per[c].bytes += int64(size)
	})
}

// find returns the position of seq, or -1.
func (l *laneIndex) find(seq uint64) int {
	ents := l.ents[l.head:]
	i := sort.Search(len(ents), func(i int) bool { return ents[i].seq >= seq })
	if i < len(ents) && ents[i].seq == seq {
		return l.head + i
	}
	return -1
}

// take marks the entry at i in flight for consumer c.
func (l *laneIndex) take(i, c int) {
	e := &l.ents[i]
	e.flight |= 1 << c
	l.per[c].inFlight++
	if e.state == ready {
		e.state = inFlight
		l.inFlight++
	}
}

// release puts the entry at i, in flight for consumer c, back.
func (l *laneIndex) release(i, c int) bool {
	e := &l.ents[i]
	if e.state == gone || e.flight&(1<<c) == 0 {
		return false
	}
	l.unflight(i, c)
	if i < l.hints[c] {
		l.hints[c] = i
	}
	return true
}

// unflight clears c's flight bit of the live entry at i.
func (l *laneIndex) unflight(i, c int) {
	e := &l.ents[i]
	e.flight &^= 1 << c
	l.per[c].inFlight--
	if e.flight == 0 && e.state == inFlight {
		e.state = ready
		l.inFlight--
	}
}

// ack records consumer c's acknowledgement of the entry at i. It reports
// whether c had it pending, and whether that was the last consumer to (the
// entry is gone now, and its record to be deleted).
func (l *laneIndex) ack(i, c int) (acked, last bool) {
	e := &l.ents[i]
	bit := uint8(1) << c
	if e.state == gone || e.pending&bit == 0 {
		return false, false
	}
	if e.flight&bit != 0 {
		l.unflight(i, c)
	}
	e.pending &^= bit
	l.per[c].records--
	l.per[c].bytes -= int64(e.size)
	if e.pending != 0 {
		return true, false
	}
	l.remove(i)
	return true, true
}

// remove marks the entry at i gone, for every consumer, and reports
// whether it was live. Its bits stay, for restore and for counting a drop
// per consumer.
func (l *laneIndex) remove(i int) bool {
	e := &l.ents[i]
	switch e.state {
	case gone:
		return false
	case inFlight:
		l.inFlight--
	}
	eachBit(e.pending, func(c int) {
		l.per[c].records--
		l.per[c].bytes -= int64(e.size)
	})
	eachBit(e.flight, func(c int) { l.per[c].inFlight-- })
	e.state = gone
	l.live--
	l.bytes -= int64(e.size)
	return true
}

// restore undoes remove for a drop whose commit failed: the entry was
// ready, or in flight.
func (l *laneIndex) restore(i int, wasInFlight bool) {
	e := &l.ents[i]
	l.live++
	l.bytes += int64(e.size)
	eachBit(e.pending, func(c int) {
		l.per[c].records++
		l.per[c].bytes += int64(e.size)
		if i < l.hints[c] {
			l.hints[c] = i
		}
	})
	eachBit(e.flight, func(c int) { l.per[c].inFlight++ })
	if wasInFlight && e.flight != 0 {
		e.state = inFlight
		l.inFlight++
		return
	}
	e.state = ready
}

// pop forgets the gone entries at the front and reclaims the slice when
// most of it is popped. Only the writer calls it, after a commit, so that
// positions it holds stay valid while it plans.
func (l *laneIndex) pop() {
	for l.head < len(l.ents) && l.ents[l.head].state == gone {
		l.head++
	}
	if l.head == len(l.ents) {
		l.ents, l.head, l.hints = l.ents[:0], 0, [maxConsumers]int{}
		return
	}
	shift := 0
	if l.head > 1024 && l.head > len(l.ents)/2 {
		n := copy(l.ents, l.ents[l.head:])
		l.ents = l.ents[:n]
		shift = l.head
		l.head = 0
	}
	for c := range l.hints {
		l.hints[c] = max(l.hints[c]-shift, l.head)
	}
}

// oldest returns the commit time of the oldest live entry (0 when empty).
func (l *laneIndex) oldest() int64 {
	for i := l.head; i < len(l.ents); i++ {
		if l.ents[i].state != gone {
			return l.ents[i].time
		}
	}
	return 0
}

// oldestFor returns the commit time of the oldest live entry consumer c
// has pending (0 when none). It walks past what c has acknowledged: a
// consumer ahead of a stalled one pays for the walk, at Stats time only.
func (l *laneIndex) oldestFor(c int) int64 {
	if l.per[c].records == 0 {
		return 0
	}
	for i := l.head; i < len(l.ents); i++ {
		if e := &l.ents[i]; e.state != gone && e.pending&(1<<c) != 0 {
			return e.time
		}
	}
	return 0
}

// nextReady returns the position of the first entry at or after i that is
// in flight for no consumer, or -1 (the bounds drop those first).
func (l *laneIndex) nextReady(i int) int {
	if i < l.head {
		i = l.head
	}
	for ; i < len(l.ents); i++ {
		if l.ents[i].state == ready {
			return i
		}
	}
	return -1
}

// nextFor returns the position of the first entry at or after i that
// consumer c may be offered (live, pending for c, not in flight for c), or
// -1.
func (l *laneIndex) nextFor(i, c int) int {
	if i < l.head {
		i = l.head
	}
	bit := uint8(1) << c
	for ; i < len(l.ents); i++ {
		if e := &l.ents[i]; e.state != gone && e.pending&bit != 0 && e.flight&bit == 0 {
			return i
		}
	}
	return -1
}
