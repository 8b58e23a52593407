package ferry

// Status is the coarse quality of a sample, after OPC UA's status code
// severities. Good is the zero value.
type Status uint8

// The quality statuses, from best to worst.
const (
	Good Status = iota
	Uncertain
	Bad
)

var statusNames = [...]string{"good", "uncertain", "bad"}

// String returns "good", "uncertain" or "bad".
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "bad"
}

// Quality says how far a sample can be trusted, and why not when it cannot.
// The zero Quality is Good with no reason.
type Quality struct {
	Status Status
	// Reason says why a sample is not Good, in a short stable form that is
	// also used as a metric label: one of the Reason constants, a protocol's
	// own name ("BadNodeIdUnknown", "exception 0x02"), or similar.
	Reason string
}

// Reasons shared by every driver. A driver may use its protocol's own
// wording for anything else (an OPC UA status name, a Modbus exception).
const (
	ReasonTimeout        = "timeout"
	ReasonConnRefused    = "connection refused"
	ReasonDisconnected   = "disconnected"
	ReasonIllegalAddress = "illegal data address"
	ReasonDecode         = "decode error"
	ReasonBadPayload     = "bad payload"
	ReasonMissing        = "missing"
	ReasonNotConnected   = "not connected"
)

// GoodQuality is the quality of a sample read without trouble.
var GoodQuality = Quality{}

// BadQuality returns a Bad quality with the given reason.
func BadQuality(reason string) Quality { return Quality{Status: Bad, Reason: reason} }

// UncertainQuality returns an Uncertain quality with the given reason.
func UncertainQuality(reason string) Quality { return Quality{Status: Uncertain, Reason: reason} }

// IsGood reports whether q is Good.
func (q Quality) IsGood() bool { return q.Status == Good }

// String returns "good", or the status and reason ("bad: timeout").
func (q Quality) String() string {
	if q.Reason == "" {
		return q.Status.String()
	}
	return q.Status.String() + ": " + q.Reason
}
