package command

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/ferry-edge/ferry"
)

// Bucket is the state bucket the command ids live in.
const Bucket = "commands"

// Store is what the command path needs of the buffer: small durable state,
// and a put that commits audit events to the alerts lane in the same
// transaction (buffer.Buffer).
type Store interface {
	PutWithAlerts(bucket string, key, value []byte, alerts ...ferry.Alert) error
	Delete(bucket string, key []byte) error
	ForEach(bucket string, fn func(key, value []byte) error) error
}

// Phases of a stored command.
const (
	phaseAccepted = "accepted" // stored before the write; no reply yet
	phaseFinal    = "final"    // the reply is stored
)

// entry is one stored command id.
type entry struct {
	Phase    string          `json:"phase"`
	Device   string          `json:"device,omitempty"`
	Point    string          `json:"point,omitempty"`
	Value    json.RawMessage `json:"value,omitempty"`
	Via      string          `json:"via,omitempty"`
	Received time.Time       `json:"received"`
	Deadline time.Time       `json:"deadline,omitzero"`
	// Wrote is set when the write was sent to the driver (for the rate
	// limit after a restart).
	Wrote bool               `json:"wrote,omitempty"`
	Reply ferry.CommandReply `json:"reply,omitzero"`
}

// index is the in-memory view of the stored ids, oldest first, for the
// bound and the eviction by age. Guarded by Service.mu.
type index struct {
	at    map[string]*slot
	order []idAt // by received time
}

// slot is what is known of a stored id: when it was received and its
// reply (final false: accepted, no reply yet). Replies are kept in memory
// so that a repeat costs no disk read; commands.max_ids bounds them.
type slot struct {
	at    time.Time
	final bool
	reply ferry.CommandReply
}

type idAt struct {
	id string
	at time.Time
}

func (x *index) add(id string, e entry) {
	if sl, ok := x.at[id]; ok {
		sl.final, sl.reply = e.Phase == phaseFinal, e.Reply
		return
	}
	at := e.Received
	x.at[id] = &slot{at: at, final: e.Phase == phaseFinal, reply: e.Reply}
	x.order = append(x.order, idAt{id, at})
	// Received times come from a clock that may step back: keep order.
	if n := len(x.order); n > 1 && x.order[n-2].at.After(at) {
		sort.SliceStable(x.order, func(i, j int) bool { return x.order[i].at.Before(x.order[j].at) })
	}
}

// expired returns the ids to forget: past keep, or beyond max.
func (x *index) expired(now time.Time, keep time.Duration, max int) []string {
	var out []string
	for i, e := range x.order {
		if now.Sub(e.at) < keep && len(x.order)-i <= max {
			break
		}
		out = append(out, e.id)
	}
	return out
}

func (x *index) drop(ids []string) {
	for _, id := range ids {
		delete(x.at, id)
	}
	n := 0
	for _, e := range x.order {
		if sl, ok := x.at[e.id]; ok && sl.at.Equal(e.at) {
			x.order[n] = e
			n++
		}
	}
	clear(x.order[n:])
	x.order = x.order[:n]
}

func decodeEntry(v []byte) (entry, error) {
	var e entry
	if err := json.Unmarshal(v, &e); err != nil {
		return e, fmt.Errorf("stored command: %w", err)
	}
	return e, nil
}
