package opcua

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/setting"
)

// This file is the `events:` block of a device (docs/alarms.md): which
// notifiers ferry subscribes to for events, which events it keeps, and how
// an OPC UA condition's severity maps to ferry's. events_session.go
// subscribes; alarms.go decodes conditions and acknowledges them.

// Events is the `events:` block of an OPC UA device.
type Events struct {
	// Notifiers are the objects whose events are monitored (their
	// EventNotifier attribute must allow it). Default: the Server object,
	// i=2253, which sees every event of the server.
	Notifiers []string `yaml:"notifiers" doc:"objects whose events are monitored (EventNotifier); default the Server object i=2253"`
	Where     Where    `yaml:"where" doc:"which events are kept"`
	// Fields are the fields a plain (non-condition) event record carries.
	Fields []string `yaml:"fields" doc:"fields a plain event record carries: EventId, EventType, SourceNode, SourceName, Time, Message, Severity; default all"`
	// Severity maps an OPC UA severity (1–1000) to ferry's levels.
	Severity SeverityMap `yaml:"severity" doc:"OPC UA severity (1-1000) from which a condition is a warning or critical alert"`
	// Point is the name prefix of a plain event's samples:
	// <point>.message, <point>.severity, … (default "event").
	Point string `yaml:"point" doc:"name prefix of a plain event's samples (<point>.message, …); default event"`
	// Plain turns plain (non-condition) event records on or off.
	Plain bool `yaml:"plain" doc:"default true: plain (non-condition) events become event records"`
}

// Where selects events.
type Where struct {
	// Types are event type node ids; only events of these types or their
	// subtypes are sent by the server (refresh markers always are).
	Types []string `yaml:"types" doc:"event types kept (subtypes included), node ids such as i=2915 (AlarmConditionType); default all"`
	// MinSeverity drops plain events below it and raises no alert for a
	// condition below it; a raised condition's clear always passes.
	MinSeverity uint16 `yaml:"min_severity" doc:"lowest OPC UA severity kept (0-1000); a raised condition's clear always passes"`
}

// SeverityMap is the severity table: a condition with an OPC UA severity
// of at least Critical is a critical alert, of at least Warning a warning,
// else info.
type SeverityMap struct {
	Warning  uint16 `yaml:"warning" doc:"lowest OPC UA severity of a warning alert (default 400)"`
	Critical uint16 `yaml:"critical" doc:"lowest OPC UA severity of a critical alert (default 700)"`
}

// Level returns the ferry severity of an OPC UA severity.
func (m SeverityMap) Level(sev uint16) ferry.Severity {
	switch {
	case sev >= m.Critical:
		return ferry.SeverityCritical
	case sev >= m.Warning:
		return ferry.SeverityWarning
	}
	return ferry.SeverityInfo
}

// SetDefaults sets the defaults applied before decoding.
func (e *Events) SetDefaults() {
	e.Severity = SeverityMap{Warning: 400, Critical: 700}
	e.Point = "event"
	e.Plain = true
}

// The event fields ferry knows, in the order of its select clauses. The
// first ones are those of every event (BaseEventType); the others those
// of conditions.
const (
	fEventID = iota
	fEventType
	fSourceNode
	fSourceName
	fTime
	fMessage
	fSeverity
	fConditionID
	fConditionName
	fBranchID
	fRetain
	fActiveState
	fAckedState
	fConfirmedState
	numFields
)

// eventField is one select clause.
type eventField struct {
	name string
	typ  uint32   // the type that defines the field
	path []string // browse path from the type; empty: the node itself
	attr ua.AttributeID
}

