package web

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferry-edge/ferry"
)

// Ring geometry of the sparklines: DefaultSlots buckets of DefaultStep
// each, so the last five minutes. See the package doc for the memory bound.
const (
	DefaultStep  = 5 * time.Second
	DefaultSlots = 60
)

// DeviceInfo describes a configured device.
type DeviceInfo struct {
	Name        string `json:"device"`
	Protocol    string `json:"protocol"`
	Description string `json:"description,omitempty"`
}

// Catalog is what is configured: the devices and their points, in file
// order. The store keeps values only for the points it lists.
type Catalog struct {
	Devices []DeviceInfo
	Points  []ferry.PointInfo
}

// Store keeps, for every configured point, its last sample and a small
// ring of the last minutes for the sparkline. Observe is called from the
// pipeline goroutine for every scan; it does not allocate once each
// numeric point has its ring.
//
// A ring is allocated only once someone has looked at its device's
// sparklines (Points with spark, the console's devices and points pages):
// a gateway nobody watches spends nothing on them (720 bytes per numeric
// point, the largest part of its heap at 10k points: issue 20), and a
// sparkline fills from its device's first view on. A device keeps its
// rings once viewed, across reloads.
//
// Each bucket of the ring holds the minimum, maximum and last value seen in
// its Step (float32), so a sparkline shows spikes that a plain "last value"
// would hide. Strings and Bad samples have no sparkline value: a device
// that stops answering shows as a gap.
//
// Layout (issue 20, memory): a device's points are one slice of value
// slots in configuration order, each pointing at its catalog entry (the
// configuration's, not a copy), with times as seconds and nanoseconds
// instead of time.Time; a point is found by name through the scan's order
// (a driver emits its points in configuration order: the slot after the
// last one found is tried first) and else by binary search in a sorted
// index, not a map. About 140 bytes per point instead of 344 plus a map
// entry.
type Store struct {
	step  int64 // nanoseconds
	slots int
	now   func() time.Time

	mu      sync.Mutex
	devs    map[string]*devSlot
	order   []*devSlot
	unknown uint64 // samples of points not in the catalog
}

type devSlot struct {
	info   DeviceInfo
	points []pointSlot // configuration order
	byName []int32     // indices into points, sorted by point name
	next   int         // the slot tried first for the next sample: after the last one found
	// lastScan is when its last scan was taken.
	lastScan time.Time
	scans    uint64
	viewed   bool // its sparklines were asked for: its points keep rings
}

// pointSlot is one point's state. Times are packed (stamp): Unix seconds
// and nanoseconds with flags.
type pointSlot struct {
	info     *ferry.PointInfo // the catalog's entry; never nil
	value    ferry.Value
	lastGood ferry.Value // the last Good value, kept while the point is Bad
	reason   string      // of the quality
	ring     *ring       // nil until the first numeric sample of a viewed device

	timeSec, updatedSec, lastGoodSec int64     // the sample's (source) time, when the scan was taken, the last Good value's time
	timeNs, updatedNs, lastGoodNs    stampNsec // and their nanoseconds and flags
	status                           ferry.Status
	seen                             bool
}

// stampNsec holds the nanoseconds of a packed time (below 1e9 < 2^30) and,
// in its top bits, whether the time is set (non-zero) and whether it was
// in UTC (else it reads back in time.Local). Any other location reads back
// as the same instant in time.Local.
type stampNsec uint32

const (
	stampSet stampNsec = 1 << 31
	stampUTC stampNsec = 1 << 30
)

// pack splits t for a pointSlot; the zero time packs as (0, 0).
func pack(t time.Time) (int64, stampNsec) {
	if t.IsZero() {
		return 0, 0
	}
	ns := stampNsec(t.Nanosecond()) | stampSet
	if t.Location() == time.UTC {
		ns |= stampUTC
	}
	return t.Unix(), ns
}

// unpack is the inverse of pack (without t's monotonic reading).
func unpack(sec int64, ns stampNsec) time.Time {
	if ns&stampSet == 0 {
		return time.Time{}
	}
	t := time.Unix(sec, int64(ns&^(stampSet|stampUTC)))
	if ns&stampUTC != 0 {
		t = t.UTC()
	}
	return t
}

