package testutil

import (
	"testing"
	"time"
)

// Eventually polls cond until it returns nil, and fails the test with
// cond's last error when it still does not after timeout. It is WaitFor
// for conditions that can say why they do not hold yet (an HTTP status, a
// count that is short).
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	var err error
	ok := func() bool { err = cond(); return err == nil }
	deadline := time.Now().Add(timeout)
	poll := 5 * time.Millisecond
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(poll)
		poll = min(2*poll, 200*time.Millisecond)
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
