package ferry

import (
	"strconv"
	"time"
)

// Lane is one ordered log in the buffer. Lanes are drained in order: every
// pending alert leaves the gateway before any telemetry does.
type Lane uint8

// The buffer's lanes, in drain order.
const (
	LaneAlerts Lane = iota
	LaneTelemetry
	NumLanes = 2
)

var laneNames = [...]string{"alerts", "telemetry"}

// String returns "alerts" or "telemetry".
func (l Lane) String() string {
	if int(l) < len(laneNames) {
		return laneNames[l]
	}
	return "lane" + strconv.Itoa(int(l))
}

// ParseLane parses "alerts" or "telemetry".
func ParseLane(s string) (Lane, error) {
	for i, n := range laneNames {
		if s == n {
			return Lane(i), nil
		}
	}
	return 0, &ParseError{What: "lane", Value: s, Want: "alerts, telemetry"}
}

// Record is what the buffer stores and the uplink ships: one encoded alert,
// or the encoded scans of one device that were committed together.
type Record struct {
	Lane Lane
	// Seq orders the records of a lane; it never repeats, also across
	// restarts.
	Seq uint64
	// ID is the record's stable identity, "<gateway>-<lane>-<seq>", sent
	// upstream as Nats-Msg-Id so that a replay is dropped as a duplicate.
	ID string
	// Time is when the buffer accepted the record.
	Time time.Time
	// Data is the record's payload in the encoding of internal/codec. It
	// belongs to the receiver (copied out of the store's transaction).
	Data []byte
}

// RecordID returns the stable id of record seq of lane on gateway.
func RecordID(gateway string, lane Lane, seq uint64) string {
	b := make([]byte, 0, len(gateway)+32)
	b = append(b, gateway...)
	b = append(b, '-')
	b = append(b, lane.String()...)
	b = append(b, '-')
	b = strconv.AppendUint(b, seq, 10)
	return string(b)
}

// StateStore is a small durable key-value store for state that must survive
// a restart: the rule engine's active alerts, for one. The buffer provides it
// in its own file, so that state and data share one fsync'd store.
// Values passed to fn are only valid during the call.
type StateStore interface {
	Put(bucket string, key, value []byte) error
	Delete(bucket string, key []byte) error
	ForEach(bucket string, fn func(key, value []byte) error) error
}
