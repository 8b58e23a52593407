package gateway

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A stop that timed out must not use up the runner: a later wait still
// waits for the part to return (the old runner's sync.Once made wait
// return at once, before the part had exited).
func TestRunnerWaitAfterTimedOutStop(t *testing.T) {
	release := make(chan struct{})
	returned := make(chan struct{})
	errPart := errors.New("part done")
	r := start(context.Background(), func(ctx context.Context) error {
		<-ctx.Done()
		<-release // a part slow to notice its cancellation
		close(returned)
		return errPart
	})
	if r.stop(10 * time.Millisecond) {
		t.Fatal("stop reported the part stopped while it still runs")
	}
	waited := make(chan error, 1)
	go func() { waited <- r.wait() }()
	select {
	case err := <-waited:
		t.Fatalf("wait returned (%v) before the part returned", err)
	case <-time.After(50 * time.Millisecond):
		// wait must still be blocked: the part has not returned. (This
		// bounded look is the assertion, not a wait for a condition.)
	}
	close(release)
	select {
	case err := <-waited:
		if !errors.Is(err, errPart) {
			t.Fatalf("wait = %v, want the part's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wait did not return after the part returned")
	}
	select {
	case <-returned:
	default:
		t.Fatal("wait returned before the part")
	}
	if !r.stop(time.Second) {
		t.Fatal("stop after the part returned reports a hang")
	}
}

func TestRunnerNil(t *testing.T) {
	var r *runner
	if !r.stop(time.Millisecond) || r.wait() != nil || r.done() != nil {
		t.Fatal("a nil runner is a part that never ran")
	}
}
