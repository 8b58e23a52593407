package mqtt

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
)

// ackRecorder is a paho.Message that records its acknowledgement.
type ackRecorder struct {
	benchMsg
	id  uint16
	mu  *sync.Mutex
	log *[]uint16
}

func (m *ackRecorder) Ack() {
	m.mu.Lock()
	*m.log = append(*m.log, m.id)
	m.mu.Unlock()
}

// TestAckQueueOrder: acknowledgements leave in arrival order whatever the
// order of the commits; a withheld message is skipped and reported; what
// completes after the connection ended is counted, not acknowledged.
func TestAckQueueOrder(t *testing.T) {
	m := NewMetrics(nil)
	cm := m.client("order")
	q := newAckQueue(cm)
	var mu sync.Mutex
	var acked []uint16
	var entries []*pendingAck
	for i := uint16(1); i <= 5; i++ {
		p := q.push(&ackRecorder{benchMsg: benchMsg{qos: 1}, id: i, mu: &mu, log: &acked})
		p.hold() // one scan
		p.done(nil)
		entries = append(entries, p)
	}
	var withheld atomic.Int32
	var sent atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		q.run(stop, func() { withheld.Add(1) }, &sent)
	}()
	got := func() []uint16 {
		mu.Lock()
		defer mu.Unlock()
		return append([]uint16(nil), acked...)
	}
	entries[2].done(nil)              // 3 committed: nothing leaves before 1 and 2
	entries[1].done(ferry.ErrDropped) // 2 dropped
	// Nothing marks that the queue's goroutine has looked and sent no
	// wrong ack: watch for one over a window.
	never(t, 20*time.Millisecond, "an ack before message 1 was committed", func() bool { return len(got()) != 0 })
	entries[0].done(nil)
	waitFor(t, "1 and 3 acknowledged", 2*time.Second, func() bool { return len(got()) == 2 })
	if a := got(); a[0] != 1 || a[1] != 3 || withheld.Load() != 1 || !sent.Load() {
		t.Fatalf("acks %v, withheld %d", a, withheld.Load())
	}
	if n := q.outstanding(); n != 2 {
		t.Fatalf("outstanding %d, want 2", n)
	}
	close(stop)
	wg.Wait()
	q.close()
	entries[3].done(nil)             // committed after the connection ended
	entries[4].done(ferry.ErrClosed) // never committed
	if a := got(); len(a) != 2 {
		t.Fatalf("acknowledged after close: %v", a)
	}
	if l, w := testutil.ToFloat64(cm.acksLost), testutil.ToFloat64(cm.acksWithheld); l != 1 || w != 2 {
		t.Errorf("lost %v withheld %v, want 1 and 2", l, w)
	}
	if p := testutil.ToFloat64(cm.acksPending); p != 0 {
		t.Errorf("acks_pending %v after close", p)
	}
}