// ring is a point's sparkline: slots buckets, the newest at head.
type ring struct {
	buckets []bucket
	head    int   // index of the newest bucket
	headSeq int64 // its bucket number (time / step)
}

// bucket is one step of a sparkline; an empty bucket has NaN in last.
type bucket struct{ min, max, last float32 }

var emptyBucket = bucket{float32(math.NaN()), float32(math.NaN()), float32(math.NaN())}

func (b *bucket) empty() bool { return b.last != b.last }

// NewStore returns a store for cat. step and slots give the sparkline's
// resolution and length (zero: DefaultStep, DefaultSlots; slots below zero:
// no sparklines, and no memory for them); now may be nil. The store keeps
// references into cat.Points: the caller must not change them afterwards.
func NewStore(cat Catalog, step time.Duration, slots int, now func() time.Time) *Store {
	if step <= 0 {
		step = DefaultStep
	}
	switch {
	case slots < 0:
		slots = 0
	case slots == 0:
		slots = DefaultSlots
	}
	if now == nil {
		now = time.Now
	}
	s := &Store{step: int64(step), slots: slots, now: now}
	s.SetCatalog(cat)
	return s
}

// Step and Slots return the sparkline geometry.
func (s *Store) Step() time.Duration { return time.Duration(s.step) }

// Slots returns the number of buckets of each sparkline.
func (s *Store) Slots() int { return s.slots }

// SetCatalog replaces the configured devices and points (a reload). Points
// that remain keep their value and their sparkline; others are forgotten.
// The store keeps references into cat.Points (the configuration's, which
// no one changes once loaded): the caller must not change them afterwards.
func (s *Store) SetCatalog(cat Catalog) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.devs
	devs := make(map[string]*devSlot, len(cat.Devices))
	order := make([]*devSlot, 0, len(cat.Devices))
	add := func(info DeviceInfo) *devSlot {
		d := &devSlot{info: info}
		if od := old[info.Name]; od != nil {
			d.lastScan, d.scans, d.viewed = od.lastScan, od.scans, od.viewed
		}
		devs[info.Name] = d
		order = append(order, d)
		return d
	}
	for _, info := range cat.Devices {
		if devs[info.Name] == nil {
			add(info)
		}
	}
	// Count first, so that each device's slots are one allocation.
	counts := make(map[string]int, len(cat.Devices))
	for i := range cat.Points {
		pi := &cat.Points[i]
		if devs[pi.Device] == nil {
			add(DeviceInfo{Name: pi.Device, Protocol: pi.Protocol})
		}
		counts[pi.Device]++
	}
	for _, d := range order {
		d.points = make([]pointSlot, 0, counts[d.info.Name])
	}
	for i := range cat.Points {
		pi := &cat.Points[i]
		d := devs[pi.Device]
		d.points = append(d.points, pointSlot{info: pi})
	}
	for _, d := range order {
		d.index()
		od := old[d.info.Name]
		if od == nil {
			continue
		}
		for i := range d.points {
			if op := od.find(d.points[i].info.Point); op != nil {
				info := d.points[i].info
				d.points[i] = *op
				d.points[i].info = info
			}
		}
	}
	s.devs, s.order = devs, order
}

// index sorts the points' names into byName and drops a point whose name
// came before (the configuration refuses duplicates; the first one wins).
func (d *devSlot) index() {
	d.byName = make([]int32, len(d.points))
	for i := range d.byName {
		d.byName[i] = int32(i)
	}
	slices.SortStableFunc(d.byName, func(a, b int32) int {
		return strings.Compare(d.points[a].info.Point, d.points[b].info.Point)
	})
	dup := false
	for i := 1; i < len(d.byName); i++ {
		if d.points[d.byName[i]].info.Point == d.points[d.byName[i-1]].info.Point {
			dup = true
			break
		}
	}
	if !dup {
		return
	}
	seen := make(map[string]bool, len(d.points))
	kept := d.points[:0]
	for _, p := range d.points {
		if !seen[p.info.Point] {
			seen[p.info.Point] = true
			kept = append(kept, p)
		}
	}
	clear(d.points[len(kept):])
	d.points = kept
	d.index()
}

