package history

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
)

// The journal: between two folds, each commit appends the samples that
// arrived since the last commit as one value, under the next sequence
// number, to the journal bucket (an append at the end of one B+tree:
// a few pages however many series). The samples also stay in memory
// (Store.acc) until the fold writes them by series, deleting the journal
// in the same transaction. Open replays the journal into memory, so a
// restart or a crash loses nothing that was committed, and a sample is
// on disk once: in the journal or folded, never both. Queries merge what
// is in memory with what is folded.
//
// A journal value is, for each series: uvarint id, uvarint n, then n
// samples of varint (ns - previous ns; the first from 0), status byte,
// float64 bits (big endian).

// commitJournal writes the samples since the last commit, the new series
// and the alerts in one transaction. Called by commit with s.mu held; it
// unlocks it.
func (s *Store) commitJournal() error {
	type part struct {
		id  uint32
		smp []rawSample
	}
	var parts []part
	n, size := 0, 0
	for _, id := range s.dirty {
		a := s.acc[id]
		if a.jn < len(a.raw) {
			// Add only appends beyond len(a.raw) and a fold (which
			// replaces a.raw) waits for wmu: this slice stays as it is.
			parts = append(parts, part{id, a.raw[a.jn:len(a.raw):len(a.raw)]})
			n += len(a.raw) - a.jn
			a.jn = len(a.raw)
		}
	}
	newSer, alerts := s.newSer, s.alerts
	s.newSer, s.alerts = nil, nil
	s.mu.Unlock()

	// The value is cut at series boundaries into chunks of about
	// journalChunk bytes, each under its own key: several fit in a page,
	// so an append rewrites no earlier value (a value larger than a page
	// is copied again when the next one splits its leaf).
	// Per sample: a delta of up to 5 bytes (up to 10 for the first), the
	// status, 8 bytes of value.
	size = n*14 + len(parts)*24
	buf := make([]byte, 0, size)
	var cuts []int
	for _, p := range parts {
		if len(buf)-last(cuts) >= journalChunk {
			cuts = append(cuts, len(buf))
		}
		buf = binary.AppendUvarint(buf, uint64(p.id))
		buf = binary.AppendUvarint(buf, uint64(len(p.smp)))
		prev := int64(0)
		for _, r := range p.smp {
			buf = binary.AppendVarint(buf, r.ns-prev)
			prev = r.ns
			buf = append(buf, byte(r.q))
			buf = binary.BigEndian.AppendUint64(buf, math.Float64bits(r.v))
		}
	}
	var alertAdd, jAdd int64
	var alertN int
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := putSeries(tx, newSer); err != nil {
			return err
		}
		if len(buf) > 0 {
			jb := tx.Bucket(bktJournal)
			// Keys only grow: fill the pages (bbolt splits at the end).
			jb.FillPercent = 1
			cuts := append(cuts, len(buf))
			from := 0
			for i, to := range cuts {
				k := binary.BigEndian.AppendUint64(nil, s.jseq+uint64(i)+1)
				if err := jb.Put(k, buf[from:to]); err != nil {
					return err
				}
				jAdd += int64(len(k) + to - from)
				from = to
			}
		}
		var err error
		if alertAdd, alertN, err = s.putAlerts(tx, alerts); err != nil {
			return err
		}
		s.alertBytes += alertAdd
		s.alertCount += alertN
		return s.evict(tx)
	})
	if err != nil {
		s.alertBytes -= alertAdd
		s.alertCount -= alertN
		s.m.commitErrors.Inc()
		// The samples stay in memory for the next fold; only a crash
		// before it would lose them.
		return fmt.Errorf("history commit: %w", err)
	}
	if len(buf) > 0 {
		s.jseq += uint64(len(cuts)) + 1
		s.jBytes += jAdd
	}
	s.m.commits.Inc()
	s.m.samples.Add(float64(n))
	s.m.alerts.Add(float64(len(alerts)))
	return nil
}

// journalChunk is about the size of one journal value.
const journalChunk = 1000

func last(cuts []int) int {
	if len(cuts) == 0 {
		return 0
	}
	return cuts[len(cuts)-1]
}