var eventFields = [numFields]eventField{
	fEventID:        {"EventId", id.BaseEventType, []string{"EventId"}, ua.AttributeIDValue},
	fEventType:      {"EventType", id.BaseEventType, []string{"EventType"}, ua.AttributeIDValue},
	fSourceNode:     {"SourceNode", id.BaseEventType, []string{"SourceNode"}, ua.AttributeIDValue},
	fSourceName:     {"SourceName", id.BaseEventType, []string{"SourceName"}, ua.AttributeIDValue},
	fTime:           {"Time", id.BaseEventType, []string{"Time"}, ua.AttributeIDValue},
	fMessage:        {"Message", id.BaseEventType, []string{"Message"}, ua.AttributeIDValue},
	fSeverity:       {"Severity", id.BaseEventType, []string{"Severity"}, ua.AttributeIDValue},
	fConditionID:    {"ConditionId", id.ConditionType, nil, ua.AttributeIDNodeID},
	fConditionName:  {"ConditionName", id.ConditionType, []string{"ConditionName"}, ua.AttributeIDValue},
	fBranchID:       {"BranchId", id.ConditionType, []string{"BranchId"}, ua.AttributeIDValue},
	fRetain:         {"Retain", id.ConditionType, []string{"Retain"}, ua.AttributeIDValue},
	fActiveState:    {"ActiveState", id.AlarmConditionType, []string{"ActiveState", "Id"}, ua.AttributeIDValue},
	fAckedState:     {"AckedState", id.AcknowledgeableConditionType, []string{"AckedState", "Id"}, ua.AttributeIDValue},
	fConfirmedState: {"ConfirmedState", id.AcknowledgeableConditionType, []string{"ConfirmedState", "Id"}, ua.AttributeIDValue},
}

// plainFields are the fields a plain event record may carry.
var plainFields = []string{"EventId", "EventType", "SourceNode", "SourceName", "Time", "Message", "Severity"}

// validateEvents checks the events block; paths are relative to the
// device entry.
func validateEvents(errs *setting.Errors, e *Events, mode string) {
	if e == nil {
		return
	}
	if mode != "subscribe" {
		errs.Add("opcua.events", "needs mode subscribe (events arrive on a subscription)")
	}
	for i, n := range e.Notifiers {
		if _, err := ParseNodeID(n); err != nil {
			errs.Add(setting.Index("opcua.events.notifiers", i), "%v", err)
		}
	}
	for i, t := range e.Where.Types {
		if _, err := ParseNodeID(t); err != nil {
			errs.Add(setting.Index("opcua.events.where.types", i), "%v", err)
		}
	}
	if e.Where.MinSeverity > 1000 {
		errs.Add("opcua.events.where.min_severity", "%d is out of range 0..1000", e.Where.MinSeverity)
	}
	for i, f := range e.Fields {
		if !slices.Contains(plainFields, f) {
			errs.Add(setting.Index("opcua.events.fields", i), "unknown event field %q; known: %s", f, strings.Join(plainFields, ", "))
		}
	}
	s := e.Severity
	switch {
	case s.Warning < 1 || s.Warning > 1000:
		errs.Add("opcua.events.severity.warning", "%d is out of range 1..1000", s.Warning)
	case s.Critical < 1 || s.Critical > 1000:
		errs.Add("opcua.events.severity.critical", "%d is out of range 1..1000", s.Critical)
	case s.Critical < s.Warning:
		errs.Add("opcua.events.severity.critical", "%d is below warning %d", s.Critical, s.Warning)
	}
	if e.Point == "" || strings.ContainsAny(e.Point, " \t") {
		errs.Add("opcua.events.point", "%q: want a name without spaces", e.Point)
	}
}

// notifiers returns the configured notifiers, or the Server object.
func (e *Events) notifiers() []string {
	if len(e.Notifiers) == 0 {
		return []string{"i=2253"}
	}
	return e.Notifiers
}

