package modbus

import (
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/devstat"
)

// device is one configured device at run time. Its scheduler fields are
// owned by its link's goroutine; mu guards what Plan reads.
type device struct {
	name     string
	unit     uint8
	interval time.Duration
	timeout  time.Duration
	delay    time.Duration
	reprobe  time.Duration
	lim      limits
	points   []pointDef
	stat     *devstat.Device
	log      *slog.Logger
	m        deviceMetrics
	w        writeConf // write.go

	mu     sync.Mutex
	know   knowledge
	plan   []*request
	badPts []badPoint

	// Owned by the link goroutine.
	next        time.Time // next scheduled poll
	lastReprobe time.Time
	poll        *poll // in progress, or nil
}

func newDevice(dev Device, l *link, opts Options) *device {
	c := dev.Config
	d := &device{
		name:     dev.Name,
		unit:     c.Unit,
		interval: c.Interval,
		timeout:  c.Timeout,
		delay:    c.RequestDelay,
		reprobe:  c.Reprobe,
		lim:      limits{maxRegs: int(c.MaxRegisters), maxBits: int(c.MaxBits), maxGap: int(c.MaxGap)},
		log:      l.log.With("device", dev.Name),
		m:        opts.Metrics.device(dev.Name),
		w:        newWriteConf(dev),
	}
	d.stat = opts.Devices.Device("modbus", dev.Name, l.addr.String(), d.log, opts.Now)
	d.points = make([]pointDef, len(dev.Points))
	decs := decoderSet{}
	for i := range dev.Points {
		p := &dev.Points[i]
		t, addr, _ := p.location()
		dec := decs.get(p, t)
		n := dec.regs
		if t.bits() {
			n = 1
		}
		d.points[i] = pointDef{name: p.Name, table: t, addr: int(addr), n: n, dec: dec}
	}
	d.replan()
	return d
}

// replan recomputes the requests from the points and what was learned.
func (d *device) replan() {
	plan, bad := planRequests(d.points, d.lim, &d.know)
	d.mu.Lock()
	d.plan, d.badPts = plan, bad
	d.mu.Unlock()
	d.m.planned.Set(float64(len(plan)))
	d.m.badRanges.Set(float64(len(d.know.bad)))
}

// learn records a bad range; it reports whether it is new.
func (d *device) learn(b badRange) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.know.add(b)
}

// learnLimit records that requests of table t must not exceed n.
func (d *device) learnLimit(t table, n int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n < 1 || (d.know.limit[t] != 0 && d.know.limit[t] <= n) {
		return false
	}
	d.know.limit[t] = n
	return true
}

func (d *device) planSnapshot() DevicePlan {
	d.mu.Lock()
	defer d.mu.Unlock()
	dp := DevicePlan{Device: d.name, Unit: d.unit, Interval: d.interval, Timeout: d.timeout, Points: len(d.points)}
	for _, r := range d.plan {
		rp := RequestPlan{Unit: d.unit, Table: r.table.String(), Start: uint16(r.start), Count: uint16(r.count())}
		for _, a := range r.atoms {
			for _, i := range a.points {
				rp.Points = append(rp.Points, d.points[i].name)
			}
		}
		dp.Requests = append(dp.Requests, rp)
	}
	for _, b := range d.know.bad {
		br := BadRange{Table: b.table.String(), Start: uint16(b.start), Count: uint16(b.count()), Gap: b.gap, Reason: b.reason}
		for _, p := range d.points {
			if !b.gap && p.table == b.table && b.overlaps(span{p.addr, p.addr + p.n}) {
				br.Points = append(br.Points, p.name)
			}
		}
		dp.Bad = append(dp.Bad, br)
	}
	slices.SortFunc(dp.Bad, func(a, b BadRange) int {
		if a.Table != b.Table {
			if a.Table < b.Table {
				return -1
			}
			return 1
		}
		return int(a.Start) - int(b.Start)
	})
	return dp
}

// poll is one poll of a device in progress.
type poll struct {
	start   time.Time
	samples []ferry.Sample
	read    []bool // the point has its sample
	queue   []*job
	learned bool // knowledge changed: replan when done
	// clean is false when a request failed for a reason other than what
	// fault isolation learns from (timeout, bad frame, other exception):
	// the poll then proves nothing about ranges it did not learn.
	clean bool
	fresh bool // nothing was known when the poll began

	reprobe bool
	before  knowledge // reprobe: what was known before
}

// job is one request of a poll; split jobs have a parent.
type job struct {
	req     *request
	parent  *job
	kids    [2]*job // the halves of a split request
	pending int     // children not finished
	allOK   bool    // every finished child's own request succeeded
}

