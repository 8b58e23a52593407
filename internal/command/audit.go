package command

import (
	"fmt"
	"strconv"
	"time"

	"github.com/ferry-edge/ferry"
)

// AuditRule is the Rule of every command audit event.
const AuditRule = "command"

// auditOf is the audit event of one step of a command (docs/commands.md,
// "Audit record"). It is an Alert of rule "command", in state cleared (an
// audit event is a record, not a condition that stays active), whose ID
// is "command/<id>/<event>": a consumer can dedupe by it. Its labels hold
// the structured record: source, command_id, event, via, by, status,
// reason, value, read_back, deadline.
func (s *Service) auditOf(id string, e entry, event string, by ...string) ferry.Alert {
	r := e.Reply
	sev := ferry.SeverityInfo
	if event != "accepted" && event != ferry.CommandDone {
		sev = ferry.SeverityWarning
	}
	labels := map[string]string{
		"source":     "command",
		"command_id": id,
		"event":      event,
		"gateway":    s.opts.Gateway,
	}
	if e.Via != "" {
		labels["via"] = e.Via
	}
	if len(by) > 0 && by[0] != "" {
		labels["by"] = by[0]
	}
	if len(e.Value) > 0 {
		labels["value"] = truncate(string(e.Value), 256)
	}
	if !e.Deadline.IsZero() {
		labels["deadline"] = e.Deadline.UTC().Format(time.RFC3339Nano)
	}
	var msg string
	switch event {
	case "accepted":
		msg = fmt.Sprintf("command %s accepted: write %s to %s.%s", id, labels["value"], e.Device, e.Point)
	default:
		labels["status"] = r.Status
		if r.Reason != "" {
			labels["reason"] = truncate(r.Reason, 512)
		}
		if r.ReadBack != nil {
			labels["read_back"] = fmt.Sprint(r.ReadBack)
		}
		msg = fmt.Sprintf("command %s %s", id, r.Status)
		if r.Reason != "" {
			msg += ": " + truncate(r.Reason, 512)
		}
	}
	at := r.At
	if event == "accepted" || at.IsZero() {
		at = s.now()
	}
	since := e.Received
	if since.IsZero() {
		since = at
	}
	aid := "command/" + id + "/" + event
	if id == "" {
		aid = "command/-/" + strconv.FormatInt(at.UnixNano(), 10)
	}
	return ferry.Alert{
		ID:       aid,
		Rule:     AuditRule,
		Device:   e.Device,
		Point:    e.Point,
		Severity: sev,
		State:    ferry.AlertCleared,
		Message:  msg,
		Labels:   labels,
		Since:    since,
		Time:     at,
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
