package history

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
)

// Resolutions a query may answer with.
const (
	// RawUpTo is the longest range an automatic query answers with raw
	// samples; longer ranges get rollups.
	RawUpTo = time.Hour
	// MaxPoints is how many buckets an automatic rollup query aims at
	// (its step is the range over MaxPoints, in whole minutes).
	MaxPoints = 1500
)

// Query asks for one point's history over [From, To).
type Query struct {
	Device, Point string
	From, To      time.Time
	// Step is the bucket: below a minute, raw samples; a minute or more,
	// rollups merged into buckets of Step (rounded down to whole
	// minutes); 0 picks one for the range (raw up to RawUpTo, else about
	// MaxPoints buckets).
	Step time.Duration
}

// Point is one bucket (or one raw sample). A bucket with no value (only
// Bad samples) has Count 0 and NaN values: a gap.
type Point struct {
	Time                 time.Time
	Min, Max, Mean, Last float64
	Count                uint32
	Quality              ferry.Status
}

// Series is a query's answer.
type Series struct {
	Device, Point string
	// Step is 0 for raw samples, else the bucket.
	Step   time.Duration
	Points []Point
}

// Resolve returns the step a query answers with: 0 for raw samples, else
// whole minutes.
func (q Query) Resolve() time.Duration {
	step := q.Step
	if step == 0 {
		r := q.To.Sub(q.From)
		if r <= RawUpTo {
			return 0
		}
		step = r / MaxPoints
	}
	if step < time.Minute {
		if q.Step == 0 {
			return time.Minute
		}
		return 0
	}
	return step.Truncate(time.Minute)
}

// Query answers q; an unknown point answers an empty series.
func (s *Store) Query(q Query) (Series, error) {
	if !q.To.After(q.From) {
		return Series{}, fmt.Errorf("history query: to %v is not after from %v", q.To, q.From)
	}
	out := Series{Device: q.Device, Point: q.Point, Step: q.Resolve()}
	if out.Step == 0 && q.Step == 0 && q.From.Before(s.now().Add(-s.cfg.Raw)) {
		// Raw samples are off, or gone for part of the range.
		out.Step = time.Minute
	}
	id := s.lookup(q.Device, q.Point)
	if id == 0 {
		return out, nil
	}
	// What is not folded yet is in memory: read it and the file under
	// wmu, so that a fold is seen whole or not at all.
	s.wmu.RLock()
	defer s.wmu.RUnlock()
	err := s.db.View(func(tx *bolt.Tx) error {
		if out.Step == 0 {
			from, to := q.From.UnixNano(), q.To.UnixNano()
			out.Points = queryRaw(tx, id, from, to, s.memRaw(id, from, to))
			return nil
		}
		step := int64(out.Step / time.Second)
		from := floorDiv(q.From.Unix(), 60) * 60
		out.Points = queryRollups(tx, id, from, q.To.Unix(), step, s.memRollups(id, from, q.To.Unix()))
		return nil
	})
	return out, err
}

// rawKey is the key of series id's block in fold seq.
func rawKey(seq uint64, id uint32) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(make([]byte, 0, 12), seq), id)
}

