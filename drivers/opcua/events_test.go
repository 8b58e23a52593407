package opcua

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// eventLog keeps the events a driver delivers to its sink.
type eventLog struct {
	mu  sync.Mutex
	evs []Event
}

func (l *eventLog) sink(e Event) {
	l.mu.Lock()
	l.evs = append(l.evs, e)
	l.mu.Unlock()
}

func (l *eventLog) all() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.evs...)
}

// last returns the last condition event of name, on its current branch.
func (l *eventLog) last(name string) (Event, bool) {
	evs := l.all()
	for i := len(evs) - 1; i >= 0; i-- {
		if e := evs[i]; e.Kind == EventCondition && e.ConditionName == name && e.BranchID == "" {
			return e, true
		}
	}
	return Event{}, false
}

func (l *eventLog) count(k EventKind) int {
	n := 0
	for _, e := range l.all() {
		if e.Kind == k {
			n++
		}
	}
	return n
}

func alarmServer(t *testing.T) *testpeer.NodeOPCUA {
	return testpeer.StartNodeOPCUAAlarms(t, testpeer.NodeOPCUAConfig{
		Nodes:  []testpeer.NodeOPCUAVar{{Name: "Overheat", Type: "Boolean", Value: false}, {Name: "Temp", Type: "Double", Value: 21.5}},
		Alarms: []testpeer.NodeOPCUAAlarm{{Name: "OverheatAlarm", Input: "Overheat", Severity: 800, Message: "oven over temperature"}},
	})
}

// TestEventsNodeOPCUA runs the driver against node-opcua's Alarms &
// Conditions: the refresh markers after connect, a condition that goes
// active (severity 800 → critical), is acknowledged through the driver
// (the server's AckedState and comment change, and the server's event
// says so), and clears; a plain event becomes one scan of event.* samples
// at the event's time.
func TestEventsNodeOPCUA(t *testing.T) {
	t.Parallel()
	srv := alarmServer(t)
	dev := testDevice("oven", srv.Endpoint(), func(c *Config) {
		insecure(c)
		var e Events
		e.SetDefaults()
		c.Events = &e
	}, Point{Name: "temp", Node: srv.Node("Temp")})
	d := newDriver(t, dev)
	var log eventLog
	d.SetEventSink(log.sink)
	c := newCollector()
	runDriver(t, d, c)

	testutil.WaitFor(t, 30*time.Second, "refresh start and end", func() bool {
		return log.count(EventRefreshStart) == 1 && log.count(EventRefreshEnd) == 1
	})
	if _, ok := log.last("OverheatAlarm"); ok {
		t.Fatalf("an inactive condition was reported by the refresh: %+v", log.all())
	}
	if err := srv.Set("Overheat", true); err != nil {
		t.Fatal(err)
	}
	var raised Event
	testutil.WaitFor(t, 20*time.Second, "the condition active", func() bool {
		e, ok := log.last("OverheatAlarm")
		raised = e
		return ok && e.Active
	})
	if raised.Acked || raised.Severity != 800 || raised.Level != ferry.SeverityCritical || raised.Message != "oven over temperature" ||
		raised.ConditionID != srv.Node("OverheatAlarm") || len(raised.EventID) == 0 || raised.Time.IsZero() || !strings.HasSuffix(raised.SourceName, "Machine") {
		t.Fatalf("raised: %+v", raised)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Acknowledge(ctx, "oven", raised.ConditionID, raised.EventID, "seen by ferry test"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the acknowledged state reported by the server", func() bool {
		e, _ := log.last("OverheatAlarm")
		return e.Active && e.Acked
	})
	st, err := srv.Alarm("OverheatAlarm")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Acked || st.Acks != 1 || st.Comment != "seen by ferry test" {
		t.Fatalf("server alarm state after ack: %+v", st)
	}
	// A stale event id: the server refuses it, and the driver says so.
	if err := d.Acknowledge(ctx, "oven", raised.ConditionID, []byte("no such event"), "again"); err == nil || !strings.Contains(err.Error(), "Bad") {
		t.Fatalf("ack of an unknown event id: %v, want the server's Bad status", err)
	}

	if err := srv.Set("Overheat", false); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the condition inactive", func() bool {
		e, _ := log.last("OverheatAlarm")
		return !e.Active
	})

	from := c.count()
	if err := srv.RaiseEvent("door opened", 300); err != nil {
		t.Fatal(err)
	}
	m := c.waitFor(t, from, "the plain event's samples", func(m map[string]ferry.Sample) bool {
		return m["event.message"].Value.String() == "door opened"
	})
	if m["event.severity"].Value.Float64() != 300 || !strings.HasSuffix(m["event.sourcename"].Value.String(), "Machine") || m["event.eventid"].Value.String() == "" {
		t.Fatalf("plain event samples: %v", m)
	}
	if v := c.latest(0)["temp"]; v.Value.Float64() != 21.5 {
		t.Fatalf("temp beside the events: %v", v)
	}
}

