package rules

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
)

// ErrNotFound is returned by Ack when no active alert has the given id (unknown or cleared).
var ErrNotFound = errors.New("alert not found")

// DefaultTick is how often Run re-checks time-based conditions when
// Options.Tick is zero.
const DefaultTick = 500 * time.Millisecond

// Options are the engine's collaborators.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the engine's clock (time.Now when nil). Every duration a
	// rule measures is measured on it, at the moment the engine sees a
	// sample or ticks: a device's own clock is never trusted.
	Now func() time.Time
	// State keeps the active alerts across restarts; nil keeps them in
	// memory only.
	State ferry.StateStore
	// Emit receives every transition, in order, from whichever goroutine
	// caused it (Process, Run, Update, Ack), with the engine's lock held:
	// it must not block and must not call back into the engine.
	Emit func(ferry.Alert)
	// Tick is how often Run re-checks time-based conditions (stale,
	// quality, flatline, for, clear_for); DefaultTick when zero. It is the
	// resolution of every delay.
	Tick time.Duration
}

// StateBucket is the StateStore bucket holding the active alerts, one
// JSON record per alert id.
const StateBucket = "rules_active_alerts"

// Engine evaluates rules against scans and owns the alerts they raise.
// It is safe for concurrent use: Process is called by the pipeline, Run
// ticks, Update reloads, Active and Ack serve the API.
type Engine struct {
	log   *slog.Logger
	now   func() time.Time
	emit  func(ferry.Alert)
	store ferry.StateStore
	tick  time.Duration
	m     *metrics
	evals atomic.Uint64

	mu      sync.Mutex
	g       *generation
	mark    uint64  // per Process call, dedupes rules in dirty
	dirty   []*rule // expression rules to evaluate at the end of a scan
	orphans []ferry.Alert
	pending map[string]*storedAlert // id → record to write, or nil to delete
	storeOK bool                    // the last write worked (log changes once)

	persistC chan struct{}
}

// generation is one compiled rule set with the points it reads. Update
// builds a new one and swaps it in.
type generation struct {
	devices map[string]map[string]*point
	rules   []*rule
	byName  map[string]*rule
	timed   []*rule // rules the ticker must look at
}

// point is the engine's view of one device.point.
type point struct {
	dev, name string
	val       ferry.Value // last Good value
	q         ferry.Quality
	seen      bool      // a sample arrived since the engine started
	usable    bool      // the last sample was Good
	lastGood  time.Time // when the last Good sample arrived
	badSince  time.Time // start of the current run of non-Good samples
	exprRules []*rule   // when rules reading this point (run once per scan)
	watchers  []*rule   // per-point rules targeting it (run per sample)
}

func (p *point) key() string { return p.dev + "." + p.name }

// rule is a compiled Rule.
type rule struct {
	cfg         Rule
	fp          string // fingerprint of cfg: unchanged rules keep state
	kind        kind
	sev         ferry.Severity
	msg         *template.Template
	when, clear *program
	target      *point // the alert's point, if any
	refs        []*point
	labels      map[string]string
	st          *state
}

// state is what a rule remembers between evaluations. It survives an
// Update that leaves the rule unchanged.
type state struct {
	created       time.Time
	active        bool
	alert         ferry.Alert // the current episode, when active
	lastAlarm     bool        // the last condition seen
	pendingSince  time.Time   // on-delay running since
	clearingSince time.Time   // off-delay running since
	lastSince     time.Time   // keeps alert ids unique
	mark          uint64

	stat  float64 // last rate or score, for messages
	rate  *rateWindow
	z     *zscore
	ew    *ewma
	flat  flatState
	stale time.Duration // how long the point has been silent, bad or flat
}