func queryRaw(tx *bolt.Tx, id uint32, from, to int64, mem []rawSample) []Point {
	rb := tx.Bucket(bktRaw)
	var pts []Point
	for _, r := range mem {
		p := Point{Time: time.Unix(0, r.ns).UTC(), Min: r.v, Max: r.v, Mean: r.v, Last: r.v, Quality: r.q}
		if !math.IsNaN(r.v) {
			p.Count = 1
		}
		pts = append(pts, p)
	}
	if rb == nil {
		// A file of an older ferry opened read-only: no raw2 bucket.
		sort.SliceStable(pts, func(i, j int) bool { return pts[i].Time.Before(pts[j].Time) })
		return pts
	}
	c := rb.Cursor()
	for k, _ := c.Seek(partKey(floorDiv(from, int64(time.Hour)) * 3600)); k != nil; k, _ = c.Next() {
		if int64(binary.BigEndian.Uint64(k))*int64(time.Second) >= to {
			break
		}
		hb := rb.Bucket(k)
		if hb == nil {
			continue
		}
		// Keys are fold sequence + id: seek the id in each fold.
		hc := hb.Cursor()
		for bk, bv := hc.Seek(rawKey(0, id)); bk != nil; {
			if len(bk) != 12 {
				bk, bv = hc.Next()
				continue
			}
			seq, kid := binary.BigEndian.Uint64(bk), binary.BigEndian.Uint32(bk[8:])
			if kid != id {
				if kid < id {
					bk, bv = hc.Seek(rawKey(seq, id))
				} else {
					bk, bv = hc.Seek(rawKey(seq+1, id))
				}
				continue
			}
			if len(bv) < 8 {
				bk, bv = hc.Seek(rawKey(seq+1, id))
				continue
			}
			decodeBlock(int64(binary.BigEndian.Uint64(bv)), bv[8:], func(ns int64, v float64, q ferry.Status) {
				if ns < from || ns >= to {
					return
				}
				p := Point{Time: time.Unix(0, ns).UTC(), Min: v, Max: v, Mean: v, Last: v, Quality: q}
				if !math.IsNaN(v) {
					p.Count = 1
				}
				pts = append(pts, p)
			})
			bk, bv = hc.Seek(rawKey(seq+1, id))
		}
	}
	sort.SliceStable(pts, func(i, j int) bool { return pts[i].Time.Before(pts[j].Time) })
	return pts
}

// queryRollups merges the stored minutes of series id in [from, to) with
// mem (the minutes not folded yet, sorted) into buckets of step seconds.
func queryRollups(tx *bolt.Tx, id uint32, from, to, step int64, mem []minRollup) []Point {
	rb := tx.Bucket(bktRoll)
	pts := make([]Point, 0, min((to-from)/step+1, MaxPoints*4))
	var cur rollup
	curB := int64(math.MinInt64)
	emit := func() {
		if curB == math.MinInt64 {
			return
		}
		p := Point{Time: time.Unix(curB, 0).UTC(), Count: cur.Count, Quality: cur.Worst}
		if cur.Count == 0 {
			p.Min, p.Max, p.Mean, p.Last = math.NaN(), math.NaN(), math.NaN(), math.NaN()
		} else {
			p.Min, p.Max, p.Mean, p.Last = cur.Min, cur.Max, cur.Sum/float64(cur.Count), cur.Last
		}
		pts = append(pts, p)
	}
	add := func(m int64, r *rollup) {
		b := floorDiv(m, step) * step
		if b != curB {
			emit()
			cur, curB = rollup{}, b
		}
		cur.merge(r)
	}
	// Buckets are aligned on the step from the Unix epoch, so that the
	// same range asked twice gives the same buckets.
	from = floorDiv(from, 60) * 60
	c := rb.Cursor()
	kfrom := binary.BigEndian.AppendUint32(nil, id)
	kfrom = binary.BigEndian.AppendUint64(kfrom, uint64(from))
	for k, _ := c.Seek(partKey(floorDiv(from, 86400) * 86400)); k != nil; k, _ = c.Next() {
		if int64(binary.BigEndian.Uint64(k)) >= to {
			break
		}
		db := rb.Bucket(k)
		if db == nil {
			continue
		}
		dc := db.Cursor()
		for bk, bv := dc.Seek(kfrom); len(bk) == 12 && binary.BigEndian.Uint32(bk) == id; bk, bv = dc.Next() {
			m := int64(binary.BigEndian.Uint64(bk[4:]))
			if m >= to {
				break
			}
			r, ok := decodeRollup(bv)
			if !ok {
				continue
			}
			for len(mem) > 0 && mem[0].min < m {
				add(mem[0].min, &mem[0].r)
				mem = mem[1:]
			}
			if len(mem) > 0 && mem[0].min == m {
				r.merge(&mem[0].r)
				mem = mem[1:]
			}
			add(m, &r)
		}
	}
	for i := range mem {
		add(mem[i].min, &mem[i].r)
	}
	emit()
	return pts
}
