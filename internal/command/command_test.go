package command

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

// TestRefusals: each check of the command path refuses with a clear
// reason, writes nothing, and leaves one refused audit event upstream.
func TestRefusals(t *testing.T) {
	cases := []struct {
		name   string
		setup  func(e *env)
		req    string
		reason string
		stored bool // the refusal is stored under its id
	}{
		{name: "disabled", setup: func(e *env) { e.cfg.Enabled = false },
			req: req("c1", "press", "setpoint", 50), reason: "commands are disabled"},
		{name: "malformed JSON", req: `{"id": "c1", "device": "press",`, reason: "malformed request"},
		{name: "unknown field", req: `{"id": "c1", "device": "press", "point": "setpoint", "value": 1, "valeu": 2}`, reason: "malformed request"},
		{name: "no id", req: `{"device": "press", "point": "setpoint", "value": 1}`, reason: `"id" is required`},
		{name: "unknown device", req: req("c1", "nosuch", "setpoint", 50), reason: `unknown device "nosuch"`, stored: true},
		{name: "unknown point", req: req("c1", "press", "nosuch", 50), reason: `unknown point "nosuch" of device "press"`, stored: true},
		{name: "not writable", req: req("c1", "press", "line_speed", 0), reason: "press.line_speed is not writable", stored: true},
		{name: "wrong type", req: req("c1", "press", "setpoint", "fifty"), reason: `does not fit a float32 point`, stored: true},
		{name: "no value", req: `{"id": "c1", "device": "press", "point": "setpoint"}`, reason: `"value" is required`, stored: true},
		{name: "above max", req: req("c1", "press", "setpoint", 100.5), reason: "value 100.5 is above max 100", stored: true},
		{name: "below min", req: req("c1", "press", "setpoint", -1), reason: "value -1 is below min 0", stored: true},
		{name: "not allowed", req: req("c1", "press", "mode", 3), reason: "value 3 is not one of the allowed values 1, 2, 5", stored: true},
		{name: "deadline passed", req: `{"id": "c1", "device": "press", "point": "setpoint", "value": 5, "deadline": "2026-12-07T13:59:59Z"}`,
			reason: "deadline 2026-12-07T13:59:59Z has passed", stored: true},
		{name: "deadline too far", req: `{"id": "c1", "device": "press", "point": "setpoint", "value": 5, "deadline": "2026-12-07T15:00:00Z"}`,
			reason: "more than commands.max_deadline", stored: true},
		{name: "interlock false", setup: func(e *env) {
			e.set("press.line_speed", ferry.FloatValue(12), ferry.GoodQuality)
			e.set("cell.door_closed", ferry.BoolValue(true), ferry.GoodQuality)
		}, req: req("c1", "press", "run", true), reason: `interlock "line_speed == 0 && cell.door_closed" is false`, stored: true},
		{name: "interlock bad quality", setup: func(e *env) {
			e.set("press.line_speed", ferry.FloatValue(0), ferry.GoodQuality)
			e.set("cell.door_closed", ferry.BoolValue(true), ferry.BadQuality(ferry.ReasonTimeout))
		}, req: req("c1", "press", "run", true), reason: "cell.door_closed is bad: timeout", stored: true},
		{name: "interlock no value", req: req("c1", "press", "run", true), reason: "cell.door_closed has no value yet", stored: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.setup != nil {
				tc.setup(e)
			}
			r := e.do(tc.req)
			if r.Status != ferry.CommandRefused || !strings.Contains(r.Reason, tc.reason) {
				t.Fatalf("reply %+v, want refused with %q", r, tc.reason)
			}
			if n := e.w.count(); n != 0 {
				t.Fatalf("%d writes reached the driver", n)
			}
			up := e.upstream()
			if len(up) != 1 || up[0].Rule != AuditRule || up[0].Labels["event"] != ferry.CommandRefused ||
				!strings.Contains(up[0].Labels["reason"], tc.reason) {
				t.Fatalf("audit upstream %+v, want one refused event", up)
			}
			// A repeat of a stored refusal gets the same reply and no
			// second audit event; an unstored one is audited again.
			r2 := e.do(tc.req)
			if r2.Status != ferry.CommandRefused || e.w.count() != 0 {
				t.Fatalf("repeat: %+v, %d writes", r2, e.w.count())
			}
			if got := len(e.upstream()); (got == 0) != tc.stored {
				t.Fatalf("repeat left %d audit events; stored=%v", got, tc.stored)
			}
		})
	}
}