// New compiles rules and restores the active alerts kept in opts.State.
// An alert restored for a rule that is gone or whose definition changed
// is cleared (emitted) at the first evaluation.
func New(rules []Rule, opts Options) (*Engine, error) {
	if err := Validate(rules, nil); err != nil {
		return nil, fmt.Errorf("rules: %w", errors.Join(ferry.ErrInvalidConfig, err))
	}
	e := &Engine{
		log:      opts.Logger,
		now:      opts.Now,
		emit:     opts.Emit,
		store:    opts.State,
		tick:     opts.Tick,
		pending:  map[string]*storedAlert{},
		storeOK:  true,
		persistC: make(chan struct{}, 1),
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.emit == nil {
		e.emit = func(ferry.Alert) {}
	}
	if e.tick <= 0 {
		e.tick = DefaultTick
	}
	now := e.now()
	g, err := compile(rules, now)
	if err != nil {
		return nil, err
	}
	e.g = g
	e.dirty = make([]*rule, 0, len(g.rules))
	e.m = newMetrics(opts.Registerer, e)
	e.m.loaded.Set(float64(len(g.rules)))
	if err := e.restore(); err != nil {
		return nil, err
	}
	return e, nil
}

// compile builds a generation from validated rules.
func compile(rules []Rule, now time.Time) (*generation, error) {
	g := &generation{devices: map[string]map[string]*point{}, byName: map[string]*rule{}}
	slot := func(dev, name string) *point {
		pts := g.devices[dev]
		if pts == nil {
			pts = map[string]*point{}
			g.devices[dev] = pts
		}
		p := pts[name]
		if p == nil {
			p = &point{dev: dev, name: name}
			pts[name] = p
		}
		return p
	}
	for i := range rules {
		cfg := rules[i]
		r := &rule{cfg: cfg, fp: fingerprint(&cfg), sev: cfg.severity(), labels: cfg.Labels}
		r.kind = cfg.kinds()[0]
		if cfg.Message != "" {
			t, err := parseMessage(cfg.Name, cfg.Message)
			if err != nil {
				return nil, fmt.Errorf("rule %s: message: %w", cfg.Name, err)
			}
			r.msg = t
		}
		if cfg.Point != "" {
			dev, name, _ := splitRef(cfg.Point)
			r.target = slot(dev, name)
		}
		if r.kind == kindWhen {
			if err := r.compileWhen(slot); err != nil {
				return nil, err
			}
		} else {
			r.refs = []*point{r.target}
			r.target.watchers = append(r.target.watchers, r)
		}
		r.st = newState(r, now)
		if r.kind == kindStale || r.kind == kindQuality || r.kind == kindFlatline || cfg.For > 0 || cfg.ClearFor > 0 {
			g.timed = append(g.timed, r)
		}
		g.rules = append(g.rules, r)
		g.byName[cfg.Name] = r
	}
	return g, nil
}

func (r *rule) compileWhen(slot func(dev, name string) *point) error {
	var refs []ref
	for _, c := range []struct {
		src string
		dst **program
	}{{r.cfg.When, &r.when}, {r.cfg.Clear, &r.clear}} {
		if c.src == "" {
			continue
		}
		p, err := parseExpr(c.src, nil)
		if err != nil {
			return fmt.Errorf("rule %s: %w", r.cfg.Name, err)
		}
		if *c.dst, err = bindProgram(p, slot); err != nil {
			return fmt.Errorf("rule %s: %w", r.cfg.Name, err)
		}
		refs = append(refs, p.refs...)
	}
	seen := map[*point]bool{}
	for _, rf := range refs {
		p := slot(rf.Device, rf.Point)
		if !seen[p] {
			seen[p] = true
			r.refs = append(r.refs, p)
			p.exprRules = append(p.exprRules, r)
		}
	}
	// The alert is about the rule's point, or the one point it reads.
	if r.target == nil && len(r.refs) == 1 {
		r.target = r.refs[0]
	}
	return nil
}

func newState(r *rule, now time.Time) *state {
	st := &state{created: now}
	switch r.kind {
	case kindRate:
		st.rate = &rateWindow{}
	case kindAnomaly:
		if r.cfg.Anomaly.Method == "ewma" {
			st.ew = &ewma{}
		} else {
			st.z = newZscore(r.cfg.Anomaly.Window)
		}
	}
	return st
}

// fingerprint identifies a rule's definition.
func fingerprint(r *Rule) string {
	b, _ := json.Marshal(r)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// Process evaluates the rules that read the points of s. It is called by
// the pipeline goroutine for every scan before it is stored; it does not
// keep s or its samples. Samples of points no rule reads cost two map
// lookups.
func (e *Engine) Process(s *ferry.Scan) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.orphans) > 0 {
		e.clearOrphans(e.now())
	}
	g := e.g
	e.mark++
	dirty := e.dirty[:0]
	var n uint64
	var now time.Time // read once, when a sample concerns a rule
	for i := range s.Samples {
		sm := &s.Samples[i]
		dev := sm.Device
		if dev == "" {
			dev = s.Device
		}
		p := g.devices[dev][sm.Point]
		if p == nil {
			continue
		}
		if now.IsZero() {
			now = e.now()
		}
		p.seen = true
		p.q = sm.Quality
		if sm.Quality.Status == ferry.Good {
			p.val, p.usable, p.lastGood, p.badSince = sm.Value, true, now, time.Time{}
		} else {
			p.usable = false
			if p.badSince.IsZero() {
				p.badSince = now
			}
		}
		for _, r := range p.watchers {
			e.sample(r, p, now)
			n++
		}
		for _, r := range p.exprRules {
			if r.st.mark != e.mark {
				r.st.mark = e.mark
				dirty = append(dirty, r)
			}
		}
	}
	for _, r := range dirty {
		e.evalWhen(r, now)
		n++
	}
	clear(dirty)
	e.dirty = dirty[:0]
	if n > 0 {
		e.evals.Add(n)
	}
}

