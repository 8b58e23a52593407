package testutil

import (
	"runtime"
	"testing"
	"time"
)

func TestNever(t *testing.T) {
	calls := 0
	Never(t, 30*time.Millisecond, "nothing", func() bool { calls++; return false })
	if calls < 2 {
		t.Fatalf("bad checked %d times over the window, want it polled", calls)
	}
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Never(ft, time.Hour, "something", func() bool { return true })
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Never did not fail at once when bad held")
	}
	if !ft.failed {
		t.Fatal("Never did not fail the test")
	}
}

// fatalRecorder records Fatalf instead of ending the test.
type fatalRecorder struct {
	testing.TB
	failed bool
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(string, ...any) {
	f.failed = true
	runtime.Goexit()
}
