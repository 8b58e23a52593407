package ferry

import (
	"context"
	"time"
)

// Sample is one value of one point of one device.
type Sample struct {
	Device  string
	Point   string
	Value   Value
	Quality Quality
	// Time is the source timestamp when the device gives one (OPC UA,
	// a JSON payload's time field), else the time the driver read it.
	Time time.Time
}

// Scan is what a driver emits at once: every point it read from one device
// in one poll, one subscription notification or one MQTT message.
type Scan struct {
	Device string
	// Time is when the driver took the scan.
	Time    time.Time
	Samples []Sample

	// Done, when not nil, is called exactly once: by the buffer, with nil
	// once the scan is durably committed (fsync'd) — that is when the scan
	// is accepted — or with an error (ErrDropped, ErrClosed) when it never
	// will be; or by the gateway's pipeline, with nil, when report by
	// exception left nothing of the scan to store. It is called from the
	// buffer's writer goroutine or the pipeline's and must not block. The
	// MQTT driver acknowledges a QoS 1 message in Done.
	Done func(error)

	// Key, when set, is an idempotency key kept by the buffer for its
	// dedupe window (an MQTT driver uses a digest of topic and payload).
	Key string
	// Redelivered marks a scan that may repeat one already stored (the MQTT
	// DUP flag). The buffer drops it, and calls Done(nil), when a scan with
	// the same Key was committed within the dedupe window.
	Redelivered bool
}

// Finish calls s.Done with err, if s has a Done callback.
func (s *Scan) Finish(err error) {
	if s.Done != nil {
		s.Done(err)
	}
}

// EmitFunc receives the scans of a driver. It never blocks: when the
// pipeline behind it is full the scan is dropped, counted and finished with
// ErrDropped. A driver must not touch a scan (or its Samples) after emitting
// it.
type EmitFunc func(Scan)

// Driver reads devices of one protocol and emits their scans.
//
// Run connects, polls or subscribes, and emits until ctx ends; then it closes
// what it opened and returns nil. It returns an error only when it cannot run
// at all. A device that fails is retried with backoff and reported through
// Bad-quality samples: one failing device never stops Run or delays another.
type Driver interface {
	Run(ctx context.Context, emit EmitFunc) error
}

// PointInfo describes a configured point: what it is, where it comes from.
// It feeds the catalog the uplink publishes and the local console.
type PointInfo struct {
	Device      string  `json:"device"`
	Point       string  `json:"point"`
	Protocol    string  `json:"protocol"`       // "modbus", "opcua", "mqtt"
	Source      string  `json:"source"`         // "unit 1 holding 100", "ns=2;s=Boiler.Pressure", "sensors/env temp"
	Type        string  `json:"type,omitempty"` // the configured data type, if any
	Unit        string  `json:"unit,omitempty"` // engineering unit
	Description string  `json:"description,omitempty"`
	Scale       float64 `json:"scale,omitempty"` // 0 means none (1)
	Offset      float64 `json:"offset,omitempty"`
	// Write is set when the point may be written (write.go).
	Write *WriteSpec `json:"write,omitempty"`
}

// DeviceStatus is how a driver sees one device now, for the console, the
// health endpoint and logs.
type DeviceStatus struct {
	Device    string `json:"device"`
	Protocol  string `json:"protocol"`
	Endpoint  string `json:"endpoint"`
	Connected bool   `json:"connected"`
	// Since is when Connected last changed.
	Since time.Time `json:"since"`
	// LastError is the most recent failure ("" when the last poll worked).
	LastError string `json:"last_error,omitempty"`
	// Reason is the reason of the current connection failure, in the
	// short form Bad samples carry (an OPC UA status name such as
	// BadUserAccessDenied, "timeout", …); "" while connected.
	Reason       string        `json:"reason,omitempty"`
	LastPoll     time.Time     `json:"last_poll"`
	PollDuration time.Duration `json:"poll_duration"`
	// Errors counts failures by reason since start.
	Errors map[string]uint64 `json:"errors,omitempty"`
}

// StatusReporter is implemented by drivers that can report the state of
// their devices.
type StatusReporter interface {
	DeviceStatus() []DeviceStatus
}