// evalWhen evaluates a when rule: `when` while inactive; `clear` (or
// `when` again) while active, which gives hysteresis.
func (e *Engine) evalWhen(r *rule, now time.Time) {
	pg, invert := r.when, false
	if r.st.active && r.clear != nil {
		pg, invert = r.clear, true
	}
	v, ok, err := pg.eval()
	if err != nil {
		e.m.exprErrors.WithLabelValues(r.cfg.Name).Inc()
		e.log.Debug("rule expression failed", "rule", r.cfg.Name, "expr", pg.src, "err", err)
		return
	}
	if ok {
		e.step(r, v != invert, now)
	}
}

// sample evaluates a per-point rule for a new sample of its point.
func (e *Engine) sample(r *rule, p *point, now time.Time) {
	st := r.st
	switch r.kind {
	case kindStale, kindQuality:
		e.step(r, e.timeCond(r, now), now)
	case kindFlatline:
		if f, ok := p.val.Number(); !p.usable || ok && !finite(f) {
			// A gap in the data (or NaN, ±Inf: not a measurement) is
			// not a flat line: start over.
			st.flat.has = false
			return
		}
		st.flat.observe(p.val, now, r.cfg.Flatline.Epsilon)
		e.step(r, e.timeCond(r, now), now)
	case kindRate:
		f, ok := p.val.Number()
		if !p.usable || !ok || !finite(f) {
			return
		}
		rate, ok := st.rate.add(now, f, r.cfg.Rate.Window)
		if !ok {
			return
		}
		rate *= r.cfg.Rate.perSeconds()
		st.stat = rate
		c := r.cfg.Rate
		e.step(r, c.Above != nil && rate > *c.Above || c.Below != nil && rate < *c.Below, now)
	case kindAnomaly:
		f, ok := p.val.Number()
		if !p.usable || !ok || !finite(f) {
			return
		}
		a := r.cfg.Anomaly
		var score float64
		if st.z != nil {
			score, ok = st.z.add(now, f, a)
		} else {
			score, ok = st.ew.add(now, f, a)
		}
		if !ok {
			return
		}
		st.stat = score
		// The score in the watched direction.
		d := score
		switch a.Direction {
		case "below":
			d = -score
		case "both":
			d = math.Abs(score)
		}
		// Raise above threshold; once active, stay active until the
		// score falls below the (lower) clear threshold: hysteresis.
		alarm := d > a.Threshold
		if st.active {
			alarm = d >= a.clearThreshold()
		}
		e.step(r, alarm, now)
	}
}

// finite reports whether f is a measurement: NaN and ±Inf (which some
// devices send as Good) would poison a rate window or an anomaly
// baseline for as long as they stay in it.
func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// timeCond is the condition of a stale, quality or flatline rule now.
// Raising needs the bad condition to have lasted; clearing needs evidence
// (a Good sample, a moved value), so that a restart with an active alert
// and no data yet holds the alert instead of clearing it.
func (e *Engine) timeCond(r *rule, now time.Time) bool {
	st, p := r.st, r.target
	switch r.kind {
	case kindStale:
		if !st.active {
			ref := p.lastGood
			if ref.IsZero() {
				ref = st.created
			}
			st.stale = now.Sub(ref)
			return st.stale >= r.cfg.Stale
		}
		if p.lastGood.IsZero() {
			return true
		}
		return now.Sub(p.lastGood) >= r.cfg.Stale
	case kindQuality:
		if !st.active {
			if !p.seen || p.usable {
				return false
			}
			st.stale = now.Sub(p.badSince)
			return st.stale >= r.cfg.Quality
		}
		return !p.seen || !p.usable
	case kindFlatline:
		if !st.active {
			if !st.flat.has || !p.usable {
				return false
			}
			st.stale = now.Sub(st.flat.since)
			return st.stale >= r.cfg.Flatline.Duration
		}
		return !st.flat.moved
	}
	return st.lastAlarm
}

