package rules

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

// FuzzExpr: any expression text either is refused with an error or
// compiles and evaluates (natively or on expr's VM) without panicking, for
// any values.
func FuzzExpr(f *testing.F) {
	for _, s := range []string{
		"a.x > 80", "a.x > 80 and a.y < 3 || not a.b", `a.s == "RUN"`, `a.s in ["A", "B"]`,
		"abs(a.x - a.y) / (a.y + 1) >= 2 ? true : a.b", `$env["a"]["x"] ** 2 > 1e3`, "let v = a.x; v > 1",
		"min(a.x, a.y, 3) < max(1)", "a.x % 2 == 0", `upper(a.s) matches "^R"`, "a.x..a.y", "a.x.y", "((((",
		"a.x > 1; a.y < 2", "-a.x > -1", "!a.b", `a.x + a.s == "1RUN"`,
	} {
		f.Add(s, 1.5, -2.0, true, "RUN")
	}
	f.Fuzz(func(t *testing.T, src string, x, y float64, b bool, s string) {
		p, err := parseExpr(src, nil)
		if err != nil {
			return
		}
		pts := map[string]*point{}
		pg, err := bindProgram(p, func(dev, name string) *point {
			k := dev + "." + name
			if pts[k] == nil {
				pts[k] = &point{dev: dev, name: name, usable: true}
			}
			return pts[k]
		})
		if err != nil {
			t.Fatalf("%q parsed but does not bind: %v", src, err)
		}
		vals := []ferry.Value{ferry.FloatValue(x), ferry.FloatValue(y), ferry.BoolValue(b), ferry.StringValue(s), ferry.IntValue(int64(x)), {}}
		i := 0
		for _, pt := range pts {
			pt.val = vals[i%len(vals)]
			i++
		}
		_, _, _ = pg.eval()
	})
}

// FuzzStoredAlert: the state decoder never panics, and what it accepts
// survives a round trip.
func FuzzStoredAlert(f *testing.F) {
	a := ferry.Alert{ID: "hot-1", Rule: "hot", Device: "p", Point: "t", Severity: ferry.SeverityCritical,
		State: ferry.AlertAcknowledged, Value: ferry.FloatValue(81.5), Message: "m", Labels: map[string]string{"k": "v"},
		Since: t0, Time: t0.Add(time.Second)}
	good, _ := json.Marshal(newStored(a, "abc"))
	f.Add([]byte("hot-1"), good)
	f.Add([]byte("x"), []byte(`{"v":1,"id":"x","rule":"r","severity":"info","state":"raised","kind":"int","value":"-3"}`))
	f.Add([]byte("x"), []byte(`{"v":1,"id":"x","rule":"r","severity":"info","state":"raised","kind":"float","value":"NaN"}`))
	f.Add([]byte("x"), []byte(`{"v":2}`))
	f.Add([]byte(""), []byte(`null`))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		s, a, err := decodeStored(key, value)
		if err != nil {
			return
		}
		b, err := json.Marshal(newStored(a, s.Def))
		if err != nil {
			t.Fatal(err)
		}
		_, a2, err := decodeStored(key, b)
		if err != nil {
			t.Fatalf("round trip of %s: %v", b, err)
		}
		if a2.ID != a.ID || a2.State != a.State || a2.Severity != a.Severity || !a2.Value.Equal(a.Value) && !(isNaN(a.Value) && isNaN(a2.Value)) {
			t.Fatalf("round trip changed %+v into %+v", a, a2)
		}
	})
}

func isNaN(v ferry.Value) bool { return v.Kind() == ferry.KindFloat && math.IsNaN(v.Float64()) }

