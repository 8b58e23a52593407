package opcua

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
)

// eventHandleBase is the client handle of the first notifier's monitored
// item; the data items' handles are point indices, far below it.
const eventHandleBase = 1 << 30

// eventSub is the event monitoring of one session.
type eventSub struct {
	items int // event monitored items created
	// refreshing counts the RefreshEnd events still awaited (one per
	// monitored item) after ConditionRefresh.
	refreshing int
}

// errEvents wraps a failure of event monitoring that leaves the values
// flowing: a notifier that is not one, a server without events.
var errEvents = errors.New("events")

// monitorEvents creates one event monitored item per notifier in sub and
// calls ConditionRefresh. A notifier the server refuses is reported on
// the device (its state shows why) and skipped: the values keep flowing.
// Only a transport failure is returned.
func (dv *device) monitorEvents(ctx context.Context, s *session, sub *opcua.Subscription) (*eventSub, error) {
	ev := dv.cfg.Config.Events
	es := &eventSub{}
	if ev == nil {
		return es, nil
	}
	ns := s.c.Namespaces()
	filter, err := ev.eventFilter(ns)
	if err != nil {
		dv.eventProblem(fmt.Errorf("%w: %w", errEvents, err))
		return es, nil
	}
	var items []*ua.MonitoredItemCreateRequest
	var names []string
	for i, n := range ev.notifiers() {
		nid, _ := ParseNodeID(n) // validated
		r, err := nid.resolve(ns)
		if err != nil {
			dv.eventProblem(fmt.Errorf("%w: notifier %s: %s", errEvents, n, reasonNamespaceUnknown))
			continue
		}
		items = append(items, &ua.MonitoredItemCreateRequest{
			ItemToMonitor:  &ua.ReadValueID{NodeID: r, AttributeID: ua.AttributeIDEventNotifier, DataEncoding: &ua.QualifiedName{}},
			MonitoringMode: ua.MonitoringModeReporting,
			RequestedParameters: &ua.MonitoringParameters{
				ClientHandle:  uint32(eventHandleBase + i),
				QueueSize:     1000,
				DiscardOldest: true,
				Filter:        ua.NewExtensionObject(filter),
			},
		})
		names = append(names, n)
	}
	if len(items) == 0 {
		return es, nil
	}
	res, err := sub.Monitor(ctx, ua.TimestampsToReturnNeither, items...)
	if err != nil {
		if transport(reasonOf(err)) {
			return nil, fmt.Errorf("create event monitored items: %w", err)
		}
		dv.eventProblem(fmt.Errorf("%w: create event monitored items: %s", errEvents, reasonOf(err)))
		return es, nil
	}
	for k, r := range res.Results {
		if k >= len(names) {
			break
		}
		if r == nil || severity(r.StatusCode) == ferry.Bad {
			code := ua.StatusBad
			if r != nil {
				code = r.StatusCode
			}
			dv.eventProblem(fmt.Errorf("%w: notifier %s: %s%s", errEvents, names[k], StatusName(code), notifierHint(code)))
			continue
		}
		if p := filterProblem(r); p != "" {
			dv.eventProblem(fmt.Errorf("%w: notifier %s: %s", errEvents, names[k], p))
		}
		es.items++
	}
	if es.items == 0 {
		return es, nil
	}
	dv.eventsOK()
	// Resync: the server resends every retained condition between a
	// RefreshStart and a RefreshEnd event on each monitored item.
	dv.deliver(Event{Device: dv.cfg.Name, Kind: EventRefreshStart, Time: dv.now()})
	es.refreshing = es.items
	req := &ua.CallMethodRequest{
		ObjectID:       ua.NewNumericNodeID(0, id.ConditionType),
		MethodID:       ua.NewNumericNodeID(0, id.ConditionType_ConditionRefresh),
		InputArguments: []*ua.Variant{ua.MustVariant(sub.SubscriptionID)},
	}
	cres, err := s.c.Call(ctx, req)
	switch {
	case err != nil && transport(reasonOf(err)):
		return nil, fmt.Errorf("condition refresh: %w", err)
	case err != nil:
		es.refreshing = 0
		dv.eventProblem(fmt.Errorf("%w: condition refresh: %s", errEvents, reasonOf(err)))
	case severity(cres.StatusCode) == ferry.Bad:
		es.refreshing = 0
		dv.eventProblem(fmt.Errorf("%w: condition refresh: %s (the server may not support Alarms & Conditions; conditions are not resynced)", errEvents, StatusName(cres.StatusCode)))
	}
	return es, nil
}

// notifierHint explains the usual refusals of an event monitored item.
func notifierHint(code ua.StatusCode) string {
	switch code {
	case ua.StatusBadAttributeIDInvalid:
		return " (the node is not an event notifier: its EventNotifier attribute does not allow subscribing to events)"
	case ua.StatusBadNodeIDUnknown, ua.StatusBadNodeIDInvalid:
		return " (no such node on the server)"
	case ua.StatusBadMonitoredItemFilterUnsupported, ua.StatusBadFilterNotAllowed:
		return " (the server does not support event filters)"
	}
	return ""
}

// filterProblem names the select clauses the server refused, for the
// fields ferry needs ("" when none).
func filterProblem(r *ua.MonitoredItemCreateResult) string {
	if r.FilterResult == nil {
		return ""
	}
	fr, ok := r.FilterResult.Value.(*ua.EventFilterResult)
	if !ok || fr == nil {
		return ""
	}
	var bad []string
	for i, c := range fr.SelectClauseResults {
		if i < numFields && severity(c) == ferry.Bad && i <= fSeverity {
			bad = append(bad, eventFields[i].name+" "+StatusName(c))
		}
	}
	if len(bad) == 0 {
		return ""
	}
	return "event fields refused: " + strings.Join(bad, ", ")
}

