// Package reduce cuts what goes upstream without cutting what the rules
// see: report-by-exception (deadband, max_silence heartbeats) and windowed
// aggregation (min, max, mean, … over aligned windows), configured per
// point by the `reduce:` section. See README.md in this folder.
//
// The gateway's pipeline calls [Reducer.Apply] on each scan after the rule
// engine has seen it and before the buffer stores it; Apply takes out what
// need not go upstream and adds the aggregates of the windows that ended.
// A ticker calls [Reducer.Flush] for windows whose end passed with no later
// sample; [Reducer.Close], at shutdown, emits the windows still open as
// partial ones.
//
// Promises: a point's first sample, every quality change and the first
// sample after a gap always go upstream; a numeric point never sends more
// samples than it read; a window's samples are counted in exactly one
// emitted window, and a window cut short (shutdown, reload) is emitted
// flagged partial, never dropped or counted twice.
//
// Caveat: the state (last values sent, open windows) lives in memory. A
// kill -9 loses the open windows; the raw samples folded into them were
// already finished (an MQTT QoS 1 message acknowledged) because nothing of
// a raw sample that is not sent needs to be durable. After any restart each
// point's first sample is sent again.
//
// The package does no I/O; time comes from the samples and from an
// injected clock.
package reduce

import (
	"math"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
)

// ReasonPartialWindow is the quality reason of an aggregate whose window
// was not seen whole: cut by a shutdown or a reload, or begun before the
// reducer started. Such an aggregate is Uncertain.
const ReasonPartialWindow = "partial window"

// Grace is how long after a window's end Flush waits for late samples
// (their source time inside the window) before it emits the window.
const Grace = 2 * time.Second

// Options is what a Reducer takes besides its configuration.
type Options struct {
	// Registerer receives the reducer's metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Now is the clock (default time.Now): the start of the first
	// windows, and when Flush and Close run.
	Now func() time.Time
}

// Reducer applies a Config to scans. Its methods are safe for concurrent
// use.
type Reducer struct {
	mu   sync.Mutex
	cfg  Config
	base Policy // what a point entry's unset fields take
	now  func() time.Time
	// since is when the reducer started: a window that began before it is
	// partial.
	since  time.Time
	points map[key]*state
	m      *metrics
	devs   map[string]*devMetrics
}

type key struct{ device, point string }

// rule is what applies to one point, resolved from the Config.
type rule struct {
	reduce bool // report-by-exception applies
	policy Policy
	agg    *Aggregate
}

// state is what the reducer remembers of one point.
type state struct {
	rule rule
	// since is when this state began: windows that started before it
	// are partial.
	since time.Time
	// The last sample sent upstream.
	sent        bool
	lastValue   ferry.Value
	lastQuality ferry.Quality
	lastSent    time.Time
	// lastSeen is the time of the last sample read.
	lastSeen time.Time
	win      *window
	// done is the end of the last window emitted: a later sample from
	// before it is late.
	done time.Time
}

// window is an open aggregation window.
type window struct {
	start, end time.Time
	partial    bool // began before the state did
	n          int  // samples included
	min, max   float64
	sum        float64
	first      ferry.Value
	last       ferry.Value
	lastTime   time.Time
	// excluded is the reason of the last sample left out ("" if none):
	// a Bad sample's own reason, or "not a number".
	excluded string
}

// New returns a Reducer for cfg, which must be valid.
func New(cfg Config, opts Options) (*Reducer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Reducer{now: opts.Now, points: map[key]*state{}, m: newMetrics(opts.Registerer), devs: map[string]*devMetrics{}}
	r.since = r.now()
	r.setConfig(cfg)
	return r, nil
}

func (r *Reducer) setConfig(cfg Config) {
	r.cfg = cfg
	if cfg.Defaults != nil {
		r.base = *cfg.Defaults
	} else {
		r.base = Policy{}
		r.base.SetDefaults()
	}
}

// active reports whether the configuration reduces anything.
func (r *Reducer) active() bool { return r.cfg.Defaults != nil || len(r.cfg.Points) > 0 }

