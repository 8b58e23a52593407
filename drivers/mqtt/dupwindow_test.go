package mqtt

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry/internal/testpeer"
)

// TestDupOfIdenticalWithheld is the case the DUP dedupe must not get
// wrong: a sensor publishes the same payload twice (QoS 1); the first is
// stored and acknowledged, the second is withheld (the pipeline dropped
// its scan) and comes back from mochi with DUP set after the reconnect.
// It is a new message, not a duplicate of the first: its key must differ
// from the first's, so that a buffer that drops redelivered scans with a
// key it has stored (as buffer does within dedupe_window, and as
// commitStore does forever) stores it. Keying by content alone dropped
// it: two identical readings became one (issue 21 item 14).
func TestDupOfIdenticalWithheld(t *testing.T) {
	b := testpeer.Broker(t)
	store := newCommitStore(t)
	opts := testOptions(nil)
	r := start(t, []Device{jsonDevice("env", b.URL(), "s/env", Point{Name: "temp", Path: "temp"})}, opts, store.emit)
	r.waitSubscribed(t, b, 1)
	id := r.d.ClientID()

	b.Publish(t, "s/env", []byte(`{"temp":1}`), 1, false)
	waitFor(t, "first stored", 5*time.Second, func() bool { return len(store.samples("env")) == 1 })
	waitFor(t, "first acknowledged", 5*time.Second, func() bool { return b.Inflight(id) == 0 })

	store.mu.Lock()
	store.drop = 1
	store.mu.Unlock()
	b.Publish(t, "s/env", []byte(`{"temp":1}`), 1, false)
	waitFor(t, "the withheld one redelivered and acknowledged", 10*time.Second, func() bool {
		return testutil.ToFloat64(opts.Metrics.redeliveries.WithLabelValues("env")) >= 1 && b.Inflight(id) == 0
	})
	store.mu.Lock()
	dedup := store.dedup
	store.mu.Unlock()
	if got := len(store.samples("env")); got != 2 || dedup != 0 {
		t.Fatalf("stored %d samples, %d dropped as duplicates; want both identical readings stored, none dropped", got, dedup)
	}
	keys := map[string]bool{}
	for _, s := range store.committed() {
		keys[s.Key] = true
	}
	if len(keys) != 2 {
		t.Errorf("the two messages share a key: %v", keys)
	}
}
