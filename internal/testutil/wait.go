package testutil

import (
	"fmt"
	"testing"
	"time"
)

// Poll calls cond until it returns nil and returns nil, or returns its
// last error once timeout has passed. It polls every 5 ms at first, then
// less often, up to every 50 ms: a cheap condition is seen at once, a
// costly one (an HTTP scrape, a stream read) does not load a long wait.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for poll := 5 * time.Millisecond; ; poll = min(2*poll, 50*time.Millisecond) {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		time.Sleep(poll)
	}
}

// Eventually is Poll that fails the test, saying what it waited for and
// why the condition did not hold at the end: WaitFor for conditions that
// can say why they do not hold yet (an HTTP status, a count that is
// short).
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Never checks that bad does not become true for the whole of window, and
// fails the test as soon as it does. It is for the absence of an event
// that nothing else marks (no early ack, no second request): the window
// is the assertion, and a violation is reported when it happens instead
// of at the window's end.
func Never(t testing.TB, window time.Duration, what string, bad func() bool) {
	t.Helper()
	end := time.Now().Add(window)
	for {
		if bad() {
			t.Fatalf("%s: happened within %v", what, window)
		}
		if !time.Now().Before(end) {
			return
		}
		time.Sleep(min(5*time.Millisecond, time.Until(end)))
	}
}

// StopRun cancels a running part (cancel ends the context its Run got) and
// waits up to timeout for Run's result on done. It fails the test when Run
// does not return in time or returns an error, and returns how long Run
// took to return after the cancel.
func StopRun(t testing.TB, cancel func(), done <-chan error, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v after cancel", err)
		}
	case <-time.After(timeout):
		t.Fatalf("Run did not return within %v of cancel", timeout)
	}
	return time.Since(start)
}
