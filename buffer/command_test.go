package buffer

import (
	"fmt"
	"testing"

	"github.com/ferry-edge/ferry"
)

// TestPutWithAlerts: when PutWithAlerts returns, the state and the alerts
// are both committed (readable without a Flush, and after a reopen), and
// concurrent callers each get theirs.
func TestPutWithAlerts(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, testConfig(), Options{})
	const n = 50
	errs := make(chan error, n)
	for i := range n {
		go func() {
			id := fmt.Sprint("c", i)
			errs <- b.PutWithAlerts("commands", []byte(id), []byte("v"+id),
				ferry.Alert{ID: "command/" + id + "/accepted", Rule: "command", State: ferry.AlertCleared})
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// No Flush: each call returned after its commit, alerts included.
	recs := drainAll(t, b)
	if len(recs) != n {
		t.Fatalf("%d alert records committed, want %d", len(recs), n)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openT(t, dir, testConfig(), Options{})
	alerts := map[string]bool{}
	for _, r := range drainAll(t, b) {
		alerts[decodeAlert(t, r).ID] = true
	}
	states := 0
	err := b.ForEach("commands", func(k, v []byte) error {
		states++
		if string(v) != "v"+string(k) || !alerts["command/"+string(k)+"/accepted"] {
			return fmt.Errorf("state %s=%s without its alert", k, v)
		}
		return nil
	})
	if err != nil || states != n || len(alerts) != n {
		t.Fatalf("%d states, %d alerts after reopen: %v", states, len(alerts), err)
	}
	if err := b.PutWithAlerts("", []byte("k"), nil); err == nil {
		t.Fatal("empty bucket accepted")
	}
}