// begin starts a poll at now.
func (d *device) begin(now time.Time) {
	p := &poll{start: now, samples: make([]ferry.Sample, len(d.points)), read: make([]bool, len(d.points)),
		clean: true, fresh: d.know.empty()}
	if d.reprobe > 0 && !d.know.empty() && now.Sub(d.lastReprobe) >= d.reprobe {
		d.mu.Lock()
		p.reprobe, p.before = true, d.know
		d.know = knowledge{}
		d.mu.Unlock()
		d.replan()
		d.lastReprobe = now
		d.m.reprobes.Inc()
		d.log.Debug("re-probing bad ranges", "ranges", len(p.before.bad))
	}
	for i := range d.points {
		p.samples[i] = ferry.Sample{Device: d.name, Point: d.points[i].name, Time: now}
	}
	for _, b := range d.badPts {
		p.samples[b.idx].Quality = ferry.BadQuality(b.reason)
		p.read[b.idx] = true
	}
	p.queue = make([]*job, len(d.plan))
	for i, r := range d.plan {
		p.queue[i] = &job{req: r}
	}
	d.poll = p
}

// fill decodes the points of a successful request.
func (d *device) fill(r *request, data []byte, t time.Time) {
	p := d.poll
	for _, a := range r.atoms {
		for _, i := range a.points {
			pt := &d.points[i]
			s := &p.samples[i]
			s.Time = t
			p.read[i] = true
			off := pt.addr - r.start
			var ok bool
			if r.table.bits() {
				s.Value, ok = decodeBit(data, off)
			} else if 2*off <= len(data) {
				s.Value, ok = pt.dec.decode(data[2*off:])
			}
			if ok && !finite(s.Value) {
				s.Quality = ferry.BadQuality(reasonOutOfRange)
				d.m.outOfRange.Inc()
				d.stat.Error(reasonOutOfRange, &rangeError{point: pt.name, table: r.table, addr: pt.addr, v: s.Value})
				continue
			}
			if ok {
				s.Quality = ferry.GoodQuality
				continue
			}
			s.Value = ferry.Value{}
			s.Quality = ferry.BadQuality(ferry.ReasonDecode)
			d.m.decodeErr.Inc()
			d.stat.Error(ferry.ReasonDecode, &decodeError{point: pt.name, table: r.table, addr: pt.addr})
		}
	}
}

// fail marks the points of r Bad with reason.
func (d *device) fail(r *request, reason string, t time.Time) {
	p := d.poll
	q := ferry.BadQuality(reason)
	for _, a := range r.atoms {
		for _, i := range a.points {
			p.samples[i].Quality, p.samples[i].Value, p.samples[i].Time = q, ferry.Value{}, t
			p.read[i] = true
		}
	}
}

// abort marks every point not read yet Bad with reason and drops the
// remaining requests.
func (d *device) abort(reason string, t time.Time) {
	p := d.poll
	q := ferry.BadQuality(reason)
	for i := range p.read {
		if !p.read[i] {
			p.samples[i].Quality, p.samples[i].Time = q, t
			p.read[i] = true
		}
	}
	p.queue = p.queue[:0]
	p.clean = false
}

// finish completes the poll: learn, replan, report and emit.
func (d *device) finish(now time.Time, emit ferry.EmitFunc) {
	p := d.poll
	d.poll = nil
	switch {
	case p.reprobe && !p.clean:
		// Inconclusive: keep what was known, retry at the next re-probe.
		d.mu.Lock()
		for _, b := range p.before.bad {
			d.know.add(b)
		}
		for t, n := range p.before.limit {
			if n > 0 && (d.know.limit[t] == 0 || n < d.know.limit[t]) {
				d.know.limit[t] = n
			}
		}
		d.mu.Unlock()
	case p.reprobe:
		d.logReprobe(p.before)
	case p.learned && p.fresh:
		d.lastReprobe = p.start // the first re-probe comes one period after learning
	}
	if p.learned || p.reprobe {
		d.replan()
	}
	d.stat.Polled(p.start, now.Sub(p.start), p.samples)
	emit(ferry.Scan{Device: d.name, Time: p.start, Samples: p.samples})
}

// logReprobe logs the ranges a re-probe found readable again.
func (d *device) logReprobe(before knowledge) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, b := range before.bad {
		still := false
		for _, x := range d.know.bad {
			if x.table == b.table && x.overlaps(b.span) {
				still = true
				break
			}
		}
		if !still {
			d.log.Info("range readable again", "table", b.table.String(), "range", b.span.String())
		}
	}
}

// decodeError is recorded when a point's bytes do not make a value.
type decodeError struct {
	point string
	table table
	addr  int
}

func (e *decodeError) Error() string {
	return "decode point " + e.point + " at " + e.table.String() + " " + span{e.addr, e.addr + 1}.String() + ": short response"
}

// rangeError is recorded when a point decodes to a NaN or an infinity.
type rangeError struct {
	point string
	table table
	addr  int
	v     ferry.Value
}

func (e *rangeError) Error() string {
	return "point " + e.point + " at " + e.table.String() + " " + span{e.addr, e.addr + 1}.String() + " is " + e.v.String() + ": not a finite number"
}
