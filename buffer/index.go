package buffer

import "sort"

// The in-memory index of a lane: one entry per stored record, in sequence
// order. It answers Next, Ack, Release, the bounds and Stats without reading
// the file. It is built at Open from the walk that checks the file.

type entryState uint8

const (
	ready    entryState = iota // stored, may be offered by Next
	inFlight                   // returned by Next, waiting for Ack or Release
	gone                       // acked or dropped: its deletion is committed or queued
)

type entry struct {
	seq   uint64
	time  int64 // when the record was committed, Unix nanoseconds
	size  uint32
	state entryState
}

// laneIndex is guarded by Buffer.mu.
type laneIndex struct {
	ents []entry
	head int // ents[:head] are popped
	// hint: every entry in ents[head:hint] is in flight or gone, so Next
	// starts looking at hint.
	hint     int
	live     int   // entries that are not gone
	bytes    int64 // size of the live entries
	inFlight int
}

// recordOverhead is what bbolt adds to each key/value beside the key:
// its leaf element.
const recordOverhead = 16

func (l *laneIndex) add(seq uint64, t int64, size int) {
	l.ents = append(l.ents, entry{seq: seq, time: t, size: uint32(size)})
	l.live++
	l.bytes += int64(size)
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

// take marks the entry at i in flight.
func (l *laneIndex) take(i int) {
	l.ents[i].state = inFlight
	l.inFlight++
}

// release puts the in-flight entry at i back.
func (l *laneIndex) release(i int) bool {
	if l.ents[i].state != inFlight {
		return false
	}
	l.ents[i].state = ready
	l.inFlight--
	if i < l.hint {
		l.hint = i
	}
	return true
}

// remove marks the entry at i gone and reports whether it was live.
func (l *laneIndex) remove(i int) bool {
	e := &l.ents[i]
	switch e.state {
	case gone:
		return false
	case inFlight:
		l.inFlight--
	}
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
	if wasInFlight {
		e.state = inFlight
		l.inFlight++
		return
	}
	e.state = ready
	if i < l.hint {
		l.hint = i
	}
}

// pop forgets the gone entries at the front and reclaims the slice when
// most of it is popped. Only the writer calls it, after a commit, so that
// positions it holds stay valid while it plans.
func (l *laneIndex) pop() {
	for l.head < len(l.ents) && l.ents[l.head].state == gone {
		l.head++
	}
	if l.head == len(l.ents) {
		l.ents, l.head, l.hint = l.ents[:0], 0, 0
		return
	}
	if l.head > 1024 && l.head > len(l.ents)/2 {
		n := copy(l.ents, l.ents[l.head:])
		l.ents = l.ents[:n]
		l.hint -= l.head
		l.head = 0
	}
	if l.hint < l.head {
		l.hint = l.head
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

// nextReady returns the position of the first ready entry at or after i,
// or -1.
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
