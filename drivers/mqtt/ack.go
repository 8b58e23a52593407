package mqtt

import (
	"sync"
	"sync/atomic"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
)

// The acknowledgement of QoS 1 and 2 messages.
//
// A message is acknowledged (PUBACK, or PUBREC for QoS 2) only when every
// scan it produced has been durably committed: each such scan's Done drops
// one reference, and the message's own handling holds one more until all
// its scans are emitted. A message that produced no scan (nothing
// configured in it, or a payload so bad that no point is known) is
// acknowledged at once, in order.
//
// Acknowledgements leave in the order the messages arrived (MQTT 3.1.1
// section 4.6): the queue releases from its head only. A message whose
// scan was not committed (Done with ErrDropped or ErrClosed) is withheld:
// it is not acknowledged, the messages behind it are, and the session asks
// for a reconnect so that the broker sends the withheld ones again (a
// broker redelivers unacknowledged messages only on a new connection).
//
// Done is called from the buffer's writer goroutine and must not block: it
// only marks the entry and signals. m.Ack (which can block on the network)
// runs on the queue's own goroutine.

type ackState uint8

const (
	ackPending  ackState = iota
	ackCommit            // every scan committed: acknowledge
	ackWithhold          // a scan was not committed: do not acknowledge
)

// pendingAck is one received QoS 1/2 message awaiting its scans.
type pendingAck struct {
	q      *ackQueue
	msg    paho.Message
	refs   atomic.Int32
	failed atomic.Bool
	state  ackState // under q.mu
}

// hold adds a reference (one scan, or the handler itself).
func (p *pendingAck) hold() { p.refs.Add(1) }

// done drops one reference; err != nil marks the message to be withheld.
// It is the Done of every scan of the message.
func (p *pendingAck) done(err error) {
	if err != nil {
		p.failed.Store(true)
	}
	if p.refs.Add(-1) == 0 {
		p.q.complete(p)
	}
}

// ackQueue releases acknowledgements of one connection in arrival order.
type ackQueue struct {
	mu      sync.Mutex
	q       []*pendingAck // q[head:] are outstanding
	head    int
	closed  bool
	notify  chan struct{}
	pending prometheus.Gauge

	sent, withheld, lost prometheus.Counter
}

func newAckQueue(m *clientMetrics) *ackQueue {
	return &ackQueue{
		notify:   make(chan struct{}, 1),
		pending:  m.acksPending,
		sent:     m.acksSent,
		withheld: m.acksWithheld,
		lost:     m.acksLost,
	}
}

// push appends a message and returns its entry holding one reference (the
// handler's); the handler releases it with done(nil) once every scan of
// the message has been emitted.
func (q *ackQueue) push(m paho.Message) *pendingAck {
	p := &pendingAck{q: q, msg: m}
	p.refs.Store(1)
	q.mu.Lock()
	if q.closed {
		// Not expected (the handler stops before the queue closes); the
		// entry still completes into the closed queue and is counted.
		q.mu.Unlock()
		return p
	}
	q.q = append(q.q, p)
	q.mu.Unlock()
	q.pending.Inc()
	return p
}

// complete records that every reference of p is gone.
func (q *ackQueue) complete(p *pendingAck) {
	st := ackCommit
	if p.failed.Load() {
		st = ackWithhold
	}
	q.mu.Lock()
	p.state = st
	closed := q.closed
	atHead := !closed && q.head < len(q.q) && q.q[q.head] == p
	q.mu.Unlock()
	if closed {
		// The connection that carried the message is gone: no
		// acknowledgement can reach the broker any more, which sends the
		// message again on the next connection (DUP set). A committed one
		// comes back as a duplicate; the buffer drops it within its dedupe
		// window.
		if st == ackCommit {
			q.lost.Inc()
		} else {
			q.withheld.Inc()
		}
		return
	}
	if atHead {
		select {
		case q.notify <- struct{}{}:
		default:
		}
	}
}

// take removes the completed entries at the head, in order.
func (q *ackQueue) take(dst []*pendingAck) []*pendingAck {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.head < len(q.q) && q.q[q.head].state != ackPending {
		dst = append(dst, q.q[q.head])
		q.q[q.head] = nil
		q.head++
	}
	if q.head == len(q.q) {
		q.q, q.head = q.q[:0], 0
	} else if q.head > 1024 && q.head*2 > len(q.q) {
		n := copy(q.q, q.q[q.head:])
		clear(q.q[n:])
		q.q, q.head = q.q[:n], 0
	}
	return dst
}

// outstanding returns how many messages await their acknowledgement.
func (q *ackQueue) outstanding() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.q) - q.head
}

// close ends the queue: entries still outstanding are counted when they
// complete, never acknowledged.
func (q *ackQueue) close() {
	q.mu.Lock()
	rest := q.q[q.head:]
	for _, p := range rest {
		switch p.state {
		case ackCommit:
			q.lost.Inc()
		case ackWithhold:
			q.withheld.Inc()
		}
		// Entries still pending are counted by complete.
	}
	q.pending.Sub(float64(len(rest)))
	q.q, q.head, q.closed = nil, 0, true
	q.mu.Unlock()
}

// run sends acknowledgements as entries complete, until stop is closed.
// onWithheld is called for each withheld message; acked is set once an
// acknowledgement was sent.
func (q *ackQueue) run(stop <-chan struct{}, onWithheld func(), acked *atomic.Bool) {
	var batch []*pendingAck
	for {
		select {
		case <-q.notify:
		case <-stop:
			return
		}
		batch = q.take(batch[:0])
		for i, p := range batch {
			if p.state == ackCommit {
				p.msg.Ack()
				q.sent.Inc()
				acked.Store(true)
			} else {
				q.withheld.Inc()
				onWithheld()
			}
			batch[i] = nil
		}
		q.pending.Sub(float64(len(batch)))
		// More may have completed behind the head while we were acking.
		q.mu.Lock()
		more := q.head < len(q.q) && q.q[q.head].state != ackPending
		q.mu.Unlock()
		if more {
			select {
			case q.notify <- struct{}{}:
			default:
			}
		}
	}
}
