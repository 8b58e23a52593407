package ferry

import (
	"encoding/json"
	"time"
)

// This file holds the wire shapes of a command (docs/commands.md): what a
// client sends on the NATS command subject, POSTs to /api/commands or the
// CLI sends for it, and the reply it gets back. The command path
// (internal/command) owns the checks; these are only the JSON forms, shared
// by the web server and the CLI, which must not import it.

// CommandRequest asks a gateway to write one point (or call one method).
type CommandRequest struct {
	// ID identifies the command: a repeat of the same id gets the stored
	// reply and writes nothing.
	ID     string `json:"id"`
	Device string `json:"device"`
	Point  string `json:"point"`
	// Value is a JSON number, bool or string.
	Value json.RawMessage `json:"value,omitempty"`
	// Args are a method call's input arguments.
	Args []json.RawMessage `json:"args,omitempty"`
	// Deadline is when the command goes stale: it is refused after it.
	// Zero takes the gateway's commands.default_deadline from receipt.
	Deadline time.Time `json:"deadline,omitzero"`
}

// The statuses of a command reply.
const (
	// CommandDone: written and read back equal.
	CommandDone = "done"
	// CommandRefused: nothing was sent to the device (a check failed).
	CommandRefused = "refused"
	// CommandFailed: the device refused the write or kept another value.
	CommandFailed = "failed"
	// CommandUnknown: the write may or may not have happened (a timeout, or
	// the gateway stopped during it); it is never retried by the gateway.
	CommandUnknown = "unknown"
)

// CommandReply is the final answer to a command.
type CommandReply struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// ReadBack is the value read from the device after the write.
	ReadBack any `json:"read_back,omitempty"`
	// Outputs are a method call's output arguments.
	Outputs []any `json:"outputs,omitempty"`
	// At is when the gateway decided the outcome.
	At time.Time `json:"at"`
}
