package ferry

import (
	"math"
	"strconv"
	"time"
)

// Severity ranks alerts. The zero value is SeverityInfo.
type Severity uint8

// The severities, from least to most urgent.
const (
	SeverityInfo Severity = iota
	SeverityWarning
	SeverityCritical
)

var severityNames = [...]string{"info", "warning", "critical"}

// String returns "info", "warning" or "critical".
func (s Severity) String() string {
	if int(s) < len(severityNames) {
		return severityNames[s]
	}
	return "severity(" + strconv.Itoa(int(s)) + ")"
}

// ParseSeverity parses "info", "warning" or "critical".
func ParseSeverity(s string) (Severity, error) {
	for i, n := range severityNames {
		if s == n {
			return Severity(i), nil
		}
	}
	return 0, &ParseError{What: "severity", Value: s, Want: "info, warning, critical"}
}

// AlertState is where an alert is in its life: raised, then optionally
// acknowledged, then cleared.
type AlertState uint8

// The alert states.
const (
	AlertRaised AlertState = iota
	AlertAcknowledged
	AlertCleared
)

var alertStateNames = [...]string{"raised", "acknowledged", "cleared"}

// String returns "raised", "acknowledged" or "cleared".
func (s AlertState) String() string {
	if int(s) < len(alertStateNames) {
		return alertStateNames[s]
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// Active reports whether an alert in state s still needs attention
// (raised or acknowledged, not cleared).
func (s AlertState) Active() bool { return s != AlertCleared }

// Alert is one transition of one alert: raised, acknowledged or cleared.
// Every transition of the same alert carries the same ID.
type Alert struct {
	// ID identifies the alert from raise to clear, across restarts.
	ID       string
	Rule     string
	Device   string
	Point    string
	Severity Severity
	State    AlertState
	// Value is the value that caused the transition (none for stale alerts).
	Value   Value
	Message string
	Labels  map[string]string
	// Since is when the alert was raised; Time is when this transition
	// happened.
	Since time.Time
	Time  time.Time
}

// AlertSink delivers alerts to one local destination (log, MQTT, webhook,
// HTTP stream). Send must not block: a sink queues, retries with backoff on
// its own goroutine, and drops (and counts) what it cannot deliver, so that a
// slow or dead sink never delays the rule engine or another sink.
type AlertSink interface {
	Send(Alert)
}

// AlertJSON is the JSON form of an alert transition, as the MQTT and
// webhook sinks, the SSE stream and the HTTP API send it.
type AlertJSON struct {
	ID       string            `json:"id"`
	Gateway  string            `json:"gateway,omitempty"`
	Rule     string            `json:"rule"`
	Device   string            `json:"device,omitempty"`
	Point    string            `json:"point,omitempty"`
	Severity string            `json:"severity"`
	State    string            `json:"state"`
	Value    any               `json:"value"` // number, bool, string or null; NaN and ±Inf as strings
	Message  string            `json:"message,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Since    time.Time         `json:"since"`
	Time     time.Time         `json:"time"`
}

// NewAlertJSON returns the JSON form of a, raised on gateway.
func NewAlertJSON(a Alert, gateway string) AlertJSON {
	j := AlertJSON{
		ID: a.ID, Gateway: gateway, Rule: a.Rule, Device: a.Device, Point: a.Point,
		Severity: a.Severity.String(), State: a.State.String(), Message: a.Message,
		Labels: a.Labels, Since: a.Since, Time: a.Time,
	}
	switch a.Value.Kind() {
	case KindNone:
	case KindFloat:
		f := a.Value.Float64()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			j.Value = a.Value.String()
		} else {
			j.Value = f
		}
	default:
		j.Value = a.Value.Any()
	}
	return j
}
