package web

import (
	"math"
	"strconv"
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
	info     DeviceInfo
	points   map[string]*pointSlot
	order    []*pointSlot
	lastScan time.Time
	scans    uint64
	viewed   bool // its sparklines were asked for: its points keep rings
}

type pointSlot struct {
	info    ferry.PointInfo
	seen    bool
	value   ferry.Value
	quality ferry.Quality
	time    time.Time // the sample's (source) time
	updated time.Time // when the scan was taken
	// The last Good value, kept while the point is Bad.
	lastGood     ferry.Value
	lastGoodTime time.Time

	ring    []bucket // nil until the first numeric sample
	head    int      // index of the newest bucket
	headSeq int64    // its bucket number (time / step)
}

// bucket is one step of a sparkline; an empty bucket has NaN in last.
type bucket struct{ min, max, last float32 }

var emptyBucket = bucket{float32(math.NaN()), float32(math.NaN()), float32(math.NaN())}

func (b *bucket) empty() bool { return b.last != b.last }

// NewStore returns a store for cat. step and slots give the sparkline's
// resolution and length (zero: DefaultStep, DefaultSlots; slots below zero:
// no sparklines, and no memory for them); now may be nil.
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
func (s *Store) SetCatalog(cat Catalog) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.devs
	devs := make(map[string]*devSlot, len(cat.Devices))
	order := make([]*devSlot, 0, len(cat.Devices))
	add := func(info DeviceInfo) *devSlot {
		d := &devSlot{info: info, points: map[string]*pointSlot{}}
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
	for _, pi := range cat.Points {
		d := devs[pi.Device]
		if d == nil {
			d = add(DeviceInfo{Name: pi.Device, Protocol: pi.Protocol})
		}
		if d.points[pi.Point] != nil {
			continue
		}
		p := &pointSlot{info: pi}
		if od := old[pi.Device]; od != nil {
			if op := od.points[pi.Point]; op != nil {
				p = op
				p.info = pi
			}
		}
		d.points[pi.Point] = p
		d.order = append(d.order, p)
	}
	s.devs, s.order = devs, order
}

// Observe records the samples of one scan. Samples of points that are not
// in the catalog are counted and ignored.
func (s *Store) Observe(scan *ferry.Scan) {
	t := scan.Time
	if t.IsZero() {
		t = s.now()
	}
	seq := t.UnixNano() / s.step
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
			p = dd.points[smp.Point]
		}
		if p == nil {
			s.unknown++
			continue
		}
		p.seen = true
		p.value, p.quality, p.time, p.updated = smp.Value, smp.Quality, smp.Time, t
		if smp.Quality.Status == ferry.Good && !smp.Value.IsNone() {
			p.lastGood, p.lastGoodTime = smp.Value, smp.Time
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
			p.add(seq, float32(f), s.slots)
		}
	}
	s.mu.Unlock()
}

// add puts f into the bucket of seq.
func (p *pointSlot) add(seq int64, f float32, slots int) {
	if p.ring == nil {
		p.ring = make([]bucket, slots)
		p.reset(seq)
	}
	switch {
	case seq > p.headSeq:
		n := seq - p.headSeq
		if n > int64(slots) {
			n = int64(slots)
		}
		for ; n > 0; n-- {
			p.head++
			if p.head == slots {
				p.head = 0
			}
			p.ring[p.head] = emptyBucket
		}
		p.headSeq = seq
	case seq <= p.headSeq-int64(slots):
		// The clock went back further than the ring: start again.
		p.reset(seq)
	}
	// seq within the ring but not newer (the clock stepped back a little):
	// folded into the newest bucket.
	b := &p.ring[p.head]
	if b.empty() {
		*b = bucket{f, f, f}
		return
	}
	b.min = min(b.min, f)
	b.max = max(b.max, f)
	b.last = f
}

func (p *pointSlot) reset(seq int64) {
	for i := range p.ring {
		p.ring[i] = emptyBucket
	}
	p.head, p.headSeq = 0, seq
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
		for _, p := range d.order {
			j := Point{PointInfo: p.info, Seen: p.seen, Value: jsonValue(p.value), Time: p.time, Updated: p.updated}
			if p.seen {
				j.Quality, j.Reason = p.quality.Status.String(), p.quality.Reason
				if p.quality.Status != ferry.Good && !p.lastGood.IsNone() {
					j.LastGood, j.LastGoodTime = jsonValue(p.lastGood), p.lastGoodTime
				}
			}
			if spark && p.ring != nil {
				j.Spark = p.spark(endSeq, s.slots, s.step)
			}
			out = append(out, j)
		}
	}
	return out, true
}

// spark copies the ring as the slots buckets ending at bucket endSeq.
func (p *pointSlot) spark(endSeq int64, slots int, step int64) *Spark {
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
		if back := p.headSeq - seq; back >= 0 && back < int64(slots) {
			b = p.ring[(p.head-int(back)+slots)%slots]
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
		ds := deviceSummary{info: d.info, points: len(d.order), lastScan: d.lastScan, scans: d.scans}
		for _, p := range d.order {
			if p.seen {
				st := p.quality.Status
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
