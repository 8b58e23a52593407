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