// TestRateLimit: a second write to a rate-limited point within its
// rate_limit is refused, also after a restart; after it, it goes.
func TestRateLimit(t *testing.T) {
	e := newEnv(t)
	if r := e.do(req("r1", "press", "reset", true)); r.Status != ferry.CommandDone {
		t.Fatalf("first: %+v", r)
	}
	e.advance(30 * time.Minute)
	r := e.do(req("r2", "press", "reset", true))
	if r.Status != ferry.CommandRefused || !strings.Contains(r.Reason, "rate limit: press.reset was written 30m0s ago, rate_limit is 1h0m0s") {
		t.Fatalf("second: %+v", r)
	}
	e.reopen()
	if r := e.do(req("r3", "press", "reset", true)); r.Status != ferry.CommandRefused || !strings.Contains(r.Reason, "rate limit") {
		t.Fatalf("after restart: %+v", r)
	}
	e.advance(31 * time.Minute)
	if r := e.do(req("r4", "press", "reset", true)); r.Status != ferry.CommandDone {
		t.Fatalf("after the limit: %+v", r)
	}
	if n := e.w.count(); n != 2 {
		t.Fatalf("%d writes, want 2", n)
	}
}

// TestDoneAndRepeat: a command is written once, read back, audited twice
// (accepted, done); a repeat of its id returns the stored reply and
// writes nothing, also after a restart.
func TestDoneAndRepeat(t *testing.T) {
	e := newEnv(t)
	e.set("press.line_speed", ferry.FloatValue(0), ferry.GoodQuality)
	e.set("cell.door_closed", ferry.BoolValue(true), ferry.GoodQuality)
	r := e.do(req("d1", "press", "setpoint", 42.5))
	if r.Status != ferry.CommandDone || r.ReadBack != 42.5 || r.ID != "d1" {
		t.Fatalf("reply %+v", r)
	}
	if r := e.do(req("d2", "press", "run", true)); r.Status != ferry.CommandDone {
		t.Fatalf("interlock true: %+v", r)
	}
	up := e.upstream()
	var events []string
	for _, a := range up {
		events = append(events, a.Labels["command_id"]+"/"+a.Labels["event"])
	}
	if got := strings.Join(events, " "); got != "d1/accepted d1/done d2/accepted d2/done" {
		t.Fatalf("audit upstream %q", got)
	}
	if again := e.do(req("d1", "press", "setpoint", 42.5)); !reflect.DeepEqual(again, r) {
		t.Fatalf("repeat %+v, want %+v", again, r)
	}
	e.reopen()
	// Even with another value: the id is the command.
	if again := e.do(req("d1", "press", "setpoint", 7)); again.Status != ferry.CommandDone || again.ReadBack != 42.5 {
		t.Fatalf("repeat after restart %+v", again)
	}
	if n := e.w.count(); n != 2 {
		t.Fatalf("%d writes, want 2", n)
	}
	if up := e.upstream(); len(up) != 0 {
		t.Fatalf("repeats audited: %+v", up)
	}
}

// TestDriverErrors: the driver's errors map to the reply's status.
func TestDriverErrors(t *testing.T) {
	other := ferry.FloatValue(41)
	cases := []struct {
		err    error
		back   *ferry.Value
		status string
	}{
		{fmt.Errorf("float32 cannot hold it: %w", ferry.ErrWriteRefused), nil, ferry.CommandRefused},
		{fmt.Errorf("holding 100: %w", ferry.ErrReadBackMismatch), &other, ferry.CommandFailed},
		{fmt.Errorf("no answer: %w", ferry.ErrWriteUnknown), nil, ferry.CommandUnknown},
		{errors.New("exception 0x02: illegal data address"), nil, ferry.CommandFailed},
	}
	for i, tc := range cases {
		e := newEnv(t)
		e.w.err, e.w.back = tc.err, tc.back
		r := e.do(req(fmt.Sprint("e", i), "press", "setpoint", 42))
		if r.Status != tc.status || r.Reason != tc.err.Error() {
			t.Errorf("%v: reply %+v, want %s", tc.err, r, tc.status)
		}
		if tc.back != nil && r.ReadBack != 41.0 {
			t.Errorf("%v: read back %v", tc.err, r.ReadBack)
		}
		up := e.upstream()
		if len(up) != 2 || up[1].Labels["status"] != tc.status {
			t.Errorf("%v: audit %+v", tc.err, up)
		}
	}
}