// step feeds one condition into a rule's on-delay/off-delay machine and
// raises or clears when a delay has run out.
func (e *Engine) step(r *rule, alarm bool, now time.Time) {
	st := r.st
	st.lastAlarm = alarm
	if alarm {
		st.clearingSince = time.Time{}
		if st.active {
			return
		}
		if st.pendingSince.IsZero() {
			st.pendingSince = now
		}
		if now.Sub(st.pendingSince) >= r.cfg.For {
			e.raise(r, now)
		}
		return
	}
	st.pendingSince = time.Time{}
	if !st.active {
		return
	}
	if st.clearingSince.IsZero() {
		st.clearingSince = now
	}
	if now.Sub(st.clearingSince) >= r.cfg.ClearFor {
		e.clearRule(r, now)
	}
}

func (e *Engine) raise(r *rule, now time.Time) {
	st := r.st
	since := now
	if !since.After(st.lastSince) {
		since = st.lastSince.Add(time.Nanosecond)
	}
	st.active, st.pendingSince, st.clearingSince, st.lastSince = true, time.Time{}, time.Time{}, since
	st.flat.moved = false
	a := ferry.Alert{
		ID:       alertID(r.cfg.Name, since),
		Rule:     r.cfg.Name,
		Severity: r.sev,
		State:    ferry.AlertRaised,
		Labels:   r.labels,
		Since:    since,
		Time:     now,
	}
	if r.target != nil {
		a.Device, a.Point, a.Value = r.target.dev, r.target.name, r.target.val
	}
	a.Message = e.message(r, &a)
	st.alert = a
	e.transition(a)
}

func (e *Engine) clearRule(r *rule, now time.Time) {
	st := r.st
	a := st.alert
	a.State, a.Time = ferry.AlertCleared, now
	if r.target != nil {
		a.Value = r.target.val
	}
	a.Message = e.message(r, &a)
	st.active, st.alert, st.pendingSince, st.clearingSince = false, ferry.Alert{}, time.Time{}, time.Time{}
	e.transition(a)
}

// transition records, persists and emits one alert transition.
func (e *Engine) transition(a ferry.Alert) {
	sev := a.Severity.String()
	switch a.State {
	case ferry.AlertRaised:
		e.m.active.WithLabelValues(sev).Inc()
		e.log.Debug("alert raised", "rule", a.Rule, "id", a.ID)
	case ferry.AlertCleared:
		e.m.active.WithLabelValues(sev).Dec()
		e.log.Debug("alert cleared", "rule", a.Rule, "id", a.ID)
	}
	e.m.transitions.WithLabelValues(a.Rule, a.State.String()).Inc()
	if e.store != nil {
		if a.State.Active() {
			e.pending[a.ID] = newStored(a, e.fpOf(a.Rule))
		} else {
			e.pending[a.ID] = nil
		}
		select {
		case e.persistC <- struct{}{}:
		default:
		}
	}
	e.emit(a)
}

func (e *Engine) fpOf(name string) string {
	if r := e.g.byName[name]; r != nil {
		return r.fp
	}
	return ""
}

// alertID is the id of the episode of rule raised at since: the rule's
// name and the raise time, which the engine keeps strictly increasing per
// rule.
func alertID(rule string, since time.Time) string {
	return rule + "-" + strconv.FormatInt(since.UnixNano(), 36)
}

// clearOrphans clears restored alerts that no rule owns any more.
func (e *Engine) clearOrphans(now time.Time) {
	for _, a := range e.orphans {
		a.State, a.Time = ferry.AlertCleared, now
		e.log.Info("clearing alert of a removed or changed rule", "rule", a.Rule, "id", a.ID)
		e.transition(a)
	}
	e.orphans = nil
}

// Run re-checks time-based conditions every tick and writes alert state
// to the StateStore, until ctx ends; then it writes what is pending and
// returns nil. Cancel it after the last Process call so that the last
// transitions are written.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			e.persist()
			return nil
		case <-t.C:
			e.Tick()
			e.persist()
		case <-e.persistC:
			e.persist()
		}
	}
}

