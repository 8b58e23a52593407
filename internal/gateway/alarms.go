package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/drivers/opcua"
	"github.com/ferry-edge/ferry/rules"
)

// This file turns the machines' own alarms (OPC UA Alarms & Conditions,
// drivers/opcua events) into ferry alerts, with the lifecycle of a rule's
// alert: raised when the condition becomes active, acknowledged when the
// server says it is, cleared when it is no longer active (docs/alarms.md).
//
// The state of every condition seen (its last EventId, active and acked)
// is kept in the buffer's StateStore, and each transition is committed in
// the same transaction as its alert in the alerts lane (PutWithAlerts):
// after a reconnect or a restart, the server's ConditionRefresh resends
// the conditions' states, and only what changed makes a transition — no
// duplicate raise, and each transition upstream exactly once.

// alarmBucket is the StateStore bucket of the conditions' states.
const alarmBucket = "opcua_conditions"

// alarmAckWait bounds how long an acknowledge from ferry waits for the
// server to report the condition acknowledged.
const alarmAckWait = 10 * time.Second

// errMachineAck is returned when a machine alarm is acknowledged without
// the operator path: it is acknowledged on the machine.
var errMachineAck = errors.New("a machine alarm is acknowledged on the machine")

// alarmStore is what the conditions' states are kept in: the buffer.
type alarmStore interface {
	PutWithAlerts(bucket string, key, value []byte, alerts ...ferry.Alert) error
	ForEach(bucket string, fn func(key, value []byte) error) error
}

// acknowledger acknowledges a condition on its server (opcua.Driver).
type acknowledger interface {
	Acknowledge(ctx context.Context, device, conditionID string, eventID []byte, comment string) error
}