// find returns the slot of the point named name, or nil. It tries the slot
// after the last one found first: a scan's samples come in configuration
// order.
func (d *devSlot) find(name string) *pointSlot {
	if i := d.next; i < len(d.points) && d.points[i].info.Point == name {
		d.next = i + 1
		return &d.points[i]
	}
	lo, hi := 0, len(d.byName)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if d.points[d.byName[m]].info.Point < name {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == len(d.byName) || d.points[d.byName[lo]].info.Point != name {
		return nil
	}
	i := int(d.byName[lo])
	d.next = i + 1
	return &d.points[i]
}

// Observe records the samples of one scan. Samples of points that are not
// in the catalog are counted and ignored.
func (s *Store) Observe(scan *ferry.Scan) {
	t := scan.Time
	if t.IsZero() {
		t = s.now()
	}
	seq := t.UnixNano() / s.step
	tSec, tNs := pack(t)
	s.mu.Lock()
	d := s.devs[scan.Device]
	if d != nil {
		d.lastScan = t
		d.scans++
	}
	for i := range scan.Samples {
		smp := &scan.Samples[i]
		dd := d
		if smp.Device != scan.Device {
			dd = s.devs[smp.Device]
		}
		var p *pointSlot
		if dd != nil {
			p = dd.find(smp.Point)
		}
		if p == nil {
			s.unknown++
			continue
		}
		p.seen = true
		p.value, p.status, p.reason = smp.Value, smp.Quality.Status, smp.Quality.Reason
		p.timeSec, p.timeNs = pack(smp.Time)
		p.updatedSec, p.updatedNs = tSec, tNs
		if smp.Quality.Status == ferry.Good && !smp.Value.IsNone() {
			p.lastGood, p.lastGoodSec, p.lastGoodNs = smp.Value, p.timeSec, p.timeNs
		}
		if smp.Quality.Status == ferry.Bad {
			continue
		}
		// Sparklines hold float32: NaN, infinities and numbers beyond its
		// range (a misread register) are left out.
		f, ok := smp.Value.Number()
		if !ok || math.IsNaN(f) || math.Abs(f) > math.MaxFloat32 {
			continue
		}
		if s.slots > 0 && (p.ring != nil || dd.viewed) {
			if p.ring == nil {
				p.ring = &ring{buckets: make([]bucket, s.slots)}
				p.ring.reset(seq)
			}
			p.ring.add(seq, float32(f))
		}
	}
	s.mu.Unlock()
}

// add puts f into the bucket of seq.
func (r *ring) add(seq int64, f float32) {
	slots := len(r.buckets)
	switch {
	case seq > r.headSeq:
		n := seq - r.headSeq
		if n > int64(slots) {
			n = int64(slots)
		}
		for ; n > 0; n-- {
			r.head++
			if r.head == slots {
				r.head = 0
			}
			r.buckets[r.head] = emptyBucket
		}
		r.headSeq = seq
	case seq <= r.headSeq-int64(slots):
		// The clock went back further than the ring: start again.
		r.reset(seq)
	}
	// seq within the ring but not newer (the clock stepped back a little):
	// folded into the newest bucket.
	b := &r.buckets[r.head]
	if b.empty() {
		*b = bucket{f, f, f}
		return
	}
	b.min = min(b.min, f)
	b.max = max(b.max, f)
	b.last = f
}

func (r *ring) reset(seq int64) {
	for i := range r.buckets {
		r.buckets[i] = emptyBucket
	}
	r.head, r.headSeq = 0, seq
}

// Unknown returns how many samples named a point that is not configured.
func (s *Store) Unknown() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unknown
}

