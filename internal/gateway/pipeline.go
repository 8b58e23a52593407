package gateway

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
)

// pipeline carries scans from the drivers to the rule engine and the
// buffer. Drivers call Emit from their own goroutines; one goroutine (Run)
// takes each scan, lets the rules see it, then hands it to the buffer.
//
// The channel between them is bounded. When it is full, Emit drops the
// newest scan, counts it and finishes it with ferry.ErrDropped (an MQTT
// QoS 1 message is then not acknowledged and comes back): a slow disk never
// blocks a driver.
type pipeline struct {
	in       chan ferry.Scan
	evaluate func(*ferry.Scan) // the rule engine, or nil
	store    func(ferry.Scan)  // the buffer
	// observe, when set, sees every scan first (the console's current
	// values); it must not block or keep the scan.
	observe func(*ferry.Scan)

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

// Run processes scans until Close; it returns once the queue is drained.
func (p *pipeline) Run() {
	for s := range p.in {
		p.progress.Store(p.now().UnixNano())
		p.scans.Inc()
		p.samples.Add(float64(len(s.Samples)))
		if p.observe != nil {
			p.observe(&s)
		}
		if p.evaluate != nil {
			p.evaluate(&s)
		}
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