// TestEventsBadNotifier: a notifier that does not exist is refused by the
// server: the device's state says why, the values keep flowing, and the
// good notifier (the Server object) still delivers.
func TestEventsBadNotifier(t *testing.T) {
	t.Parallel()
	srv := alarmServer(t)
	dev := testDevice("oven", srv.Endpoint(), func(c *Config) {
		insecure(c)
		var e Events
		e.SetDefaults()
		e.Notifiers = []string{srv.Node("NoSuchNode"), "i=2253"}
		c.Events = &e
	}, Point{Name: "temp", Node: srv.Node("Temp")})
	d := newDriver(t, dev)
	var log eventLog
	d.SetEventSink(log.sink)
	c := newCollector()
	runDriver(t, d, c)
	testutil.Eventually(t, 30*time.Second, "the device reporting the bad notifiers", func() error {
		st := d.DeviceStatus()[0]
		if st.Connected && st.Errors["events"] >= 1 && strings.Contains(st.LastError, "NoSuchNode: BadNodeIdUnknown") {
			return nil
		}
		return fmt.Errorf("status %+v", st)
	})
	st := d.DeviceStatus()[0]
	t.Logf("device state: %s", st.LastError)
	from := c.count()
	if err := srv.Set("Temp", 30.5); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, from, "temp still flowing", func(m map[string]ferry.Sample) bool {
		return m["temp"].Value.Float64() == 30.5
	})
	if err := srv.Set("Overheat", true); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the condition active through the good notifier", func() bool {
		e, ok := log.last("OverheatAlarm")
		return ok && e.Active
	})
}

// TestEventsConfig: the events block's bad input is refused at load with
// the field's path.
func TestEventsConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config, *Events)
		want string
	}{
		{"poll mode", func(c *Config, e *Events) { c.Mode = "poll" }, "opcua.events: needs mode subscribe"},
		{"unknown field", func(c *Config, e *Events) { e.Fields = []string{"Message", "Colour"} }, `opcua.events.fields[1]: unknown event field "Colour"`},
		{"bad notifier", func(c *Config, e *Events) { e.Notifiers = []string{"x=1"} }, "opcua.events.notifiers[0]"},
		{"bad type", func(c *Config, e *Events) { e.Where.Types = []string{"nope"} }, "opcua.events.where.types[0]"},
		{"severity order", func(c *Config, e *Events) { e.Severity = SeverityMap{Warning: 700, Critical: 400} }, "opcua.events.severity.critical: 400 is below warning 700"},
		{"min severity", func(c *Config, e *Events) { e.Where.MinSeverity = 1001 }, "opcua.events.where.min_severity"},
		{"good", func(c *Config, e *Events) { e.Fields = []string{"Message"}; e.Where.Types = []string{"i=2915"} }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := testDevice("oven", "opc.tcp://127.0.0.1:4840", func(c *Config) {
				insecure(c)
				var e Events
				e.SetDefaults()
				tc.mod(c, &e)
				c.Events = &e
			})
			err := dev.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	m := SeverityMap{Warning: 400, Critical: 700}
	for sev, want := range map[uint16]ferry.Severity{1: ferry.SeverityInfo, 399: ferry.SeverityInfo, 400: ferry.SeverityWarning, 699: ferry.SeverityWarning, 700: ferry.SeverityCritical, 1000: ferry.SeverityCritical} {
		if got := m.Level(sev); got != want {
			t.Errorf("Level(%d) = %v, want %v", sev, got, want)
		}
	}
}
