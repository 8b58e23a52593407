package sinks

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
)

// TestQueueOrderBoundAndRoom: a sink's queue hands alerts out oldest
// first, drops and counts what exceeds its size, keeps a token in ready
// exactly while alerts wait, and holds room for what waits only: empty,
// it owns no buffer of its configured size.
func TestQueueOrderBoundAndRoom(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry())
	q := newQueue("test", 100, m)
	if cap(q.items) != 0 {
		t.Fatalf("a new queue has room for %d alerts, want 0", cap(q.items))
	}
	ready := func() bool {
		select {
		case <-q.ready:
			return true
		default:
			return false
		}
	}
	id := 0
	pushN := func(n int) {
		for range n {
			id++
			q.push(ferry.Alert{ID: fmt.Sprint(id)})
		}
	}
	next := 1
	popN := func(n int) {
		t.Helper()
		for range n {
			if !ready() {
				t.Fatalf("no ready token with %d alerts waiting", q.len())
			}
			a, ok := q.pop()
			if !ok || a.ID != fmt.Sprint(next) {
				t.Fatalf("pop = %q, %v; want %d", a.ID, ok, next)
			}
			next++
		}
	}
	// Interleaved pushes and pops reuse the popped front (40 rounds leave
	// 80 waiting, under the bound).
	for range 40 {
		pushN(7)
		popN(5)
	}
	popN(q.len())
	if ready() {
		t.Fatal("a ready token with the queue empty")
	}
	if _, ok := q.pop(); ok {
		t.Fatal("pop from an empty queue returned an alert")
	}
	if cap(q.items) > 64 {
		t.Errorf("the empty queue keeps room for %d alerts", cap(q.items))
	}
	// Over the bound: the newest are dropped and counted, the oldest kept.
	pushN(130)
	if got := testutil.ToFloat64(m.dropped.WithLabelValues("test", "queue_full")); got != 30 {
		t.Errorf("queue_full drops %v, want 30", got)
	}
	if q.len() != 100 {
		t.Errorf("len %d, want 100", q.len())
	}
	popN(100)
	next = id + 1
	pushN(1)
	popN(1)
	if ready() || q.len() != 0 {
		t.Fatalf("after draining: ready token or %d waiting", q.len())
	}
}
