package rules

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
	ftest "github.com/ferry-edge/ferry/internal/testutil"
)

var good = ferry.GoodQuality

func TestAck(t *testing.T) {
	h := newHarness(t, []Rule{withDefaults(Rule{Name: "hot", When: "p.t > 80"})}, nil)
	h.send("p.t", ferry.FloatValue(90), good)
	raised := h.take()[0]

	_, err := h.e.Ack("nope", "alice")
	mustErr(t, err, ErrNotFound)

	h.at(time.Minute)
	a, err := h.e.Ack(raised.ID, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if a.State != ferry.AlertAcknowledged || a.ID != raised.ID || a.Labels[AckLabel] != "alice" || !a.Time.Equal(t0.Add(time.Minute)) {
		t.Fatalf("ack returned %+v", a)
	}
	if got := h.take(); len(got) != 1 || got[0].State != ferry.AlertAcknowledged || got[0].ID != raised.ID {
		t.Fatalf("emitted %+v, want one acknowledged transition", got)
	}
	if act := h.e.Active(); len(act) != 1 || act[0].State != ferry.AlertAcknowledged {
		t.Fatalf("Active() = %+v", act)
	}
	// Twice: same answer, nothing emitted.
	if again, err := h.e.Ack(raised.ID, "bob"); err != nil || again.Labels[AckLabel] != "alice" {
		t.Fatalf("second ack: %+v %v", again, err)
	}
	if got := h.take(); len(got) != 0 {
		t.Fatalf("second ack emitted %v", got)
	}
	// Acknowledged alerts still clear, carrying who acknowledged.
	h.send("p.t", ferry.FloatValue(10), good)
	got := h.take()
	if states(got) != "cleared" || got[0].Labels[AckLabel] != "alice" {
		t.Fatalf("clear after ack: %+v", got)
	}
	_, err = h.e.Ack(raised.ID, "alice")
	mustErr(t, err, ErrNotFound)
	if len(h.e.Active()) != 0 {
		t.Fatal("still active")
	}
}

func TestUpdateKeepsUnchangedRules(t *testing.T) {
	keep := withDefaults(Rule{Name: "keep", When: "p.t > 80"})
	change := withDefaults(Rule{Name: "change", When: "p.t > 50"})
	remove := withDefaults(Rule{Name: "remove", When: "p.t > 60"})
	pend := withDefaults(Rule{Name: "pend", When: "q.t > 1", For: 10 * time.Second})
	h := newHarness(t, []Rule{keep, change, remove, pend}, nil)
	h.send("p.t", ferry.FloatValue(90), good)
	h.send("q.t", ferry.FloatValue(2), good)
	before := map[string]ferry.Alert{}
	for _, a := range h.take() {
		before[a.Rule] = a
	}
	if len(before) != 3 {
		t.Fatalf("raised %v", before)
	}

	changed := change
	changed.When = "p.t > 55"
	added := withDefaults(Rule{Name: "added", When: "p.t > 85"})
	h.at(5 * time.Second)
	if err := h.e.Update([]Rule{keep, changed, pend, added}); err != nil {
		t.Fatal(err)
	}
	got := h.take()
	cleared := map[string]string{}
	for _, a := range got {
		if a.State != ferry.AlertCleared {
			t.Fatalf("Update emitted %+v", a)
		}
		cleared[a.Rule] = a.ID
	}
	if len(cleared) != 2 || cleared["change"] != before["change"].ID || cleared["remove"] != before["remove"].ID {
		t.Fatalf("cleared %v, want the changed and removed rules' alerts", cleared)
	}
	act := h.e.Active()
	if len(act) != 1 || act[0].ID != before["keep"].ID {
		t.Fatalf("active after update %+v, want keep's alert with its id", act)
	}
	// The new rule sees the point's current value at its next sample, the
	// changed rule raises a new episode, the pending on-delay continued.
	h.at(10 * time.Second)
	h.e.Tick()
	if got := h.take(); states(got) != "raised" || got[0].Rule != "pend" {
		t.Fatalf("on-delay across Update: %+v", got)
	}
	h.send("p.t", ferry.FloatValue(90), good)
	rs := map[string]string{}
	for _, a := range h.take() {
		rs[a.Rule] = a.ID
	}
	if len(rs) != 2 || rs["change"] == "" || rs["change"] == before["change"].ID || rs["added"] == "" {
		t.Fatalf("after update raised %v", rs)
	}
	// A bad rule set is refused and the running one stays.
	err := h.e.Update([]Rule{withDefaults(Rule{Name: "x", When: "p.t >"})})
	mustErr(t, err, ferry.ErrInvalidConfig)
	if len(h.e.Active()) != 4 {
		t.Fatalf("active after refused update: %v", h.e.Active())
	}
}

// TestRestartWithActiveAlert: the alert survives a restart, is not
// emitted again, and clears normally; a rule that changed while the
// gateway was down has its old alert cleared.
func TestRestartWithActiveAlert(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(t *testing.T) (ferry.StateStore, func() ferry.StateStore)
	}{
		{"memory", func(t *testing.T) (ferry.StateStore, func() ferry.StateStore) {
			s := newMemStore()
			return s, func() ferry.StateStore { return s }
		}},
		{"bbolt", func(t *testing.T) (ferry.StateStore, func() ferry.StateStore) {
			path := boltPath(t)
			s := openBolt(t, path)
			return s, func() ferry.StateStore {
				s.db.Close()
				s2 := openBolt(t, path)
				t.Cleanup(func() { s2.db.Close() })
				return s2
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hot := withDefaults(Rule{Name: "hot", When: "p.t > 80", Clear: "p.t < 70"})
			silent := withDefaults(Rule{Name: "silent", Point: "p.t", Stale: 30 * time.Second})
			other := withDefaults(Rule{Name: "other", When: "q.t > 1"})
			store, reopen := tc.store(t)

			h := newHarness(t, []Rule{hot, silent, other}, store)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- h.e.Run(ctx) }()
			h.send("p.t", ferry.FloatValue(90), good)
			h.send("q.t", ferry.FloatValue(5), good)
			h.at(time.Second)
			raised := map[string]ferry.Alert{}
			for _, a := range h.take() {
				raised[a.Rule] = a
			}
			acked, err := h.e.Ack(raised["other"].ID, "op")
			if err != nil {
				t.Fatal(err)
			}
			h.take()
			cancel() // Run writes what is pending before it returns
			if err := <-done; err != nil {
				t.Fatal(err)
			}

			// Restart: "other" changed meanwhile.
			other.When = "q.t > 2"
			h2 := newHarness(t, []Rule{hot, silent, other}, reopen())
			h2.at(time.Minute)
			act := h2.e.Active()
			if got := h2.take(); len(got) != 1 || got[0].State != ferry.AlertCleared || got[0].ID != acked.ID {
				t.Fatalf("restart emitted %+v, want only the changed rule's alert cleared", got)
			}
			if len(act) != 1 || act[0].ID != raised["hot"].ID || act[0].State != ferry.AlertRaised || !act[0].Since.Equal(raised["hot"].Since) {
				t.Fatalf("Active() after restart = %+v, want hot's alert %s", act, raised["hot"].ID)
			}
			if act[0].Value.Float64() != 90 || act[0].Message != raised["hot"].Message {
				t.Fatalf("restored alert lost fields: %+v", act[0])
			}
			// Still hot: nothing re-raised. Silent for a minute, but the
			// stale rule only judges from the restart on.
			h2.send("p.t", ferry.FloatValue(85), good)
			h2.e.Tick()
			if got := h2.take(); len(got) != 0 {
				t.Fatalf("re-emitted after restart: %+v", got)
			}
			// Clears normally, with the same id.
			h2.send("p.t", ferry.FloatValue(60), good)
			got := h2.take()
			if states(got) != "cleared" || got[0].ID != raised["hot"].ID {
				t.Fatalf("clear after restart: %+v", got)
			}
			h2.e.persist()
			var left []string
			_ = h2.e.store.ForEach(StateBucket, func(k, _ []byte) error { left = append(left, string(k)); return nil })
			if len(left) != 0 {
				t.Fatalf("state store still holds %v", left)
			}
		})
	}
}

