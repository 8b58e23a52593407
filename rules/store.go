package rules

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/ferry-edge/ferry"
)

// storedAlert is an active alert as kept in the StateStore.
type storedAlert struct {
	V        int               `json:"v"`
	ID       string            `json:"id"`
	Rule     string            `json:"rule"`
	Def      string            `json:"def"` // the rule's fingerprint when raised
	Device   string            `json:"device,omitempty"`
	Point    string            `json:"point,omitempty"`
	Severity string            `json:"severity"`
	State    string            `json:"state"`
	Kind     string            `json:"kind,omitempty"`
	Value    string            `json:"value,omitempty"`
	Message  string            `json:"message,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Since    time.Time         `json:"since"`
	Time     time.Time         `json:"time"`
}

func newStored(a ferry.Alert, def string) *storedAlert {
	s := &storedAlert{
		V: 1, ID: a.ID, Rule: a.Rule, Def: def, Device: a.Device, Point: a.Point,
		Severity: a.Severity.String(), State: a.State.String(), Message: a.Message,
		Labels: a.Labels, Since: a.Since, Time: a.Time,
	}
	if !a.Value.IsNone() {
		s.Kind, s.Value = a.Value.Kind().String(), a.Value.String()
	}
	return s
}

// decodeStored parses a stored record; it refuses anything it does not
// fully understand.
func decodeStored(key, b []byte) (*storedAlert, ferry.Alert, error) {
	var s storedAlert
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, ferry.Alert{}, err
	}
	if s.V != 1 {
		return nil, ferry.Alert{}, fmt.Errorf("version %d", s.V)
	}
	if s.ID == "" || s.ID != string(key) || s.Rule == "" {
		return nil, ferry.Alert{}, fmt.Errorf("id %q under key %q, rule %q", s.ID, key, s.Rule)
	}
	sev, err := ferry.ParseSeverity(s.Severity)
	if err != nil {
		return nil, ferry.Alert{}, err
	}
	a := ferry.Alert{
		ID: s.ID, Rule: s.Rule, Device: s.Device, Point: s.Point, Severity: sev,
		Message: s.Message, Labels: s.Labels, Since: s.Since, Time: s.Time,
	}
	switch s.State {
	case "raised":
		a.State = ferry.AlertRaised
	case "acknowledged":
		a.State = ferry.AlertAcknowledged
	default:
		return nil, ferry.Alert{}, fmt.Errorf("state %q", s.State)
	}
	if a.Value, err = parseValue(s.Kind, s.Value); err != nil {
		return nil, ferry.Alert{}, err
	}
	return &s, a, nil
}

func parseValue(kind, s string) (ferry.Value, error) {
	switch kind {
	case "":
		return ferry.Value{}, nil
	case "float":
		f, err := strconv.ParseFloat(s, 64)
		if err != nil && !math.IsInf(f, 0) {
			return ferry.Value{}, err
		}
		return ferry.FloatValue(f), nil
	case "int":
		i, err := strconv.ParseInt(s, 10, 64)
		return ferry.IntValue(i), err
	case "uint":
		u, err := strconv.ParseUint(s, 10, 64)
		return ferry.UintValue(u), err
	case "bool":
		b, err := strconv.ParseBool(s)
		return ferry.BoolValue(b), err
	case "string":
		return ferry.StringValue(s), nil
	}
	return ferry.Value{}, fmt.Errorf("value kind %q", kind)
}

// restore loads the active alerts kept in the store: an alert whose rule
// still exists unchanged is active again (and not emitted again); any
// other is cleared at the first evaluation. A record that cannot be read
// is logged and deleted.
func (e *Engine) restore() error {
	if e.store == nil {
		return nil
	}
	var bad [][]byte
	var restored int
	err := e.store.ForEach(StateBucket, func(k, v []byte) error {
		s, a, err := decodeStored(k, v)
		if err != nil {
			e.log.Warn("dropping unreadable alert state", "key", string(k), "err", err)
			bad = append(bad, append([]byte(nil), k...))
			return nil
		}
		e.m.active.WithLabelValues(a.Severity.String()).Inc()
		if r := e.g.byName[a.Rule]; r != nil && r.fp == s.Def && !r.st.active {
			r.st.active, r.st.alert, r.st.lastSince = true, a, a.Since
			restored++
			return nil
		}
		e.orphans = append(e.orphans, a)
		return nil
	})
	if err != nil {
		return fmt.Errorf("rules: read alert state: %w", err)
	}
	for _, k := range bad {
		if err := e.store.Delete(StateBucket, k); err != nil {
			return fmt.Errorf("rules: delete alert state %q: %w", k, err)
		}
	}
	if restored > 0 || len(e.orphans) > 0 {
		e.log.Info("restored active alerts", "active", restored, "to_clear", len(e.orphans))
	}
	return nil
}

// persist writes the pending alert state. Failed writes stay pending and
// are retried at the next tick.
func (e *Engine) persist() {
	if e.store == nil {
		return
	}
	e.mu.Lock()
	if len(e.pending) == 0 {
		e.mu.Unlock()
		return
	}
	work := e.pending
	e.pending = map[string]*storedAlert{}
	e.mu.Unlock()

	var failed map[string]*storedAlert
	var firstErr error
	for id, s := range work {
		var err error
		if s == nil {
			err = e.store.Delete(StateBucket, []byte(id))
		} else {
			var b []byte
			if b, err = json.Marshal(s); err == nil {
				err = e.store.Put(StateBucket, []byte(id), b)
			}
		}
		if err != nil {
			e.m.stateErrors.Inc()
			if failed == nil {
				failed = map[string]*storedAlert{}
			}
			failed[id] = s
			if firstErr == nil {
				firstErr = fmt.Errorf("write alert state %s: %w", id, err)
			}
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, s := range failed {
		if _, newer := e.pending[id]; !newer {
			e.pending[id] = s
		}
	}
	switch {
	case firstErr != nil && e.storeOK:
		e.log.Error("alert state not saved; retrying", "err", firstErr)
		e.storeOK = false
	case firstErr == nil && !e.storeOK:
		e.log.Info("alert state saved again")
		e.storeOK = true
	}
}