// TestCutShort: a gateway killed between storing the id and the reply
// reports the command unknown at the next start, audits that once, and
// never writes it again.
func TestCutShort(t *testing.T) {
	e := newEnv(t)
	e.w.block = make(chan struct{})
	done := make(chan ferry.CommandReply)
	go func() { done <- e.do(req("k1", "press", "setpoint", 9)) }()
	// Wait for the write to reach the driver: the id is stored by then.
	deadline := time.Now().Add(10 * time.Second)
	for e.w.count() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the write never reached the driver")
		}
		time.Sleep(time.Millisecond)
	}
	// A repeat while it is being written waits for it.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if r := e.svc.Handle(ctx, []byte(req("k1", "press", "setpoint", 9)), ViaNATS, ""); r.Status != ferry.CommandUnknown {
		t.Fatalf("repeat during the write: %+v", r)
	}
	cancel()
	// Simulate the crash: a second Service on a copy of the committed
	// file, as the next start would see it.
	if err := e.buf.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	crashed := &env{t: t, dir: t.TempDir(), w: &recWriter{}, points: testPoints(), values: map[string]ferry.Sample{}, now: e.now, cfg: e.cfg}
	copyFile(t, e.dir+"/buffer.db", crashed.dir+"/buffer.db")
	close(e.w.block)
	<-done
	crashed.open()
	r := crashed.do(req("k1", "press", "setpoint", 9))
	if r.Status != ferry.CommandUnknown || !strings.Contains(r.Reason, "gateway stopped during the write") {
		t.Fatalf("after restart: %+v", r)
	}
	if n := crashed.w.count(); n != 0 {
		t.Fatalf("retried: %d writes", n)
	}
	var events []string
	for _, a := range crashed.upstream() {
		events = append(events, a.Labels["command_id"]+"/"+a.Labels["event"])
	}
	if got := strings.Join(events, " "); got != "k1/accepted k1/unknown" {
		t.Fatalf("audit upstream %q", got)
	}
}

// TestConcurrentSameID: many requests with one id at once write once.
func TestConcurrentSameID(t *testing.T) {
	e := newEnv(t)
	var wg sync.WaitGroup
	replies := make([]ferry.CommandReply, 20)
	for i := range replies {
		wg.Add(1)
		go func() { defer wg.Done(); replies[i] = e.do(req("same", "press", "setpoint", 3)) }()
	}
	wg.Wait()
	for _, r := range replies {
		if !reflect.DeepEqual(r, replies[0]) || r.Status != ferry.CommandDone {
			t.Fatalf("replies differ: %+v vs %+v", r, replies[0])
		}
	}
	if n := e.w.count(); n != 1 {
		t.Fatalf("%d writes, want 1", n)
	}
}

// TestEvict: ids past keep, and the oldest beyond max_ids, are forgotten.
func TestEvict(t *testing.T) {
	e := newEnv(t)
	e.cfg.MaxIDs = 3
	for i := range 5 {
		e.do(req(fmt.Sprint("v", i), "press", "setpoint", i))
		e.advance(time.Second)
	}
	if n := e.svc.Evict(); n != 2 {
		t.Fatalf("evicted %d, want 2", n)
	}
	e.advance(e.cfg.Keep)
	if n := e.svc.Evict(); n != 3 {
		t.Fatalf("evicted %d, want 3", n)
	}
	e.reopen()
	n := 0
	if err := e.buf.ForEach(Bucket, func(k, v []byte) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("%d ids left (%v)", n, err)
	}
}

// TestMethodCall: a method declared in the device's map is called with
// its args, its outputs come back; a call with value, args on a point and
// an undeclared method are refused without a call.
func TestMethodCall(t *testing.T) {
	e := newEnv(t)
	r := e.do(`{"id": "m1", "device": "press", "point": "start_recipe", "args": ["RECIPE_A", 3]}`)
	if r.Status != ferry.CommandDone || !reflect.DeepEqual(r.Outputs, []any{"started", int64(2)}) {
		t.Fatalf("call: %+v", r)
	}
	if w := e.w.writes; len(w) != 1 || len(w[0].Args) != 2 || w[0].Args[0].Str() != "RECIPE_A" || w[0].Args[1].Int64() != 3 {
		t.Fatalf("driver got %+v", w)
	}
	for _, c := range []struct{ req, reason string }{
		{`{"id": "m2", "device": "press", "point": "start_recipe", "value": 1}`, "is a method: send args, not value"},
		{`{"id": "m3", "device": "press", "point": "setpoint", "args": [1]}`, "is a point, not a method"},
		{`{"id": "m4", "device": "press", "point": "stop_all", "args": []}`, `unknown point "stop_all"`},
		{`{"id": "m5", "device": "press", "point": "start_recipe", "args": [[1]]}`, "args[0]: must be a number, a bool or a string"},
	} {
		if r := e.do(c.req); r.Status != ferry.CommandRefused || !strings.Contains(r.Reason, c.reason) {
			t.Errorf("%s: %+v, want refused with %q", c.req, r, c.reason)
		}
	}
	if n := e.w.count(); n != 1 {
		t.Fatalf("%d calls, want 1", n)
	}
}