// eventProblem reports an event monitoring problem on the device (its
// last error and error counter) and logs it once per session.
func (dv *device) eventProblem(err error) {
	dv.st.Error("events", err)
	if dv.eventsLogged != err.Error() {
		dv.eventsLogged = err.Error()
		dv.log.Warn("event monitoring problem; the values are not affected", "err", err)
	}
}

// eventsOK notes that event monitoring works (again).
func (dv *device) eventsOK() {
	if dv.eventsLogged != "" {
		dv.log.Info("event monitoring works again")
		dv.eventsLogged = ""
	}
}

// eventList handles one EventNotificationList.
func (dv *device) eventList(es *eventSub, v *ua.EventNotificationList, emit ferry.EmitFunc) {
	for _, f := range v.Events {
		if f == nil || f.ClientHandle < eventHandleBase {
			continue
		}
		e, ok := dv.decodeEvent(f.EventFields)
		if !ok {
			dv.st.Error("bad event", errors.New("event with fewer fields than selected"))
			continue
		}
		switch e.Kind {
		case EventRefreshStart:
			// Ours is sent when ferry calls ConditionRefresh.
			continue
		case EventRefreshEnd:
			if es.refreshing > 0 {
				es.refreshing--
				if es.refreshing == 0 {
					dv.deliver(e)
				}
			}
			continue
		case EventCondition:
			if dv.drv.sink != nil {
				dv.deliver(e)
				continue
			}
		}
		if dv.cfg.Config.Events.Plain && !e.BelowMin {
			dv.emitEvent(e, emit)
		}
	}
}

func (dv *device) deliver(e Event) {
	if dv.drv.sink != nil {
		dv.drv.sink(e)
	}
}

// decodeEvent decodes the fields of one event, in select order.
func (dv *device) decodeEvent(fields []*ua.Variant) (Event, bool) {
	if len(fields) < numFields {
		return Event{}, false
	}
	ev := dv.cfg.Config.Events
	e := Event{Device: dv.cfg.Name}
	val := func(i int) any {
		if fields[i] == nil {
			return nil
		}
		return fields[i].Value()
	}
	if b, ok := val(fEventID).([]byte); ok {
		e.EventID = b
	}
	e.EventType = nodeString(val(fEventType))
	e.SourceNode = nodeString(val(fSourceNode))
	e.SourceName, _ = val(fSourceName).(string)
	if t, ok := val(fTime).(time.Time); ok {
		e.Time = t
	}
	switch m := val(fMessage).(type) {
	case *ua.LocalizedText:
		if m != nil {
			e.Message = m.Text
		}
	case string:
		e.Message = m
	}
	e.Severity, _ = val(fSeverity).(uint16)
	e.Level = ev.Severity.Level(e.Severity)
	e.BelowMin = e.Severity < ev.Where.MinSeverity
	switch e.EventType {
	case "i=2787":
		e.Kind = EventRefreshStart
		return e, true
	case "i=2788":
		e.Kind = EventRefreshEnd
		return e, true
	}
	e.ConditionID = nodeString(val(fConditionID))
	if e.ConditionID == "" {
		return e, true
	}
	e.Kind = EventCondition
	e.ConditionName, _ = val(fConditionName).(string)
	e.BranchID = nodeString(val(fBranchID))
	e.Retain, _ = val(fRetain).(bool)
	e.Active, _ = val(fActiveState).(bool)
	e.Acked, _ = val(fAckedState).(bool)
	e.Confirmed, _ = val(fConfirmedState).(bool)
	return e, true
}

// nodeString returns a node id value's text form, "" for none or the
// null node id.
func nodeString(v any) string {
	n, ok := v.(*ua.NodeID)
	if !ok || n == nil || (n.Namespace() == 0 && n.IntID() == 0 && n.Type() == ua.NodeIDTypeTwoByte) {
		return ""
	}
	return n.String()
}

// emitEvent emits a plain event as one scan of the device: one sample per
// configured field, named <point>.<field> (docs/alarms.md), at the
// event's time.
func (dv *device) emitEvent(e Event, emit ferry.EmitFunc) {
	ev := dv.cfg.Config.Events
	fields := ev.Fields
	if len(fields) == 0 {
		fields = plainFields
	}
	t := e.Time
	if t.IsZero() {
		t = dv.now()
	}
	samples := make([]ferry.Sample, 0, len(fields))
	for _, f := range fields {
		var v ferry.Value
		switch f {
		case "EventId":
			v = ferry.StringValue(hex.EncodeToString(e.EventID))
		case "EventType":
			v = ferry.StringValue(e.EventType)
		case "SourceNode":
			v = ferry.StringValue(e.SourceNode)
		case "SourceName":
			v = ferry.StringValue(e.SourceName)
		case "Time":
			v = ferry.StringValue(t.UTC().Format(time.RFC3339Nano))
		case "Message":
			v = ferry.StringValue(e.Message)
		case "Severity":
			v = ferry.FloatValue(float64(e.Severity))
		}
		samples = append(samples, ferry.Sample{Device: dv.cfg.Name, Point: ev.Point + "." + strings.ToLower(f), Value: v, Time: t})
	}
	emit(ferry.Scan{Device: dv.cfg.Name, Time: dv.now(), Samples: samples})
}
