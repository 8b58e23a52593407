// Package sinks delivers alert transitions to local destinations: ferry's
// log, an MQTT broker (each transition, plus a retained "active alerts"
// message per rule for HMIs), a webhook, and a Server-Sent Events stream
// served on the local HTTP listener.
//
// Promises: Send never blocks. Each sink has its own bounded queue and its
// own goroutine; a slow or dead sink fills its own queue and drops (and
// counts) what does not fit, so it never delays the rule engine or another
// sink. Transitions reach each sink in the order they were sent. Webhook
// and MQTT deliveries are retried with capped, jittered backoff
// (internal/backoff) and dropped, counted, after the configured attempts.
//
// Caveats: the sinks are best-effort notification channels. The durable
// record of every alert is the buffer's alerts lane, forwarded upstream; a
// sink's queue lives in memory and is lost on restart.
package sinks

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
)

// Options are the sinks' collaborators.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Gateway is this gateway's id: the default MQTT client id and a field
	// of every alert payload.
	Gateway string
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Sinks fans alert transitions out to every configured sink.
type Sinks struct {
	log    *slog.Logger
	sinks  []sink
	stream *Stream
	m      *metrics
}

var _ ferry.AlertSink = (*Sinks)(nil)

// sink is one destination with its own queue and goroutine.
type sink interface {
	send(a ferry.Alert) // never blocks
	run(ctx context.Context)
}

// New builds the sinks cfg asks for. It validates and does no I/O.
func New(cfg Config, opts Options) (*Sinks, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Sinks{log: opts.Logger}
	s.m = newMetrics(opts.Registerer)
	if cfg.Log.Enabled {
		s.sinks = append(s.sinks, newLogSink(cfg.Log, opts.Logger, s.m))
	}
	if cfg.MQTT != nil {
		s.sinks = append(s.sinks, newMQTTSink(*cfg.MQTT, opts, s.m))
	}
	if cfg.Webhook != nil {
		s.sinks = append(s.sinks, newWebhookSink(*cfg.Webhook, opts, s.m))
	}
	s.stream = newStream(cfg.Stream, opts, s.m)
	return s, nil
}

// Send hands a transition to every sink. It never blocks.
func (s *Sinks) Send(a ferry.Alert) {
	for _, k := range s.sinks {
		k.send(a)
	}
	s.stream.Publish(a)
}

// Restore tells the sinks which alerts are active at start (restored by
// the rule engine without being emitted again), so that the MQTT sink's
// retained per-rule messages are right even after the broker lost them.
// Call it before Run.
func (s *Sinks) Restore(active []ferry.Alert) {
	for _, k := range s.sinks {
		if m, ok := k.(*mqttSink); ok {
			m.restore(active)
		}
	}
}

// Stream returns the Server-Sent Events hub.
func (s *Sinks) Stream() *Stream { return s.stream }

// Run delivers until ctx ends, then stops every sink, disconnects the
// stream's clients and returns nil. Alerts still queued are dropped.
func (s *Sinks) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, k := range s.sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k.run(ctx)
		}()
	}
	<-ctx.Done()
	wg.Wait()
	s.stream.Close()
	return nil
}

// queue is a sink's bounded queue. It holds what is waiting and no more:
// a channel of the configured size would allocate its whole buffer (1,000
// alerts of about 300 bytes, per sink) up front for queues that are empty
// nearly always.
type queue struct {
	// ready holds a token while the queue is not empty: push puts one
	// in, pop puts it back when it leaves alerts behind.
	ready chan struct{}
	size  int
	full  prometheus.Counter

	mu    sync.Mutex
	items []ferry.Alert // items[head:] wait, oldest first
	head  int
}

func newQueue(name string, size int, m *metrics) *queue {
	q := &queue{ready: make(chan struct{}, 1), size: size, full: m.dropped.WithLabelValues(name, "queue_full")}
	m.queued(name, func() float64 { return float64(q.len()) })
	return q
}

// push queues a, or drops and counts it when the queue is full.
func (q *queue) push(a ferry.Alert) {
	q.mu.Lock()
	if len(q.items)-q.head >= q.size {
		q.mu.Unlock()
		q.full.Inc()
		return
	}
	if q.head > 0 && len(q.items) == cap(q.items) {
		// Reuse the room the popped front left before append grows.
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	q.items = append(q.items, a)
	q.mu.Unlock()
	signal(q.ready)
}

// pop takes the oldest waiting alert; ok is false when none waits. A
// consumer calls it when ready delivers a token.
func (q *queue) pop() (a ferry.Alert, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.items) {
		return a, false
	}
	a = q.items[q.head]
	q.items[q.head] = ferry.Alert{}
	q.head++
	if q.head == len(q.items) {
		// Empty: give a burst's room back rather than keep it.
		if cap(q.items) > 64 {
			q.items = nil
		}
		q.items, q.head = q.items[:0], 0
	} else {
		signal(q.ready)
	}
	return a, true
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) - q.head
}

// signal puts a token in c unless one is there.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
