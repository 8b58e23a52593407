package gateway

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/reduce"
)

// pipeline carries scans from the drivers to the rule engine and the
// buffer. Drivers call Emit from their own goroutines; one goroutine (Run)
// takes each scan, lets the rules see it, reduces it for the way upstream
// (internal/reduce), then hands it to the buffer.
//
// The channel between them is bounded, and it is the one queue of the
// sample path: when it is full, Emit drops the newest scan, counts it
// (ferry_pipeline_dropped_scans_total) and finishes it with
// ferry.ErrDropped (an MQTT QoS 1 message is then not acknowledged and
// comes back): a slow disk never blocks a driver. The buffer behind it
// does not drop again: Run hands scans over with AppendScanWait, which
// waits while the buffer's own queue is full, so a slow disk backs the
// scans up into this channel, where they are counted once. (A disk that
// makes no progress at all shows as a stuck pipeline: readiness and the
// systemd watchdog.)
type pipeline struct {
	in       chan ferry.Scan
	evaluate func(*ferry.Scan) // the rule engine, or nil
	store    func(ferry.Scan)  // the buffer
	// observe, when set, sees every scan first (the console's current
	// values); it must not block or keep the scan.
	observe func(*ferry.Scan)
	// history, when set, sees every scan after the rules and before
	// reduction (history.go); it must not block or keep the scan.
	history func(*ferry.Scan)
	// reduce, when set, takes out of each scan, after the rules saw it,
	// what need not go upstream, and adds the aggregates of the windows
	// that ended. A scan left with nothing is finished at once (Done(nil):
	// nothing of it needs to be durable). Run flushes the windows whose
	// end passed every flushEvery, and closes the rest after the last scan.
	reduce     *reduce.Reducer
	flushEvery time.Duration

	scans   prometheus.Counter
	samples prometheus.Counter
	dropped prometheus.Counter

	// mu makes Close and Emit exclusive: a driver that outlives the
	// shutdown's wait (a request the library cannot abandon) may emit
	// after Close, and must find the pipeline closed rather than send on a
	// closed channel.
	mu     sync.RWMutex
	closed bool
	// progress is when Run last took a scan (Unix nanoseconds); Err uses
	// it to tell a stuck pipeline from an idle one.
	progress atomic.Int64
	now      func() time.Time
	// stuckAfter is how long scans may wait with no progress before the
	// pipeline reports itself stuck (readiness, systemd watchdog).
	stuckAfter time.Duration
}

// defaultStuckAfter is the pipeline's stuckAfter.
const defaultStuckAfter = 30 * time.Second

func newPipeline(size int, evaluate func(*ferry.Scan), store func(ferry.Scan), reg prometheus.Registerer) *pipeline {
	p := &pipeline{
		in:         make(chan ferry.Scan, size),
		evaluate:   evaluate,
		store:      store,
		now:        time.Now,
		stuckAfter: defaultStuckAfter,
		flushEvery: time.Second,
		scans:      prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_pipeline_scans_total", Help: "Scans received from the drivers."}),
		samples:    prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_pipeline_samples_total", Help: "Samples received from the drivers."}),
		dropped:    prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_pipeline_dropped_scans_total", Help: "Scans dropped because the pipeline queue was full."}),
	}
	if reg != nil {
		reg.MustRegister(p.scans, p.samples, p.dropped, prometheus.NewGaugeFunc(
			prometheus.GaugeOpts{Name: "ferry_pipeline_queue_length", Help: "Scans waiting between the drivers and the buffer."},
			func() float64 { return float64(len(p.in)) }))
	}
	p.progress.Store(p.now().UnixNano())
	return p
}

// Err reports a stuck pipeline: scans are waiting and none was taken for
// stuckAfter (the buffer or the rule engine hangs).
func (p *pipeline) Err() error {
	if len(p.in) == 0 {
		return nil
	}
	idle := p.now().Sub(time.Unix(0, p.progress.Load()))
	if idle > p.stuckAfter {
		return fmt.Errorf("pipeline stuck: %d scans waiting, none taken for %v", len(p.in), idle.Round(time.Second))
	}
	return nil
}

// Emit is the drivers' ferry.EmitFunc. It never blocks. After Close it
// finishes s with ferry.ErrClosed.
func (p *pipeline) Emit(s ferry.Scan) {
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		s.Finish(ferry.ErrClosed)
		return
	}
	select {
	case p.in <- s:
		p.mu.RUnlock()
	default:
		p.mu.RUnlock()
		p.dropped.Inc()
		s.Finish(ferry.ErrDropped)
	}
}

// Run processes scans until Close; it returns once the queue is drained
// and the reducer's open windows are stored (flagged partial).
func (p *pipeline) Run() {
	var tick <-chan time.Time
	if p.reduce != nil {
		t := time.NewTicker(p.flushEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case s, ok := <-p.in:
			if !ok {
				if p.reduce != nil {
					p.storeAll(p.reduce.Close())
				}
				return
			}
			p.process(s)
		case <-tick:
			p.storeAll(p.reduce.Flush())
		}
	}
}

// process takes one scan through the stages.
func (p *pipeline) process(s ferry.Scan) {
	p.progress.Store(p.now().UnixNano())
	p.scans.Inc()
	p.samples.Add(float64(len(s.Samples)))
	if p.observe != nil {
		p.observe(&s)
	}
	if p.evaluate != nil {
		p.evaluate(&s)
	}
	if p.history != nil {
		p.history(&s)
	}
	if p.reduce != nil && !p.reduce.Apply(&s) {
		s.Finish(nil)
		return
	}
	p.store(s)
}

// storeAll stores the scans the reducer emitted on its own (aggregates of
// windows that ended, or were cut short).
func (p *pipeline) storeAll(scans []ferry.Scan) {
	for _, s := range scans {
		p.store(s)
	}
}

// Close ends Run after the queued scans. Drivers should have stopped
// emitting; a scan emitted after Close is finished with ferry.ErrClosed.
func (p *pipeline) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		close(p.in)
	}
}