// putSeries writes the ids of new series.
func putSeries(tx *bolt.Tx, newSer []newSeries) error {
	sb := tx.Bucket(bktSeries)
	var idb [4]byte
	for _, ns := range newSer {
		binary.BigEndian.PutUint32(idb[:], ns.id)
		if err := sb.Put([]byte(ns.key), idb[:]); err != nil {
			return err
		}
	}
	return nil
}

// putAlerts writes alert transitions; it returns the bytes and the count
// it added.
func (s *Store) putAlerts(tx *bolt.Tx, alerts []ferry.Alert) (int64, int, error) {
	ab := tx.Bucket(bktAlerts)
	var add int64
	for i, a := range alerts {
		s.alertSeq++
		k := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(a.Time.UnixNano()))
		k = binary.BigEndian.AppendUint64(k, s.alertSeq)
		v, err := encodeAlert(a)
		if err != nil {
			return add, i, err
		}
		if err := ab.Put(k, v); err != nil {
			return add, i, err
		}
		add += int64(len(k) + len(v))
	}
	return add, len(alerts), nil
}

// replay reads the journal into memory (Open, before any Add).
func (s *Store) replay(tx *bolt.Tx) {
	jb := tx.Bucket(bktJournal)
	if jb == nil {
		return
	}
	_ = jb.ForEach(func(k, v []byte) error {
		if len(k) == 8 {
			s.jseq = max(s.jseq, binary.BigEndian.Uint64(k))
		}
		s.jBytes += int64(len(k) + len(v))
		decodeJournal(v, func(id uint32, ns int64, val float64, q ferry.Status) {
			if id != 0 && id <= s.nextID {
				s.accumulate(id, ns, val, q)
			}
		})
		return nil
	})
	for _, id := range s.dirty {
		a := s.acc[id]
		a.jn = len(a.raw)
	}
}

// decodeJournal calls f for every sample of a journal value; it stops at
// the first malformed byte.
func decodeJournal(v []byte, f func(id uint32, ns int64, val float64, q ferry.Status)) {
	for len(v) > 0 {
		id, n1 := binary.Uvarint(v)
		if n1 <= 0 || id > math.MaxUint32 {
			return
		}
		v = v[n1:]
		cnt, n2 := binary.Uvarint(v)
		if n2 <= 0 {
			return
		}
		v = v[n2:]
		prev := int64(0)
		for range cnt {
			d, n := binary.Varint(v)
			if n <= 0 || len(v) < n+9 {
				return
			}
			prev += d
			f(uint32(id), prev, math.Float64frombits(binary.BigEndian.Uint64(v[n+1:])), ferry.Status(v[n]))
			v = v[n+9:]
		}
	}
}

// memRaw returns a copy of the raw samples of series id in [from, to)
// that are not folded yet.
func (s *Store) memRaw(id uint32, from, to int64) []rawSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	if int(id) >= len(s.acc) || s.acc[id] == nil {
		return nil
	}
	var out []rawSample
	for _, r := range s.acc[id].raw {
		if r.ns >= from && r.ns < to {
			out = append(out, r)
		}
	}
	return out
}

// memRollups returns the minute rollups of series id in [from, to)
// (Unix seconds) that are not folded yet, by minute, one per minute.
func (s *Store) memRollups(id uint32, from, to int64) []minRollup {
	s.mu.Lock()
	var out []minRollup
	if int(id) < len(s.acc) && s.acc[id] != nil {
		a := s.acc[id]
		for _, d := range a.done {
			if d.min >= from && d.min < to {
				out = append(out, d)
			}
		}
		if a.has && a.curMin >= from && a.curMin < to {
			out = append(out, minRollup{a.curMin, a.cur})
		}
	}
	s.mu.Unlock()
	if len(out) < 2 {
		return out
	}
	slices.SortStableFunc(out, func(a, b minRollup) int { return cmpInt(a.min, b.min) })
	// Samples out of order leave several rollups of one minute: merge.
	j := 0
	for i := 1; i < len(out); i++ {
		if out[i].min == out[j].min {
			out[j].r.merge(&out[i].r)
		} else {
			j++
			out[j] = out[i]
		}
	}
	return out[:j+1]
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