// resolve returns the rule of device.point under the current config.
func (r *Reducer) resolve(device, point string) rule {
	i := r.cfg.Match(device, point)
	if i < 0 {
		if r.cfg.Defaults == nil {
			return rule{}
		}
		return rule{reduce: true, policy: *r.cfg.Defaults}
	}
	e := &r.cfg.Points[i]
	p := r.base
	if e.Deadband != nil {
		p.Deadband = *e.Deadband
	}
	if e.DeadbandPercent != nil {
		p.DeadbandPercent = *e.DeadbandPercent
	}
	if e.MaxSilence != nil {
		p.MaxSilence = *e.MaxSilence
	}
	if e.Gap != nil {
		p.Gap = *e.Gap
	}
	ru := rule{reduce: true, policy: p}
	if e.Aggregate != nil {
		a := *e.Aggregate
		a.Functions = append([]string(nil), a.Functions...)
		ru.agg = &a
		// Raw samples of an aggregated point go upstream only with
		// keep_raw.
		ru.reduce = a.KeepRaw
	}
	return ru
}

// state returns the state of device.point, creating it.
func (r *Reducer) state(device, point string) *state {
	k := key{device, point}
	st := r.points[k]
	if st == nil {
		st = &state{rule: r.resolve(device, point), since: r.since}
		r.points[k] = st
	}
	return st
}

