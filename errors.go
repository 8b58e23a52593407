package ferry

import (
	"errors"
	"strconv"
)

// ErrDropped is returned (to Scan.Done) when a bounded queue in front of the buffer was full.
var ErrDropped = errors.New("queue full")

// ErrClosed is returned when a part is used after Close, and to Scan.Done for scans queued at shutdown.
var ErrClosed = errors.New("closed")

// ErrAlertNotFound is returned when an alert is acknowledged by an id that
// no active alert has (unknown, or already cleared).
var ErrAlertNotFound = errors.New("alert not found")

// ErrInvalidConfig is returned (wrapped) when a configuration is refused.
var ErrInvalidConfig = errors.New("invalid configuration")

// ParseError is returned when a word is not one of those expected.
type ParseError struct {
	What  string // "severity", "lane", …
	Value string
	Want  string // the accepted words, comma-separated
}

func (e *ParseError) Error() string {
	return e.What + " " + strconv.Quote(e.Value) + " is not one of " + e.Want
}