// Point is the JSON form of one point: its configuration, its last sample
// and its sparkline.
type Point struct {
	ferry.PointInfo
	// Seen is false until the first sample arrived.
	Seen  bool `json:"seen"`
	Value any  `json:"value"` // number, bool, string or null; NaN and ±Inf as strings
	// Quality is "good", "uncertain" or "bad" ("" before the first sample).
	Quality string    `json:"quality,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Time    time.Time `json:"time,omitzero"`    // the source time of the sample
	Updated time.Time `json:"updated,omitzero"` // when ferry took the scan
	// LastGood is the last Good value while the point is not Good.
	LastGood     any       `json:"last_good,omitempty"`
	LastGoodTime time.Time `json:"last_good_time,omitzero"`
	Spark        *Spark    `json:"spark,omitempty"`
}

// Spark is a sparkline: Slots buckets of Step milliseconds, oldest first,
// the last one ending at End. Each bucket holds the min, max and last
// value seen in it; null where no numeric sample arrived.
type Spark struct {
	End    time.Time `json:"end"`
	StepMS int64     `json:"step_ms"`
	Min    floats    `json:"min"`
	Max    floats    `json:"max"`
	Last   floats    `json:"last"`
}

// floats marshals NaN as null.
type floats []float32

func (fs floats) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 2+len(fs)*8)
	b = append(b, '[')
	for i, f := range fs {
		if i > 0 {
			b = append(b, ',')
		}
		if f != f || math.IsInf(float64(f), 0) {
			b = append(b, "null"...)
			continue
		}
		b = strconv.AppendFloat(b, float64(f), 'g', -1, 32)
	}
	return append(b, ']'), nil
}

// Points returns the points of device (every device when device is ""),
// in configuration order, with sparklines when spark is true. ok is false
// for an unknown device. Asking for sparklines marks the devices viewed:
// their points get rings from then on (the first answer has none yet).
func (s *Store) Points(device string, spark bool) (out []Point, ok bool) {
	now := s.now()
	endSeq := now.UnixNano() / s.step
	s.mu.Lock()
	defer s.mu.Unlock()
	devs := s.order
	if device != "" {
		d := s.devs[device]
		if d == nil {
			return nil, false
		}
		devs = []*devSlot{d}
	}
	out = []Point{}
	for _, d := range devs {
		if spark {
			d.viewed = true
		}
		for i := range d.points {
			p := &d.points[i]
			j := Point{PointInfo: *p.info, Seen: p.seen, Value: jsonValue(p.value),
				Time: unpack(p.timeSec, p.timeNs), Updated: unpack(p.updatedSec, p.updatedNs)}
			if p.seen {
				j.Quality, j.Reason = p.status.String(), p.reason
				if p.status != ferry.Good && !p.lastGood.IsNone() {
					j.LastGood, j.LastGoodTime = jsonValue(p.lastGood), unpack(p.lastGoodSec, p.lastGoodNs)
				}
			}
			if spark && p.ring != nil {
				j.Spark = p.ring.spark(endSeq, s.step)
			}
			out = append(out, j)
		}
	}
	return out, true
}

// spark copies the ring as its buckets ending at bucket endSeq.
func (r *ring) spark(endSeq int64, step int64) *Spark {
	slots := len(r.buckets)
	sp := &Spark{
		End:    time.Unix(0, (endSeq+1)*step),
		StepMS: step / int64(time.Millisecond),
		Min:    make(floats, slots),
		Max:    make(floats, slots),
		Last:   make(floats, slots),
	}
	for i := 0; i < slots; i++ {
		seq := endSeq - int64(slots-1-i)
		b := emptyBucket
		if back := r.headSeq - seq; back >= 0 && back < int64(slots) {
			b = r.buckets[(r.head-int(back)+slots)%slots]
		}
		sp.Min[i], sp.Max[i], sp.Last[i] = b.min, b.max, b.last
	}
	return sp
}

// deviceSummary is what the devices page shows from the store.
type deviceSummary struct {
	info     DeviceInfo
	points   int
	quality  [3]int // good, uncertain, bad (points seen)
	lastScan time.Time
	scans    uint64
}

func (s *Store) devices() []deviceSummary {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]deviceSummary, 0, len(s.order))
	for _, d := range s.order {
		ds := deviceSummary{info: d.info, points: len(d.points), lastScan: d.lastScan, scans: d.scans}
		for i := range d.points {
			if p := &d.points[i]; p.seen {
				st := p.status
				if st > ferry.Bad {
					st = ferry.Bad
				}
				ds.quality[st]++
			}
		}
		out = append(out, ds)
	}
	return out
}

// jsonValue is v for encoding/json: a number, bool, string or nil; NaN and
// ±Inf as strings (JSON has no such numbers).
func jsonValue(v ferry.Value) any {
	switch v.Kind() {
	case ferry.KindNone:
		return nil
	case ferry.KindFloat:
		f := v.Float64()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return v.String()
		}
		return f
	}
	return v.Any()
}
