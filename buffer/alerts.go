package buffer

import (
	"strconv"
	"time"

	"github.com/ferry-edge/ferry"
)

// The buffer's own alerts. Each is raised once per episode and cleared when
// the episode ends; the active ones are kept in the meta bucket so that a
// restart clears what it should.
const (
	// RuleDropping: records or scans are being dropped (bounds, full
	// queue, damaged records). Cleared after DropQuietPeriod without drops.
	RuleDropping = "buffer_dropping"
	// RuleDiskError: commits fail (disk full, read-only, I/O error).
	// Cleared by the next successful commit.
	RuleDiskError = "buffer_disk_error"
	// RuleQuarantined: buffer.db was damaged and moved aside at Open.
	// Cleared after QuarantineHold.
	RuleQuarantined = "buffer_quarantined"
)

const (
	// DropQuietPeriod ends a dropping episode.
	DropQuietPeriod = time.Minute
	// QuarantineHold is how long the quarantine alert stays raised.
	QuarantineHold = time.Hour
)

// ownAlerts is owned by the writer goroutine (and by Open before it starts).
type ownAlerts struct {
	b      *Buffer
	active map[string]ferry.Alert
	// out holds the transitions not yet handed to the writer's batch.
	out []ferry.Alert
	// dirty: active changed since it was last persisted.
	dirty bool
}

func (o *ownAlerts) load(as []ferry.Alert) {
	for _, a := range as {
		if a.State.Active() && a.Rule != "" {
			o.active[a.Rule] = a
		}
	}
}

func (o *ownAlerts) isActive(rule string) bool {
	_, ok := o.active[rule]
	return ok
}

// raise raises rule unless it is active.
func (o *ownAlerts) raise(rule string, sev ferry.Severity, msg string, v ferry.Value, now time.Time) {
	if o.isActive(rule) {
		return
	}
	a := ferry.Alert{
		ID:       rule + "/" + strconv.FormatInt(now.UnixMilli(), 10),
		Rule:     rule,
		Severity: sev,
		State:    ferry.AlertRaised,
		Value:    v,
		Message:  msg,
		Labels:   map[string]string{"source": "buffer", "gateway": o.b.opts.Gateway},
		Since:    now,
		Time:     now,
	}
	o.active[rule] = a
	o.emit(a)
}

// clear clears rule if it is active.
func (o *ownAlerts) clear(rule, msg string, v ferry.Value, now time.Time) {
	a, ok := o.active[rule]
	if !ok {
		return
	}
	delete(o.active, rule)
	a.State = ferry.AlertCleared
	a.Message = msg
	a.Value = v
	a.Time = now
	o.emit(a)
}

func (o *ownAlerts) emit(a ferry.Alert) {
	o.dirty = true
	o.out = append(o.out, a)
	if a.State == ferry.AlertCleared {
		o.b.log.Info("buffer alert cleared", "rule", a.Rule, "id", a.ID, "message", a.Message)
	} else {
		o.b.log.Warn("buffer alert raised", "rule", a.Rule, "id", a.ID, "message", a.Message)
	}
	if o.b.opts.Alert != nil {
		o.b.opts.Alert(a)
	}
}

// tick clears the quarantine alert after its hold.
func (o *ownAlerts) tick(now time.Time) {
	if a, ok := o.active[RuleQuarantined]; ok && now.Sub(a.Since) >= QuarantineHold {
		o.clear(RuleQuarantined, "buffer runs on the fresh file since "+a.Since.UTC().Format(time.RFC3339), ferry.Value{}, now)
	}
}
