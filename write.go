package ferry

import (
	"context"
	"errors"
	"time"
)

// This file is the contract between the command path (internal/command, the
// gateway's command agent) and the drivers that can write to machines. The
// safety model (docs/commands.md) is enforced in two places: the command
// path checks what the configuration allows (enabled, declared, limits,
// interlock, rate, deadline, id stored before the write); the driver checks
// what only it can (the value fits the point's type losslessly, the
// device's table or node can be written) and writes, reads back and
// compares.

// WriteSpec declares a point writable, in the device map under the point's
// `write:` key. A point without one is read-only: no command may write it.
type WriteSpec struct {
	// Min and Max bound a numeric value, in engineering units (after scale
	// and offset, as a read reports it). Nil means unbounded on that side.
	Min *float64 `yaml:"min" json:"min,omitempty" doc:"lowest value a command may write, in engineering units"`
	Max *float64 `yaml:"max" json:"max,omitempty" doc:"highest value a command may write, in engineering units"`
	// Allowed lists the only values a command may write, as text compared
	// after conversion to the point's type ("1", "true", "RECIPE_A").
	Allowed []string `yaml:"allowed" json:"allowed,omitempty" doc:"the only values a command may write"`
	// Interlock is an expression over current point values, in the rules'
	// language (e.g. "line_speed == 0"); the write is refused unless it is
	// true at the time of the command.
	Interlock string `yaml:"interlock" json:"interlock,omitempty" doc:"expression over current point values that must be true to write"`
	// RateLimit is the shortest time between two writes to the point.
	RateLimit time.Duration `yaml:"rate_limit" json:"rate_limit,omitempty" doc:"shortest time between two writes to this point"`
}

// WriteRequest asks a driver to write one point of one of its devices, or
// to call one method (OPC UA) with arguments.
type WriteRequest struct {
	Device string
	// Point is the point's name, or the method's name for a call.
	Point string
	// Value is the value to write, in engineering units: the driver
	// reverses scale and offset and encodes the point's type and order.
	Value Value
	// Args are a method call's input arguments (Value is unused then).
	Args []Value
}

// WriteResult is what a driver saw after a write.
type WriteResult struct {
	// ReadBack is the point's value read from the device after the write,
	// decoded as a poll would decode it.
	ReadBack Value
	// Outputs are a method call's output arguments.
	Outputs []Value
	// Time is when the read back completed.
	Time time.Time
}

// Writer is implemented by drivers that can write to their devices. Write
// writes req, reads the point back and compares: it returns an error
// wrapping ErrWriteRefused when nothing was sent to the device (the value
// does not fit the point's type, the device cannot take this kind of
// write), ErrReadBackMismatch (with the result's ReadBack set) when the
// device kept another value, ErrWriteUnknown when the request went out and
// no answer came (a timeout: the device may or may not have written), and
// another error (with the device's reason) when the device refused it.
// A driver never retries a write on its own. A device the driver does not
// hold is ErrUnknownDevice.
type Writer interface {
	Write(ctx context.Context, req WriteRequest) (WriteResult, error)
}

// The errors a Writer wraps.
var (
	ErrWriteRefused     = errors.New("write refused")
	ErrReadBackMismatch = errors.New("read back differs from the value written")
	ErrWriteUnknown     = errors.New("write outcome unknown")
	ErrUnknownDevice    = errors.New("unknown device")
	ErrUnknownPoint     = errors.New("unknown point")
)