func TestRestartHoldsStaleAlertWithoutData(t *testing.T) {
	store := newMemStore()
	silent := withDefaults(Rule{Name: "silent", Point: "p.t", Stale: 30 * time.Second})
	h := newHarness(t, []Rule{silent}, store)
	h.at(30 * time.Second)
	h.e.Tick()
	if states(h.take()) != "raised" {
		t.Fatal("not raised")
	}
	h.e.persist()
	// Restarted 10 s later with the device still silent: the alert must
	// not clear (and re-raise 30 s later).
	h2 := newHarness(t, []Rule{silent}, store)
	for s := 0.0; s <= 60; s += 1 {
		h2.at(sec(s))
		h2.e.Tick()
	}
	if got := h2.take(); len(got) != 0 {
		t.Fatalf("restart flapped: %v", states(got))
	}
	h2.send("p.t", ferry.FloatValue(1), good)
	if states(h2.take()) != "cleared" {
		t.Fatal("not cleared by data")
	}
}

func TestUnreadableStateIsDropped(t *testing.T) {
	store := newMemStore()
	_ = store.Put(StateBucket, []byte("x-1"), []byte("{garbage"))
	_ = store.Put(StateBucket, []byte("y-1"), []byte(`{"v":1,"id":"y-1","rule":"y","severity":"loud","state":"raised"}`))
	h := newHarness(t, []Rule{withDefaults(Rule{Name: "y", When: "p.t > 1"})}, store)
	if len(h.e.Active()) != 0 || len(store.keys(StateBucket)) != 0 {
		t.Fatalf("active %v, store %v", h.e.Active(), store.keys(StateBucket))
	}
}

