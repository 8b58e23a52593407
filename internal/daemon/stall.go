package daemon

import (
	"fmt"
	"sync/atomic"
	"time"
)

// StallDetector tells whether a loop is stuck inside one step, for the
// Watchdog's health function. The loop calls Begin before a step (a scan
// through rules and buffer) and End after it; Check fails while a step has
// been running longer than max. A loop waiting for work between steps is
// healthy. Begin and End do not allocate and are safe to call from one
// goroutine while others call Check.
//
// Time is measured on the monotonic clock: a gateway without a battery
// clock that boots in 1970 and is set by NTP minutes later does not look
// stalled.
type StallDetector struct {
	Now     func() time.Time // for tests; nil: the monotonic clock
	started atomic.Int64     // clock() at the running step's start; 0 between steps
}

// monoBase anchors the monotonic readings.
var monoBase = time.Now()

// clock returns nanoseconds on a clock that never jumps, never 0.
func (s *StallDetector) clock() int64 {
	if s.Now != nil {
		return s.Now().UnixNano()
	}
	return int64(time.Since(monoBase)) + 1
}

// Begin marks the start of a step.
func (s *StallDetector) Begin() { s.started.Store(s.clock()) }

// End marks the end of the step.
func (s *StallDetector) End() { s.started.Store(0) }

// Check returns an error naming how long the current step has run when
// that is longer than max, else nil.
func (s *StallDetector) Check(max time.Duration) error {
	start := s.started.Load()
	if start == 0 {
		return nil
	}
	if d := time.Duration(s.clock() - start); d > max {
		return fmt.Errorf("one step has been running for %v (limit %v)", d.Round(time.Second), max)
	}
	return nil
}
