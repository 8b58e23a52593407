package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
	"github.com/ferry-edge/ferry/buffer/buffertest"
	"github.com/ferry-edge/ferry/drivers/opcua"
)

// alarmsEnv is a machineAlarms on a real buffer in a temporary directory,
// with the transitions it hands to the local sinks.
type alarmsEnv struct {
	t   *testing.T
	dir string
	buf *buffer.Buffer
	m   *machineAlarms
	drv []ferry.Driver

	mu    sync.Mutex
	local []ferry.Alert
}

func newAlarmsEnv(t *testing.T) *alarmsEnv {
	e := &alarmsEnv{t: t, dir: t.TempDir()}
	e.open()
	return e
}

func (e *alarmsEnv) open() {
	e.t.Helper()
	buf := buffertest.Open(e.t, e.dir, buffer.Options{Gateway: "gw1"}, nil)
	e.buf = buf
	var err error
	e.m, err = newMachineAlarms(slog.New(slog.DiscardHandler), buf, func(a ferry.Alert) {
		e.mu.Lock()
		e.local = append(e.local, a)
		e.mu.Unlock()
	}, func() []ferry.Driver { return e.drv })
	if err != nil {
		e.t.Fatal(err)
	}
}

// transitions returns the local transitions as "condition state" lines.
func (e *alarmsEnv) transitions() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, a := range e.local {
		out = append(out, a.Rule+" "+a.State.String())
	}
	return strings.Join(out, ", ")
}

var alarmT0 = time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)

func condEvent(name string, eid byte, active, acked bool) opcua.Event {
	return opcua.Event{
		Device: "oven", Kind: opcua.EventCondition, EventID: []byte{eid}, ConditionID: "ns=2;s=" + name, ConditionName: name,
		Active: active, Acked: acked, Severity: 800, Level: ferry.SeverityCritical, Message: name + " message",
		Time: alarmT0.Add(time.Duration(eid) * time.Second), Retain: active || !acked,
	}
}

func refreshMarker(k opcua.EventKind) opcua.Event { return opcua.Event{Device: "oven", Kind: k} }

// TestMachineAlarmsState: the transitions a sequence of condition events
// makes — a repeated EventId, a branch and a condition below min_severity
// make none; a refresh that does not resend an active condition clears
// it; after a restart (the buffer reopened) the stored states come back
// and a refresh of an unchanged alarm raises nothing.
func TestMachineAlarmsState(t *testing.T) {
	e := newAlarmsEnv(t)
	h := e.m.handle
	h(refreshMarker(opcua.EventRefreshStart))
	h(refreshMarker(opcua.EventRefreshEnd))
	h(condEvent("Door", 1, true, false))
	h(condEvent("Door", 1, true, false)) // the same event again (two notifiers)
	branch := condEvent("Door", 2, false, false)
	branch.BranchID = "ns=2;i=99"
	h(branch)
	low := condEvent("Fan", 3, true, false)
	low.BelowMin = true
	h(low)
	h(condEvent("Door", 4, true, true))
	h(condEvent("Door", 5, false, true))
	if got, want := e.transitions(), "Door raised, Door acknowledged, Door cleared"; got != want {
		t.Fatalf("transitions %q, want %q", got, want)
	}
	if a := e.local[0]; a.Since != alarmT0.Add(time.Second) || a.Message != "Door message" || a.Severity != ferry.SeverityCritical || a.Labels["condition_id"] != "ns=2;s=Door" {
		t.Fatalf("raised alert: %+v", a)
	}
	if e.local[0].ID != e.local[2].ID {
		t.Fatalf("the episode changed id: %s, %s", e.local[0].ID, e.local[2].ID)
	}

	// Oil goes active; the refresh after a reconnect does not resend it.
	h(condEvent("Oil", 6, true, false))
	h(refreshMarker(opcua.EventRefreshStart))
	h(refreshMarker(opcua.EventRefreshEnd))
	if got := e.transitions(); !strings.HasSuffix(got, "Oil raised, Oil cleared") {
		t.Fatalf("transitions %q, want Oil raised then cleared by the refresh", got)
	}

	// Steam goes active; ferry restarts; the refresh resends Steam with a
	// new EventId (the server restarted too): nothing new.
	h(condEvent("Steam", 7, true, false))
	active := e.m.Active()
	if len(active) != 1 || active[0].Rule != "Steam" {
		t.Fatalf("active %+v, want Steam", active)
	}
	before := e.transitions()
	e.buf.Close()
	e.open()
	if got := e.m.Active(); len(got) != 1 || got[0].ID != active[0].ID || got[0].State != ferry.AlertRaised {
		t.Fatalf("after the restart active %+v, want %+v", got, active)
	}
	h(refreshMarker(opcua.EventRefreshStart))
	h(condEvent("Steam", 8, true, false))
	h(refreshMarker(opcua.EventRefreshEnd))
	if got := e.transitions(); got != before {
		t.Fatalf("after the restart and refresh: transitions %q, want none beyond %q", got, before)
	}
}

// testAcker is an acknowledger for the state test: it refuses, or it
// acknowledges as a server would, by sending the condition's acked event.
type testAcker struct {
	err  error
	m    *machineAlarms
	with opcua.Event
	got  []string
}

func (a *testAcker) Run(context.Context, ferry.EmitFunc) error { return nil }

func (a *testAcker) Acknowledge(ctx context.Context, device, conditionID string, eventID []byte, comment string) error {
	a.got = append(a.got, fmt.Sprintf("%s %s %x %s", device, conditionID, eventID, comment))
	if a.err != nil {
		return a.err
	}
	go a.m.handle(a.with) // the server's event arrives on the session goroutine
	return nil
}

// TestMachineAlarmsAck: acknowledging calls the device's driver with the
// condition's current EventId; a refusal leaves the alert raised and says
// why; an accepted one answers with the state the server's event brings.
func TestMachineAlarmsAck(t *testing.T) {
	e := newAlarmsEnv(t)
	e.m.handle(condEvent("Door", 1, true, false))
	id := e.m.Active()[0].ID
	refuse := &testAcker{err: errors.New("acknowledge oven condition ns=2;s=Door: BadEventIdUnknown")}
	e.drv = []ferry.Driver{refuse}
	if _, err := e.m.ack(context.Background(), id, "ann", ""); err == nil || !strings.Contains(err.Error(), "BadEventIdUnknown") {
		t.Fatalf("refused ack: %v", err)
	}
	if a := e.m.Active()[0]; a.State != ferry.AlertRaised {
		t.Fatalf("after a refused ack: %+v", a)
	}
	ok := &testAcker{m: e.m, with: condEvent("Door", 2, true, true)}
	e.drv = []ferry.Driver{ok}
	a, err := e.m.ack(context.Background(), id, "ann", "")
	if err != nil || a.State != ferry.AlertAcknowledged || a.Labels["acknowledged_by"] != "ann" {
		t.Fatalf("ack: %+v %v", a, err)
	}
	if want := "oven ns=2;s=Door 01 acknowledged in ferry by ann"; len(ok.got) != 1 || ok.got[0] != want {
		t.Fatalf("Acknowledge called with %q, want %q", ok.got, want)
	}
	if _, err := e.m.ack(context.Background(), "opcua-nope", "ann", ""); !errors.Is(err, ferry.ErrAlertNotFound) {
		t.Fatalf("ack of an unknown id: %v", err)
	}
}
