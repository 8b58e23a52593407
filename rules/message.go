package rules

import (
	"fmt"
	"io"
	"strings"
	"text/template"
	"time"

	"github.com/ferry-edge/ferry"
)

// maxMessage bounds a rendered message.
const maxMessage = 1024

// Message is what a rule's `message:` template sees.
type Message struct {
	Rule     string
	Device   string
	Point    string // the alert's point: the rule's `point:`, or the one point its expression reads
	Severity string
	State    string // raised, acknowledged, cleared
	// Value is the point's last Good value; it prints as a number, a
	// bool or a string ({{printf "%.1f" .Value.Float64}} to format).
	Value ferry.Value
	// Points holds the last Good value of every point the rule reads, by
	// "device.point": {{index .Points "press3.oil_temp"}}.
	Points map[string]ferry.Value
	Labels map[string]string
	Since  time.Time
	// Rate is the measured rate (rate rules), in units per `per`.
	Rate float64
	// Score is the anomaly score in standard deviations (anomaly rules).
	Score float64
	// Duration is how long the point has been silent, bad or flat (stale,
	// quality, flatline rules) when the alert was raised.
	Duration time.Duration
}

// parseMessage parses a message template and runs it once on sample data,
// so that a misspelt field is an error at load time, not at 3 am.
func parseMessage(name, text string) (*template.Template, error) {
	t, err := template.New(name).Option("missingkey=zero").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "template: "))
	}
	sample := Message{Rule: name, Device: "d", Point: "p", Severity: "warning", State: "raised",
		Value: ferry.FloatValue(1), Points: map[string]ferry.Value{}, Labels: map[string]string{}}
	if err := t.Execute(io.Discard, &sample); err != nil {
		return nil, fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "template: "))
	}
	return t, nil
}

// limitWriter keeps the first maxMessage bytes.
type limitWriter struct{ b strings.Builder }

func (w *limitWriter) Write(p []byte) (int, error) {
	if room := maxMessage - w.b.Len(); room > 0 {
		if len(p) > room {
			w.b.Write(p[:room])
		} else {
			w.b.Write(p)
		}
	}
	return len(p), nil
}

// message renders the message of a transition of r.
func (e *Engine) message(r *rule, a *ferry.Alert) string {
	st := r.st
	m := Message{
		Rule: r.cfg.Name, Device: a.Device, Point: a.Point, Severity: a.Severity.String(),
		State: a.State.String(), Value: a.Value, Labels: a.Labels, Since: a.Since,
		Duration: roundDuration(st.stale),
	}
	switch r.kind {
	case kindRate:
		m.Rate = st.stat
	case kindAnomaly:
		m.Score = st.stat
	}
	if r.msg != nil {
		m.Points = make(map[string]ferry.Value, len(r.refs))
		for _, p := range r.refs {
			m.Points[p.key()] = p.val
		}
		var w limitWriter
		if err := r.msg.Execute(&w, &m); err != nil {
			e.log.Debug("message template failed", "rule", r.cfg.Name, "err", err)
		} else {
			return w.b.String()
		}
	}
	return defaultMessage(r, &m)
}

// defaultMessage says what a rule saw, for rules without a template.
func defaultMessage(r *rule, m *Message) string {
	if m.State == "cleared" {
		if r.target != nil {
			return fmt.Sprintf("%s: back to normal (%s = %s)", r.cfg.Name, r.target.key(), m.Value)
		}
		return r.cfg.Name + ": back to normal"
	}
	c := &r.cfg
	switch r.kind {
	case kindWhen:
		var b strings.Builder
		b.WriteString(c.When)
		for i, p := range r.refs {
			if i == 0 {
				b.WriteString(": ")
			} else {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s = %s", p.key(), p.val)
		}
		return b.String()
	case kindRate:
		return fmt.Sprintf("%s changes %.4g/%s over %v (%s = %s)", c.Point, m.Rate, c.Rate.Per, c.Rate.Window, c.Point, m.Value)
	case kindStale:
		return fmt.Sprintf("%s: no good sample for %v", c.Point, m.Duration)
	case kindQuality:
		return fmt.Sprintf("%s: quality %s for %v", c.Point, r.target.q, m.Duration)
	case kindFlatline:
		return fmt.Sprintf("%s: stuck at %s (±%g) for %v", c.Point, m.Value, c.Flatline.Epsilon, m.Duration)
	case kindAnomaly:
		return fmt.Sprintf("%s = %s is anomalous: %s score %.2f (threshold %g)", c.Point, m.Value, c.Anomaly.Method, m.Score, c.Anomaly.Threshold)
	}
	return c.Name
}

// roundDuration rounds d as a person reads it in a message: to the
// millisecond under a second, the tenth of a second under a minute (10.5s),
// the second under an hour (2m3s), else the minute.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond)
	case d < time.Minute:
		return d.Round(100 * time.Millisecond)
	case d < time.Hour:
		return d.Round(time.Second)
	}
	return d.Round(time.Minute)
}