// condition is the state of one condition of one device, as stored.
type condition struct {
	V           int    `json:"v"`
	Device      string `json:"device"`
	ConditionID string `json:"condition_id"`
	Name        string `json:"name"`
	EventID     []byte `json:"event_id"`
	Active      bool   `json:"active"`
	Acked       bool   `json:"acked"`
	// The alert of the current (or last) episode.
	ID       string            `json:"id"`
	Rule     string            `json:"rule"`
	Severity string            `json:"severity"`
	State    string            `json:"state"`
	Message  string            `json:"message,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Since    time.Time         `json:"since"`
	Time     time.Time         `json:"time"`

	// ackBy is who acknowledged it in ferry, until the server's event
	// says it is acknowledged (not stored).
	ackBy string
}

func (c *condition) alert() ferry.Alert {
	sev, _ := ferry.ParseSeverity(c.Severity)
	st := ferry.AlertCleared
	switch c.State {
	case "raised":
		st = ferry.AlertRaised
	case "acknowledged":
		st = ferry.AlertAcknowledged
	}
	return ferry.Alert{
		ID: c.ID, Rule: c.Rule, Device: c.Device, Severity: sev, State: st,
		Message: c.Message, Labels: maps.Clone(c.Labels), Since: c.Since, Time: c.Time,
	}
}

// machineAlarms holds the conditions of every device and makes their
// alerts.
type machineAlarms struct {
	log     *slog.Logger
	store   alarmStore
	local   func(ferry.Alert)     // the local sinks
	drivers func() []ferry.Driver // the running drivers, to acknowledge
	now     func() time.Time

	mu    sync.Mutex
	conds map[string]*condition // by device "\x00" condition id
	// refresh holds, per device, the conditions resent since its last
	// RefreshStart (no entry: not refreshing).
	refresh map[string]map[string]bool
	// changed is closed (and replaced) at every change: acknowledges
	// wait on it for the server's word.
	changed chan struct{}
	lastID  int64
}

func newMachineAlarms(log *slog.Logger, store alarmStore, local func(ferry.Alert), drivers func() []ferry.Driver) (*machineAlarms, error) {
	m := &machineAlarms{
		log: log, store: store, local: local, drivers: drivers, now: time.Now,
		conds: map[string]*condition{}, refresh: map[string]map[string]bool{}, changed: make(chan struct{}),
	}
	err := store.ForEach(alarmBucket, func(k, v []byte) error {
		var c condition
		if err := json.Unmarshal(v, &c); err != nil || c.V != 1 || string(k) != condKey(c.Device, c.ConditionID) {
			m.log.Warn("ignoring a damaged machine alarm state", "key", string(k))
			return nil
		}
		m.conds[string(k)] = &c
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("machine alarms: %w", err)
	}
	return m, nil
}

func condKey(device, conditionID string) string { return device + "\x00" + conditionID }

// handle is an OPC UA driver's event sink: it is called from the device's
// session goroutine, in order.
func (m *machineAlarms) handle(e opcua.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch e.Kind {
	case opcua.EventRefreshStart:
		m.refresh[e.Device] = map[string]bool{}
	case opcua.EventRefreshEnd:
		m.refreshEnd(e.Device)
	case opcua.EventCondition:
		m.condition(e)
	}
}

// refreshEnd clears the active conditions of device that the refresh did
// not resend: they ended while ferry was not connected.
func (m *machineAlarms) refreshEnd(device string) {
	seen := m.refresh[device]
	delete(m.refresh, device)
	if seen == nil {
		return
	}
	m.log.Info("machine alarms resynced", "device", device, "retained", len(seen))
	for _, k := range slices.Sorted(maps.Keys(m.conds)) {
		c := m.conds[k]
		if c.Device != device || !c.Active || seen[c.ConditionID] {
			continue
		}
		next := *c
		next.Active = false
		next.State, next.Time = "cleared", m.now()
		next.Message = strings.TrimSuffix(c.Message, " (no longer active at the server)") + " (no longer active at the server)"
		m.commit(k, &next, true)
	}
}

// condition applies one condition event.
func (m *machineAlarms) condition(e opcua.Event) {
	if e.BranchID != "" {
		// An earlier state kept for acknowledgement: the alert follows
		// the condition's current state only.
		return
	}
	if seen := m.refresh[e.Device]; seen != nil {
		seen[e.ConditionID] = true
	}
	k := condKey(e.Device, e.ConditionID)
	c := m.conds[k]
	if c != nil && len(e.EventID) > 0 && bytes.Equal(c.EventID, e.EventID) {
		return // seen already (a refresh, or two notifiers)
	}
	t := e.Time
	if t.IsZero() {
		t = m.now()
	}
	var next condition
	if c != nil {
		next = *c
	}
	next.V, next.Device, next.ConditionID, next.EventID = 1, e.Device, e.ConditionID, e.EventID
	if e.ConditionName != "" {
		next.Name = e.ConditionName
	}
	wasActive := c != nil && c.Active
	switch {
	case e.Active && !wasActive:
		if e.BelowMin {
			m.commit(k, &next, false)
			return
		}
		next.Active, next.Acked = true, e.Acked
		next.Rule = ruleName(next.Name)
		next.ID = m.newID(k)
		next.Severity = e.Level.String()
		next.State = "raised"
		next.Message = e.Message
		next.Since, next.Time = t, t
		next.Labels = map[string]string{
			"source":         "opcua",
			"condition_id":   e.ConditionID,
			"condition":      next.Name,
			"source_name":    e.SourceName,
			"opcua_severity": strconv.Itoa(int(e.Severity)),
			"event_type":     e.EventType,
		}
		m.commit(k, &next, true)
		if e.Acked {
			// Raised already acknowledged (acked at the machine while
			// ferry was away): both transitions.
			m.acked(k, &next, t)
		}
	case e.Active && wasActive && e.Acked && !c.Acked:
		m.acked(k, &next, t)
	case !e.Active && wasActive:
		next.Active, next.Acked = false, e.Acked
		next.State, next.Time = "cleared", t
		if e.Message != "" {
			next.Message = e.Message
		}
		m.commit(k, &next, true)
	default:
		// No transition (a refresh of an unchanged state, a message or
		// severity change): keep the event id.
		next.Acked = next.Acked || e.Acked
		m.commit(k, &next, false)
	}
}

// acked makes the acknowledged transition of the condition at k.
func (m *machineAlarms) acked(k string, next *condition, t time.Time) {
	n := *next
	n.Acked, n.State, n.Time = true, "acknowledged", t
	if by := m.conds[k]; by != nil && by.ackBy != "" {
		n.Labels = maps.Clone(n.Labels)
		n.Labels[rules.AckLabel] = by.ackBy
	}
	n.ackBy = ""
	m.commit(k, &n, true)
}

// commit stores c under k, with its alert when transition is set, and
// hands the alert to the local sinks once committed. A failed commit
// keeps the previous state (the next event retries).
func (m *machineAlarms) commit(k string, c *condition, transition bool) {
	b, err := json.Marshal(c)
	if err != nil {
		m.log.Error("machine alarm state", "err", err)
		return
	}
	var alerts []ferry.Alert
	if transition {
		alerts = append(alerts, c.alert())
	}
	if err := m.store.PutWithAlerts(alarmBucket, []byte(k), b, alerts...); err != nil {
		m.log.Error("machine alarm not stored; it is retried at the next event of the condition", "device", c.Device, "condition", c.Name, "err", err)
		return
	}
	if old := m.conds[k]; old != nil && old.ackBy != "" && c.State != "acknowledged" {
		c.ackBy = old.ackBy
	}
	m.conds[k] = c
	close(m.changed)
	m.changed = make(chan struct{})
	for _, a := range alerts {
		m.log.Info("machine alarm "+a.State.String(), "device", a.Device, "condition", c.Name, "id", a.ID, "severity", a.Severity.String())
		m.local(a)
	}
}

// newID returns a new alert id for the condition at k: a digest of the
// device and condition, and ferry's clock (strictly increasing).
func (m *machineAlarms) newID(k string) string {
	now := m.now().UnixNano()
	if now <= m.lastID {
		now = m.lastID + 1
	}
	m.lastID = now
	sum := sha256.Sum256([]byte(k))
	return "opcua-" + hex.EncodeToString(sum[:5]) + "-" + strconv.FormatInt(now, 36)
}

// ruleName makes a condition's name an alert rule name (letters, digits,
// _ and -).
func ruleName(name string) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "opcua_condition"
	}
	return b.String()
}

// Active returns the active machine alarms.
func (m *machineAlarms) Active() []ferry.Alert {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []ferry.Alert
	for _, c := range m.conds {
		if c.Active {
			out = append(out, c.alert())
		}
	}
	return out
}

// owns reports whether id is an active machine alarm.
func (m *machineAlarms) owns(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byID(id) != ""
}

func (m *machineAlarms) byID(id string) string {
	for k, c := range m.conds {
		if c.Active && c.ID == id {
			return k
		}
	}
	return ""
}

// ack acknowledges the machine alarm id on its server (the condition's
// Acknowledge method, with comment) and waits until the server reports
// the condition acknowledged: the alert returned is the server's state.
func (m *machineAlarms) ack(ctx context.Context, id, by, comment string) (ferry.Alert, error) {
	m.mu.Lock()
	k := m.byID(id)
	if k == "" {
		m.mu.Unlock()
		return ferry.Alert{}, fmt.Errorf("ack %q: %w", id, ferry.ErrAlertNotFound)
	}
	c := m.conds[k]
	if c.Acked {
		a := c.alert()
		m.mu.Unlock()
		return a, nil
	}
	device, condID, eventID := c.Device, c.ConditionID, c.EventID
	c.ackBy = by
	m.mu.Unlock()

	if comment == "" {
		comment = "acknowledged in ferry"
		if by != "" {
			comment += " by " + by
		}
	}
	ctx, cancel := context.WithTimeout(ctx, alarmAckWait)
	defer cancel()
	if err := m.acknowledge(ctx, device, condID, eventID, comment); err != nil {
		return ferry.Alert{}, err
	}
	for {
		m.mu.Lock()
		c := m.conds[k]
		a, done, ch := c.alert(), c.Acked || !c.Active, m.changed
		m.mu.Unlock()
		if done {
			return a, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ferry.Alert{}, fmt.Errorf("ack %q: the server accepted the acknowledge but has not reported the condition acknowledged within %v", id, alarmAckWait)
		}
	}
}

// acknowledge finds the driver of device and calls Acknowledge.
func (m *machineAlarms) acknowledge(ctx context.Context, device, condID string, eventID []byte, comment string) error {
	for _, drv := range m.drivers() {
		a, ok := drv.(acknowledger)
		if !ok {
			continue
		}
		err := a.Acknowledge(ctx, device, condID, eventID, comment)
		if errors.Is(err, ferry.ErrUnknownDevice) {
			continue
		}
		return err
	}
	return fmt.Errorf("acknowledge on device %s: %w (it is no longer configured)", device, ferry.ErrUnknownDevice)
}

// attachAlarms makes the gateway's machine alarms the event sink of an
// OPC UA driver.
func (d *Gateway) attachAlarms(drv ferry.Driver) {
	if o, ok := drv.(*opcua.Driver); ok && d.alarms != nil {
		o.SetEventSink(d.alarms.handle)
	}
}

// runningDrivers returns the running drivers.
func (d *Gateway) runningDrivers() []ferry.Driver {
	if p := d.curDrivers.Load(); p != nil {
		return *p
	}
	return nil
}

// gatewayAlerts is what the HTTP API sees of the alerts: the rule
// engine's and the machines' (web.Alerts, and web.RemoteAcker for the
// machine alarms, which need the operator credential to acknowledge).
type gatewayAlerts struct {
	engine *rules.Engine
	m      *machineAlarms
}

func (g gatewayAlerts) Active() []ferry.Alert {
	out := append(g.engine.Active(), g.m.Active()...)
	slices.SortFunc(out, func(a, b ferry.Alert) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

func (g gatewayAlerts) Ack(id, by string) (ferry.Alert, error) {
	if g.m.owns(id) {
		return ferry.Alert{}, fmt.Errorf("ack %q: %w, with the operator credential", id, errMachineAck)
	}
	return g.engine.Ack(id, by)
}

// Remote reports whether id is a machine alarm.
func (g gatewayAlerts) Remote(id string) bool { return g.m.owns(id) }

// AckRemote acknowledges the machine alarm id on its machine.
func (g gatewayAlerts) AckRemote(ctx context.Context, id, by, comment string) (ferry.Alert, error) {
	return g.m.ack(ctx, id, by, comment)
}