// Apply reduces s in place: it removes the samples that need not go
// upstream and appends the aggregates of windows that s's samples ended.
// It reports whether s still holds anything to store; when it does not
// (every sample suppressed or folded into a window), the caller finishes s
// at once (s.Finish(nil)): nothing of it needs to be durable. A scan that
// came with no samples is left as it is (true).
func (r *Reducer) Apply(s *ferry.Scan) bool {
	if len(s.Samples) == 0 {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.active() {
		return true
	}
	var emitted []ferry.Sample
	kept := s.Samples[:0]
	for _, smp := range s.Samples {
		t := smp.Time
		if t.IsZero() {
			t = s.Time
		}
		st := r.state(smp.Device, smp.Point)
		if st.rule.agg != nil {
			emitted = r.aggregate(st, smp, t, emitted)
		}
		if !st.rule.reduce {
			if st.rule.agg == nil {
				kept = append(kept, smp) // not reduced
			}
			continue
		}
		if st.send(smp, t) {
			kept = append(kept, smp)
		} else {
			r.dev(smp.Device).suppressed.Inc()
		}
	}
	// Clear what the driver's slice held past the kept samples, so that
	// no reference outlives its use.
	clear(s.Samples[len(kept):])
	s.Samples = append(kept, emitted...)
	return len(s.Samples) > 0
}

// send decides whether smp (read at t) goes upstream, and remembers it.
func (st *state) send(smp ferry.Sample, t time.Time) bool {
	p := &st.rule.policy
	gap := !st.lastSeen.IsZero() && (t.Before(st.lastSeen) || (p.Gap > 0 && t.Sub(st.lastSeen) >= p.Gap))
	st.lastSeen = t
	ok := !st.sent || // first value
		smp.Quality != st.lastQuality || // quality change
		gap || // first value after a gap, or a clock that went back
		(p.MaxSilence > 0 && t.Sub(st.lastSent) >= p.MaxSilence) || // heartbeat
		moved(p, st.lastValue, smp.Value)
	if ok {
		st.sent, st.lastValue, st.lastQuality, st.lastSent = true, smp.Value, smp.Quality, t
	}
	return ok
}

// moved reports whether v differs from last by more than the deadband.
// Numbers compare by the deadband; bools, strings and values of different
// kinds are sent on any change.
func moved(p *Policy, last, v ferry.Value) bool {
	if v.Equal(last) {
		return false
	}
	if !isNumber(last) || !isNumber(v) {
		return true
	}
	a, b := last.Float64(), v.Float64()
	d := math.Abs(b - a)
	if math.IsNaN(d) {
		return true
	}
	return d > max(p.Deadband, p.DeadbandPercent/100*math.Abs(a))
}

// isNumber reports whether v is a float or an integer (bools are sent on
// change, not by deadband).
func isNumber(v ferry.Value) bool {
	switch v.Kind() {
	case ferry.KindFloat, ferry.KindInt, ferry.KindUint:
		return true
	}
	return false
}

// Exclusion reasons, as the reason label of
// ferry_reduce_excluded_samples_total.
const (
	excludedBad       = "bad"
	excludedNotNumber = "not_number"
	excludedLate      = "late"
)

// aggregate folds smp (read at t) into its window, emitting the window
// before it if smp begins a new one.
func (r *Reducer) aggregate(st *state, smp ferry.Sample, t time.Time, out []ferry.Sample) []ferry.Sample {
	dm := r.dev(smp.Device)
	start := alignedStart(t, st.rule.agg.Window)
	if st.win != nil && !start.Equal(st.win.start) {
		if start.Before(st.win.start) {
			dm.excluded(excludedLate).Inc()
			return out
		}
		out = r.emit(smp.Device, smp.Point, st, time.Time{}, out)
	}
	if start.Before(st.done) {
		dm.excluded(excludedLate).Inc()
		return out
	}
	w := st.win
	if w == nil {
		w = &window{start: start, end: start.Add(st.rule.agg.Window), partial: start.Before(st.since)}
		st.win = w
	}
	if smp.Quality.Status == ferry.Bad {
		w.excluded = smp.Quality.Reason
		if w.excluded == "" {
			w.excluded = "bad"
		}
		dm.excluded(excludedBad).Inc()
		return out
	}
	var f float64
	switch smp.Value.Kind() {
	case ferry.KindFloat, ferry.KindInt, ferry.KindUint, ferry.KindBool:
		f = smp.Value.Float64()
	}
	if !smp.Value.IsNone() && smp.Value.Kind() != ferry.KindString && !math.IsNaN(f) {
		if w.n == 0 {
			w.min, w.max, w.first = f, f, smp.Value
		}
		w.n++
		w.min, w.max, w.sum = min(w.min, f), max(w.max, f), w.sum+f
		w.last, w.lastTime = smp.Value, t
		dm.aggregated.Inc()
		return out
	}
	w.excluded = "not a number"
	dm.excluded(excludedNotNumber).Inc()
	return out
}

// alignedStart returns the start of the window of length w holding t:
// windows begin at multiples of w since the Unix epoch.
func alignedStart(t time.Time, w time.Duration) time.Time {
	ns := t.UnixNano()
	m := ns % int64(w)
	if m < 0 {
		m += int64(w)
	}
	return time.Unix(0, ns-m).UTC()
}

// emit appends the samples of st's open window to out and closes it. A
// non-zero cut is when the window was cut short (shutdown, reload): the
// aggregates are then partial, timed at the cut (no later than the
// window's end and no earlier than its last sample).
func (r *Reducer) emit(device, point string, st *state, cut time.Time, out []ferry.Sample) []ferry.Sample {
	w := st.win
	st.win = nil
	t, partial := w.end, w.partial
	if !cut.IsZero() && cut.Before(w.end) {
		partial = true
		t = cut
		if t.Before(w.lastTime) {
			t = w.lastTime
		}
	}
	st.done = w.end
	q := ferry.GoodQuality
	if partial {
		q = ferry.UncertainQuality(ReasonPartialWindow)
	}
	none := ferry.BadQuality(w.excluded)
	if w.excluded == "" {
		none = ferry.BadQuality("no samples")
	}
	dm := r.dev(device)
	dm.windows.Inc()
	if partial {
		dm.partial.Inc()
	}
	for _, fn := range st.rule.agg.Functions {
		smp := ferry.Sample{Device: device, Point: point + "." + fn, Quality: q, Time: t}
		switch {
		case fn == "count":
			smp.Value = ferry.UintValue(uint64(w.n))
		case w.n == 0:
			smp.Quality = none
		case fn == "min":
			smp.Value = ferry.FloatValue(w.min)
		case fn == "max":
			smp.Value = ferry.FloatValue(w.max)
		case fn == "mean":
			smp.Value = ferry.FloatValue(w.sum / float64(w.n))
		case fn == "sum":
			smp.Value = ferry.FloatValue(w.sum)
		case fn == "first":
			smp.Value = w.first
		case fn == "last":
			smp.Value = w.last
		}
		out = append(out, smp)
	}
	return out
}

// Flush emits the windows whose end passed Grace ago with no sample of
// a later window to close them: one scan per device, in device order. The
// pipeline calls it from a ticker.
func (r *Reducer) Flush() []ferry.Scan {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	return r.emitWhere(now, func(w *window) bool { return !now.Before(w.end.Add(Grace)) }, time.Time{})
}

// Close emits every open window, those whose end has not come flagged
// partial, and returns them as one scan per device. The pipeline calls it
// at shutdown, once the last scan went through Apply. A reducer started
// afterwards (a restart) continues those windows as new partial ones.
func (r *Reducer) Close() []ferry.Scan {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	return r.emitWhere(now, func(*window) bool { return true }, now)
}

// emitWhere emits the open windows for which due is true (cut short at
// cut, when not zero) as one scan per device.
func (r *Reducer) emitWhere(now time.Time, due func(*window) bool, cut time.Time) []ferry.Scan {
	byDev := map[string][]ferry.Sample{}
	for k, st := range r.points {
		if st.win != nil && due(st.win) {
			byDev[k.device] = r.emit(k.device, k.point, st, cut, byDev[k.device])
		}
	}
	return scans(now, byDev)
}

// scans returns one scan per device of byDev, in device order, each
// sample in point order.
func scans(now time.Time, byDev map[string][]ferry.Sample) []ferry.Scan {
	if len(byDev) == 0 {
		return nil
	}
	out := make([]ferry.Scan, 0, len(byDev))
	for dev, smps := range byDev {
		sort.SliceStable(smps, func(i, j int) bool { return smps[i].Point < smps[j].Point })
		out = append(out, ferry.Scan{Device: dev, Time: now, Samples: smps})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}

// Update swaps in cfg. Points whose settings are unchanged keep their
// state (last values sent, open windows). A point whose settings changed
// starts afresh, as after a restart: its next sample is sent, and its open
// window is emitted partial (returned, one scan per device, for the
// caller to store) and continues as a new partial one. When cfg is not
// valid nothing changes and the error is returned.
func (r *Reducer) Update(cfg Config) ([]ferry.Scan, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setConfig(cfg)
	now := r.now()
	byDev := map[string][]ferry.Sample{}
	for k, st := range r.points {
		ru := r.resolve(k.device, k.point)
		if reflect.DeepEqual(ru, st.rule) {
			continue
		}
		if st.win != nil {
			byDev[k.device] = r.emit(k.device, k.point, st, now, byDev[k.device])
		}
		if !ru.reduce && ru.agg == nil {
			delete(r.points, k) // passes unreduced: no state to keep
			continue
		}
		*st = state{rule: ru, since: now}
	}
	return scans(now, byDev), nil
}

// metrics are the reducer's series.
type metrics struct {
	suppressed, aggregated, windows, partial *prometheus.CounterVec
	excluded                                 *prometheus.CounterVec
}

// devMetrics are the series of one device.
type devMetrics struct {
	suppressed, aggregated, windows, partial prometheus.Counter
	byReason                                 map[string]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	dev := []string{"device"}
	m := &metrics{
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_reduce_suppressed_samples_total", Help: "Samples not sent upstream by report-by-exception (deadband, unchanged); rules saw them."}, dev),
		aggregated: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_reduce_aggregated_samples_total", Help: "Samples folded into aggregation windows."}, dev),
		excluded:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_reduce_excluded_samples_total", Help: "Samples of aggregated points left out of their window, by reason (bad, not_number, late)."}, []string{"device", "reason"}),
		windows:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_reduce_windows_total", Help: "Aggregation windows emitted."}, dev),
		partial:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_reduce_partial_windows_total", Help: "Aggregation windows emitted partial (cut by a shutdown or reload, or begun before the start)."}, dev),
	}
	if reg != nil {
		reg.MustRegister(m.suppressed, m.aggregated, m.excluded, m.windows, m.partial)
	}
	return m
}

// dev returns the series of device, creating them.
func (r *Reducer) dev(device string) *devMetrics {
	dm := r.devs[device]
	if dm == nil {
		dm = &devMetrics{
			suppressed: r.m.suppressed.WithLabelValues(device),
			aggregated: r.m.aggregated.WithLabelValues(device),
			windows:    r.m.windows.WithLabelValues(device),
			partial:    r.m.partial.WithLabelValues(device),
			byReason:   map[string]prometheus.Counter{},
		}
		for _, reason := range []string{excludedBad, excludedNotNumber, excludedLate} {
			dm.byReason[reason] = r.m.excluded.WithLabelValues(device, reason)
		}
		r.devs[device] = dm
	}
	return dm
}

func (dm *devMetrics) excluded(reason string) prometheus.Counter { return dm.byReason[reason] }
