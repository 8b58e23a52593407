package gateway

import (
	"context"
	"time"
)

// runner runs one part's Run on its own goroutine and can stop it. It owns
// that goroutine: whoever starts a part keeps its runner and stops it.
type runner struct {
	cancel context.CancelFunc
	// exited is closed when run has returned; err is its result, read
	// only after exited is closed.
	exited chan struct{}
	err    error
}

func start(ctx context.Context, run func(context.Context) error) *runner {
	ctx, cancel := context.WithCancel(ctx)
	r := &runner{cancel: cancel, exited: make(chan struct{})}
	go func() {
		defer close(r.exited)
		r.err = run(ctx)
	}()
	return r
}

// done is closed when the part has returned; nil for a nil runner, so
// that a select on it blocks.
func (r *runner) done() <-chan struct{} {
	if r == nil {
		return nil
	}
	return r.exited
}

// stop cancels the part and waits up to timeout for it to return; it
// reports whether it did. A stop that timed out leaves the part
// cancelled: a later stop or wait waits for it again.
func (r *runner) stop(timeout time.Duration) bool {
	if r == nil {
		return true
	}
	r.cancel()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.exited:
		return true
	case <-t.C:
		return false
	}
}

// wait waits until the part has returned, however long that takes, and
// returns its error.
func (r *runner) wait() error {
	if r == nil {
		return nil
	}
	<-r.exited
	return r.err
}
