package buffer

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
)

// Clock steps. A record's time is the wall clock at its commit; max_age
// and the oldest-record age are measured against it. A gateway without a
// battery-backed clock boots in 1970 (or at the time fake-hwclock saved at
// the last shutdown) and is set by NTP only once the network is up — which
// for a store-and-forward gateway may be hours later, with the whole
// offline backlog stamped in the wrong time base. Without care the step
// forward would make every one of those records look decades (or the
// downtime) old, and max_age would drop exactly the data the buffer is
// there to keep.
//
// The writer therefore compares, at every cycle, how far the wall clock
// moved with how far the monotonic clock moved. When the wall clock jumps
// ahead by more than clockStepMin, the records this run committed before
// the jump are moved forward by it in the index, and the shift is stored
// in the meta bucket (one key per lane and jump: the run's sequence range
// and the shift) so that the next Open applies it again. Records of
// earlier runs keep their times: they were stamped by a clock that the
// run before set right or not, which this run cannot know. A step back
// makes records look younger; they are kept longer, bounded by max_size.
// So does a suspend or a paused VM: Linux's monotonic clock stands still
// meanwhile, and the wall clock's catching up looks like a step.

// clockStepMin is the smallest jump treated as a step. NTP slews smaller
// errors; a cycle that runs late moves both clocks alike.
const clockStepMin = time.Minute

// shiftPrefix starts the meta keys of stored shifts:
// shift/<lane:1><to:8> → from:8 shift:8 (nanoseconds, two's complement).
const shiftPrefix = "shift/"

// clockShift moves the times of the records of lane with sequences in
// [from, to] by shift.
type clockShift struct {
	lane     ferry.Lane
	from, to uint64
	shift    int64
}

func (s clockShift) key() []byte {
	k := make([]byte, 0, len(shiftPrefix)+9)
	k = append(k, shiftPrefix...)
	k = append(k, byte(s.lane))
	return binary.BigEndian.AppendUint64(k, s.to)
}

func (s clockShift) value() []byte {
	v := binary.BigEndian.AppendUint64(nil, s.from)
	return binary.BigEndian.AppendUint64(v, uint64(s.shift))
}

// parseShift reads a stored shift; ok is false for anything malformed
// (it is then ignored: a shift is a correction, not data).
func parseShift(key, value []byte) (s clockShift, ok bool) {
	k, found := strings.CutPrefix(string(key), shiftPrefix)
	if !found || len(k) != 9 || len(value) != 16 || int(k[0]) >= ferry.NumLanes {
		return clockShift{}, false
	}
	s = clockShift{
		lane:  ferry.Lane(k[0]),
		to:    binary.BigEndian.Uint64([]byte(k[1:])),
		from:  binary.BigEndian.Uint64(value),
		shift: int64(binary.BigEndian.Uint64(value[8:])),
	}
	return s, s.from <= s.to
}

// apply shifts the entries of ents (sorted by sequence) that s covers.
func (s clockShift) apply(ents []entry) {
	for i := range ents {
		if ents[i].seq >= s.from && ents[i].seq <= s.to {
			ents[i].time += s.shift
		}
	}
}

// clockRef is the writer's view of both clocks at its last cycle.
type clockRef struct {
	wall int64         // Unix nanoseconds
	mono time.Duration // Options.mono
	set  bool
}

// checkClock notes now and the monotonic clock, and returns how far the
// wall clock jumped ahead since the last cycle beyond what the monotonic
// clock moved; 0 for anything below clockStepMin, or without a monotonic
// clock (an injected Options.Now).
func (w *writer) checkClock(now time.Time) int64 {
	mono := w.b.opts.mono
	if mono == nil {
		return 0
	}
	cur := clockRef{wall: now.UnixNano(), mono: mono(), set: true}
	prev := w.clock
	w.clock = cur
	if !prev.set {
		return 0
	}
	step := (cur.wall - prev.wall) - int64(cur.mono-prev.mono)
	if step < int64(clockStepMin) {
		return 0
	}
	return step
}

// clockStepped moves the times of this run's records forward by step, in
// the index now and in the file with the next commit.
func (w *writer) clockStepped(step int64) {
	b := w.b
	b.mu.Lock()
	for l := range b.lanes {
		from, to := w.runFirst[l], w.seq[l]
		if to < from {
			continue // nothing committed by this run yet
		}
		s := clockShift{lane: ferry.Lane(l), from: from, to: to, shift: step}
		li := &b.lanes[l]
		s.apply(li.ents[li.head:])
		w.shifts = append(w.shifts, s)
	}
	b.mu.Unlock()
	b.log.Warn("wall clock stepped forward; the records stored before the step keep their age",
		"step", time.Duration(step).Round(time.Second), "now", time.Unix(0, w.clock.wall).UTC())
	b.m.clockSteps.Inc()
}

// fillShifts stores the shifts of this cycle.
func (w *writer) fillShifts(tx *bolt.Tx) error {
	if len(w.shifts) == 0 {
		return nil
	}
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return fmt.Errorf("%w: bucket %s is missing", errCorrupt, bucketMeta)
	}
	for _, s := range w.shifts {
		// Two steps before the next record keep one key (the same range):
		// their shifts add up.
		total := s
		if old := meta.Get(s.key()); old != nil {
			if prev, ok := parseShift(s.key(), old); ok && prev.from == s.from {
				total.shift += prev.shift
			}
		}
		if err := meta.Put(s.key(), total.value()); err != nil {
			return err
		}
	}
	return nil
}

// pruneShifts deletes the stored shifts that no record of their lane
// needs any more: every sequence they cover is below the lane's first.
func pruneShifts(meta *bolt.Bucket, shifts []clockShift, first [ferry.NumLanes]uint64) error {
	for _, s := range shifts {
		if s.to < first[s.lane] {
			if err := meta.Delete(s.key()); err != nil {
				return err
			}
		}
	}
	return nil
}