func TestStateStoreFailureIsRetried(t *testing.T) {
	store := newMemStore()
	reg := prometheus.NewRegistry()
	now := t0
	e, err := New([]Rule{withDefaults(Rule{Name: "hot", When: "p.t > 1"})}, Options{
		Now: func() time.Time { return now }, State: store, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	store.fail = errors.New("disk on fire")
	e.Process(&ferry.Scan{Device: "p", Samples: []ferry.Sample{{Point: "t", Value: ferry.FloatValue(2)}}})
	e.persist()
	if n := testutil.ToFloat64(e.m.stateErrors); n != 1 {
		t.Fatalf("state errors %v", n)
	}
	store.fail = nil
	e.persist()
	if keys := store.keys(StateBucket); len(keys) != 1 || !strings.HasPrefix(keys[0], "hot-") {
		t.Fatalf("after retry the store holds %v", keys)
	}
}

func TestRunTicksAndPersists(t *testing.T) {
	store := newMemStore()
	reg := prometheus.NewRegistry()
	emitted := make(chan ferry.Alert, 10)
	e, err := New([]Rule{withDefaults(Rule{Name: "silent", Point: "p.t", Stale: 50 * time.Millisecond})}, Options{
		State: store, Registerer: reg, Tick: 10 * time.Millisecond,
		Emit: func(a ferry.Alert) { emitted <- a },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	select {
	case a := <-emitted:
		if a.State != ferry.AlertRaised || a.Rule != "silent" {
			t.Fatalf("got %+v", a)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stale alert not raised by Run's ticker")
	}
	ftest.WaitFor(t, 10*time.Second, "the active alert written to the store", func() bool { return len(store.keys(StateBucket)) == 1 })
	if n := testutil.ToFloat64(e.m.active.WithLabelValues("warning")); n != 1 {
		t.Fatalf("ferry_alerts_active{severity=warning} = %v", n)
	}
	if n := testutil.ToFloat64(e.m.transitions.WithLabelValues("silent", "raised")); n != 1 {
		t.Fatalf("transitions = %v", n)
	}
	if n, err := testutil.GatherAndCount(reg, "ferry_rules_evaluations_total"); err != nil || n != 1 {
		t.Fatalf("evaluations metric: %d %v", n, err)
	}
}