// eventFilter returns the EventFilter of e: every known field, and the
// type clause (refresh markers always pass it).
func (e *Events) eventFilter(ns []string) (*ua.EventFilter, error) {
	// gopcua encodes a nil struct pointer as nothing at all: the where
	// clause is always there, empty when it selects every event.
	f := &ua.EventFilter{WhereClause: &ua.ContentFilter{}}
	for _, ef := range eventFields {
		op := &ua.SimpleAttributeOperand{
			TypeDefinitionID: ua.NewNumericNodeID(0, ef.typ),
			AttributeID:      ef.attr,
		}
		for _, p := range ef.path {
			op.BrowsePath = append(op.BrowsePath, &ua.QualifiedName{NamespaceIndex: 0, Name: p})
		}
		f.SelectClauses = append(f.SelectClauses, op)
	}
	if len(e.Where.Types) == 0 {
		return f, nil
	}
	// Element 0: Or over OfType(each type), RefreshStart, RefreshEnd
	// (as a chain of binary Ors).
	var types []*ua.NodeID
	for _, t := range e.Where.Types {
		n, _ := ParseNodeID(t) // validated
		r, err := n.resolve(ns)
		if err != nil {
			return nil, fmt.Errorf("event type %s: %w", t, err)
		}
		types = append(types, r)
	}
	types = append(types, ua.NewNumericNodeID(0, id.RefreshStartEventType), ua.NewNumericNodeID(0, id.RefreshEndEventType))
	cf := &ua.ContentFilter{}
	// Or elements first (indices 0..len-2), then the OfType leaves.
	nor := len(types) - 1
	leaf := func(k int) uint32 { return uint32(nor + k) }
	for i := range nor {
		var right *ua.ElementOperand
		if i == nor-1 {
			right = &ua.ElementOperand{Index: leaf(i + 1)}
		} else {
			right = &ua.ElementOperand{Index: uint32(i + 1)}
		}
		cf.Elements = append(cf.Elements, &ua.ContentFilterElement{
			FilterOperator: ua.FilterOperatorOr,
			FilterOperands: []*ua.ExtensionObject{
				ua.NewExtensionObject(&ua.ElementOperand{Index: leaf(i)}),
				ua.NewExtensionObject(right),
			},
		})
	}
	for _, t := range types {
		cf.Elements = append(cf.Elements, &ua.ContentFilterElement{
			FilterOperator: ua.FilterOperatorOfType,
			FilterOperands: []*ua.ExtensionObject{ua.NewExtensionObject(&ua.LiteralOperand{Value: ua.MustVariant(t)})},
		})
	}
	f.WhereClause = cf
	return f, nil
}

// EventKind says what an Event is.
type EventKind uint8

// The kinds of events.
const (
	// EventPlain is an event that is not a condition's.
	EventPlain EventKind = iota
	// EventCondition is a condition's state change (or its current state,
	// resent by ConditionRefresh).
	EventCondition
	// EventRefreshStart: the driver asked the server to resend the state
	// of every retained condition (after each connect).
	EventRefreshStart
	// EventRefreshEnd: the server has resent every retained condition;
	// a condition active before and not resent is no longer active.
	EventRefreshEnd
)

// Event is one event of a device, decoded.
type Event struct {
	Device string
	Kind   EventKind
	// EventID identifies the event (the server's EventId).
	EventID    []byte
	EventType  string // node id
	SourceNode string // node id
	SourceName string
	// Time is the machine's time of the event (its Time field); zero when
	// the server sent none.
	Time     time.Time
	Message  string
	Severity uint16
	// Level is Severity mapped by the device's severity table.
	Level ferry.Severity

	// The condition's fields (Kind EventCondition).
	ConditionID   string // node id of the condition
	ConditionName string
	// BranchID is "" for the condition's current state, a node id for an
	// earlier state kept for acknowledgement (a branch).
	BranchID  string
	Retain    bool
	Active    bool
	Acked     bool
	Confirmed bool
	// BelowMin is set when Severity is below where.min_severity.
	BelowMin bool
}

// EventSink receives a device's condition events and refresh markers. It
// is called from the device's session goroutine, in order.
type EventSink func(Event)

// SetEventSink makes sink the receiver of condition events; call it
// before Run. Without one, condition events are handled as plain ones.
func (d *Driver) SetEventSink(sink EventSink) { d.sink = sink }