// Tick re-checks every time-based condition now. Run calls it every
// Options.Tick; tests with an injected clock call it directly.
func (e *Engine) Tick() {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	if len(e.orphans) > 0 {
		e.clearOrphans(now)
	}
	var n uint64
	for _, r := range e.g.timed {
		switch r.kind {
		case kindStale, kindQuality, kindFlatline:
			e.step(r, e.timeCond(r, now), now)
			n++
		default:
			// A delay runs on without samples (a point published on
			// change) but not while a point is Bad: its value is unknown.
			if (!r.st.pendingSince.IsZero() || !r.st.clearingSince.IsZero()) && r.usable() {
				e.step(r, r.st.lastAlarm, now)
				n++
			}
		}
	}
	e.evals.Add(n)
}

// usable reports whether every point r reads has a Good value now.
func (r *rule) usable() bool {
	for _, p := range r.refs {
		if !p.usable {
			return false
		}
	}
	return true
}

// Update swaps in a new rule set. A rule whose definition is unchanged
// keeps its state and its active alert; the active alert of a rule that
// was removed or changed is cleared. Points keep their last values, so a
// new rule sees data at once. On error the running rules stay.
func (e *Engine) Update(rules []Rule) error {
	if err := Validate(rules, nil); err != nil {
		return fmt.Errorf("rules: %w", errors.Join(ferry.ErrInvalidConfig, err))
	}
	ng, err := compile(rules, e.now())
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	if len(e.orphans) > 0 {
		e.clearOrphans(now)
	}
	old := e.g
	for dev, pts := range ng.devices {
		for name, p := range pts {
			if op := old.devices[dev][name]; op != nil {
				p.val, p.q, p.seen, p.usable, p.lastGood, p.badSince = op.val, op.q, op.seen, op.usable, op.lastGood, op.badSince
			}
		}
	}
	kept := map[*rule]bool{}
	var same, added int
	for _, r := range ng.rules {
		if or := old.byName[r.cfg.Name]; or != nil && or.fp == r.fp {
			r.st = or.st
			kept[or] = true
			same++
		} else {
			added++
		}
	}
	e.g = ng
	e.dirty = make([]*rule, 0, len(ng.rules))
	var dropped int
	for _, or := range old.rules {
		if kept[or] {
			continue
		}
		dropped++
		if or.st.active {
			e.clearRule(or, now)
		}
	}
	e.m.loaded.Set(float64(len(ng.rules)))
	e.log.Info("rules updated", "rules", len(ng.rules), "unchanged", same, "new_or_changed", added, "removed_or_changed", dropped)
	return nil
}

// Active returns the active alerts (raised or acknowledged), oldest
// first.
func (e *Engine) Active() []ferry.Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.orphans) > 0 {
		e.clearOrphans(e.now())
	}
	var out []ferry.Alert
	for _, r := range e.g.rules {
		if r.st.active {
			out = append(out, r.st.alert)
		}
	}
	slices.SortFunc(out, func(a, b ferry.Alert) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// AckLabel is the label an acknowledged alert carries: who acknowledged.
const AckLabel = "acknowledged_by"

// Ack acknowledges the active alert id and emits the Acknowledged
// transition. by (who) is kept in the alert's labels under AckLabel.
// Acknowledging an alert twice returns it unchanged. It returns
// ErrNotFound for an unknown or cleared id.
func (e *Engine) Ack(id, by string) (ferry.Alert, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	if len(e.orphans) > 0 {
		e.clearOrphans(now)
	}
	for _, r := range e.g.rules {
		st := r.st
		if !st.active || st.alert.ID != id {
			continue
		}
		if st.alert.State == ferry.AlertAcknowledged {
			return st.alert, nil
		}
		a := st.alert
		a.State, a.Time = ferry.AlertAcknowledged, now
		if by != "" {
			a.Labels = maps.Clone(a.Labels)
			if a.Labels == nil {
				a.Labels = map[string]string{}
			}
			a.Labels[AckLabel] = by
		}
		if r.target != nil {
			a.Value = r.target.val
		}
		st.alert = a
		e.transition(a)
		return a, nil
	}
	return ferry.Alert{}, fmt.Errorf("ack %q: %w", id, ErrNotFound)
}