// FuzzEngine drives an engine holding every rule kind with arbitrary
// samples, qualities, clock steps, acks and reloads, and checks the
// lifecycle: per rule, raised → (acknowledged) → cleared, one id per
// episode, and Active() agreeing with what was emitted.
func FuzzEngine(f *testing.F) {
	f.Add([]byte{0, 10, 1, 200, 2, 50, 3, 255, 4, 0, 5, 1, 6, 7})
	f.Add([]byte("the quick brown fox jumps over the lazy dog; stale, rates and z-scores"))
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, data []byte) {
		an := &Anomaly{}
		an.SetDefaults()
		an.Window, an.MinSamples, an.Warmup = 20*time.Second, 5, 5*time.Second
		ew := *an
		ew.Method = "ewma"
		rs := []Rule{
			{Name: "when", When: "p.x > 100", Clear: "p.x < 50", For: time.Second, ClearFor: 2 * time.Second},
			{Name: "multi", When: "p.x > 10 and p.y < 100"},
			{Name: "rate", Point: "p.x", Rate: &Rate{Window: 10 * time.Second, Per: "second", Above: f64(5)}},
			{Name: "stale", Point: "p.y", Stale: 5 * time.Second},
			{Name: "quality", Point: "p.x", Quality: 3 * time.Second},
			{Name: "flat", Point: "p.y", Flatline: &Flatline{Duration: 8 * time.Second, Epsilon: 1}},
			{Name: "z", Point: "p.x", Anomaly: an},
			{Name: "ew", Point: "p.y", Anomaly: &ew},
		}
		for i := range rs {
			rs[i].Severity = "warning"
		}
		store := newMemStore()
		h := newHarness(t, rs, store)
		type ep struct {
			id    string
			acked bool
		}
		open := map[string]*ep{}
		check := func() {
			for _, a := range h.take() {
				e := open[a.Rule]
				switch a.State {
				case ferry.AlertRaised:
					if e != nil {
						t.Fatalf("%s raised twice (open %s, new %s)", a.Rule, e.id, a.ID)
					}
					open[a.Rule] = &ep{id: a.ID}
				case ferry.AlertAcknowledged:
					if e == nil || e.id != a.ID || e.acked {
						t.Fatalf("bad ack %+v (open %+v)", a, e)
					}
					e.acked = true
				case ferry.AlertCleared:
					if e == nil || e.id != a.ID {
						t.Fatalf("clear of %s %s, open %+v", a.Rule, a.ID, e)
					}
					delete(open, a.Rule)
				}
			}
			act := h.e.Active()
			if len(act) != len(open) {
				t.Fatalf("Active() has %d alerts, emitted says %d", len(act), len(open))
			}
			for _, a := range act {
				if e := open[a.Rule]; e == nil || e.id != a.ID || e.acked != (a.State == ferry.AlertAcknowledged) {
					t.Fatalf("Active() %+v disagrees with %+v", a, e)
				}
			}
		}
		elapsed := time.Duration(0)
		for len(data) >= 2 {
			op, arg := data[0], data[1]
			data = data[2:]
			switch op % 8 {
			case 0, 1: // a sample of p.x
				h.send("p.x", ferry.FloatValue(float64(arg)), good)
			case 2: // a sample of p.y, maybe bad
				q := good
				if arg%3 == 0 {
					q = ferry.BadQuality(ferry.ReasonTimeout)
				}
				h.send("p.y", ferry.FloatValue(float64(arg)), q)
			case 3: // a non-number or bad sample of p.x
				if arg%2 == 0 {
					h.send("p.x", ferry.StringValue("n/a"), good)
				} else {
					h.send("p.x", ferry.Value{}, ferry.UncertainQuality("x"))
				}
			case 4: // time passes
				elapsed += time.Duration(arg) * 50 * time.Millisecond
				h.at(elapsed)
			case 5:
				h.e.Tick()
			case 6: // ack something
				if act := h.e.Active(); len(act) > 0 {
					if _, err := h.e.Ack(act[int(arg)%len(act)].ID, "fuzz"); err != nil {
						t.Fatal(err)
					}
				}
			case 7: // reload, with or without a change
				next := append([]Rule(nil), rs...)
				if arg%2 == 1 {
					next[int(arg/2)%len(next)].Description = "changed"
				}
				if arg%5 == 0 {
					next = next[1:]
				}
				if err := h.e.Update(next); err != nil {
					t.Fatal(err)
				}
			}
			check()
		}
		// Restart: what is active stays active, nothing is emitted.
		h.e.persist()
		h2 := newHarness(t, rs, store)
		h2.at(elapsed)
		act := h2.e.Active()
		for _, a := range h2.take() {
			if a.State != ferry.AlertCleared {
				t.Fatalf("restart emitted %+v", a)
			}
			delete(open, a.Rule) // a rule removed by the last reload
		}
		if len(act) != len(open) {
			t.Fatalf("after restart %d active, want %d", len(act), len(open))
		}
	})
}
