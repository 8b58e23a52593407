package opcua

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	ftest "github.com/ferry-edge/ferry/internal/testutil"
)

// quietHold is how long the quiet-subscription tests watch a session
// whose values never change: more than 3 keep-alive periods of the
// settings below (keepalive 1s), and more than 3 of the old publish waits
// that raced the server's keep-alive (issue 27).
const quietHold = 4 * time.Second

// quietConfig is a subscription with short keep-alive settings in which
// the old code let the server's keep-alive period equal the publish wait
// (keepalive 1s / interval 100ms = 10 intervals = 1 s = the request
// timeout), so that every quiet Publish raced its timeout.
func quietConfig(c *Config) {
	insecure(c)
	c.Mode = "subscribe"
	c.Interval = 100 * time.Millisecond
	c.Timeouts.Keepalive = time.Second
	c.Timeouts.Request = time.Second
}

// holdQuiet runs d until a Good value arrives, then checks for quietHold
// that the session stays up: no reconnect, no lost session, connected.
func holdQuiet(t *testing.T, d *Driver, m *Metrics, logs logCapture, points ...string) {
	t.Helper()
	c := newCollector()
	runDriver(t, d, c)
	c.waitFor(t, 0, "good values", func(s map[string]ferry.Sample) bool {
		for _, p := range points {
			if v, ok := s[p]; !ok || !v.Quality.IsGood() {
				return false
			}
		}
		return true
	})
	n := c.count()
	start := time.Now()
	why := ""
	lost := func() bool {
		r := testutil.ToFloat64(m.reconnects.WithLabelValues("plc"))
		e := testutil.CollectAndCount(m.sessionErrs)
		st := d.DeviceStatus()[0]
		if r != 0 || e != 0 || !st.Connected {
			why = fmt.Sprintf("after %v: reconnects %v, session errors %d, connected %v (%s)",
				time.Since(start).Round(time.Millisecond), r, e, st.Connected, st.LastError)
			return true
		}
		return false
	}
	ftest.Never(t, quietHold, "a quiet subscription lost its session", func() bool {
		if lost() {
			t.Log(why)
			return true
		}
		return false
	})
	// Nothing but the first values: the points were quiet indeed, and no
	// Bad samples were emitted meanwhile.
	for _, s := range c.latest(n) {
		if !s.Quality.IsGood() {
			t.Errorf("%s: %v during the quiet hold", s.Point, s.Quality)
		}
	}
	if k := logs.count("subscription revised by the server", "", ""); k != 1 {
		t.Errorf("revised subscription logged %d times, want once per session", k)
	}
}

// TestQuietSubscriptionNodeOPCUA (issue 27): a subscription whose values
// never change, against node-opcua (a third-party stack), keeps its
// session for more than 3 keep-alive periods. The old code derived the
// keep-alive count from the probe period alone, so that the server's
// keep-alive Publish answer came exactly when the publish wait ran out;
// the session dropped every ~2 keep-alive periods.
//
// "server raises the interval": 10ms is below node-opcua's fastest
// publishing interval (50ms), so the server revises it upwards and the
// requested count (50) would make a 2.5s keep-alive period; the driver
// lowers the count (ModifySubscription) to keep the rule.
func TestQuietSubscriptionNodeOPCUA(t *testing.T) {
	t.Parallel()
	srv := testpeer.StartNodeOPCUA(t, testpeer.NodeOPCUAConfig{Nodes: []testpeer.NodeOPCUAVar{
		{Name: "Setpoint", Type: "Double", Value: 42.5},
		{Name: "Recipe", Type: "String", Value: "R-17"},
	}})
	for _, tc := range []struct {
		name     string
		interval time.Duration
	}{
		{"issue 27", 100 * time.Millisecond},
		{"server raises the interval", 10 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := NewMetrics(nil)
			logs := newLogCapture()
			d, err := New([]Device{testDevice("plc", srv.Endpoint(), func(c *Config) { quietConfig(c); c.Interval = tc.interval },
				Point{Name: "setpoint", Node: srv.Node("Setpoint")}, Point{Name: "recipe", Node: srv.Node("Recipe")})},
				Options{DataDir: t.TempDir(), Metrics: m, Logger: slog.New(logs)})
			if err != nil {
				t.Fatal(err)
			}
			holdQuiet(t, d, m, logs, "setpoint", "recipe")
			period := logs.attr("subscription revised by the server", "keepalive_period")
			t.Logf("revised: interval %v, keep-alive count %v, period %v",
				logs.attr("subscription revised by the server", "publishing_interval"),
				logs.attr("subscription revised by the server", "keepalive_count"), period)
			if p, ok := period.(time.Duration); !ok || p <= 0 || p > 500*time.Millisecond {
				t.Errorf("revised keep-alive period %v, want at most half the publish wait (500ms)", period)
			}
		})
	}
}

// TestQuietSubscriptionGopcua: the same against the in-process gopcua
// server.
func TestQuietSubscriptionGopcua(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverOpts{none: true})
	srv.add(sourceTime, "Setpoint", 42.5, "Recipe", "R-17")
	m := NewMetrics(nil)
	logs := newLogCapture()
	d, err := New([]Device{testDevice("plc", srv.Endpoint(), quietConfig,
		Point{Name: "setpoint", Node: srv.Node("Setpoint")}, Point{Name: "recipe", Node: srv.Node("Recipe")})},
		Options{DataDir: t.TempDir(), Metrics: m, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	holdQuiet(t, d, m, logs, "setpoint", "recipe")
}

// TestKeepAliveRule: for every configuration the validation accepts, the
// requested keep-alive period is at most half the publish wait, also when
// a server raises the count to its minimum (2); the others are refused
// with the field and what to set.
func TestKeepAliveRule(t *testing.T) {
	ms := time.Millisecond
	for _, iv := range []time.Duration{10 * ms, 100 * ms, 500 * ms, time.Second, 3 * time.Second, 10 * time.Second} {
		for _, req := range []time.Duration{100 * ms, time.Second, 2 * time.Second, 10 * time.Second, 20 * time.Second, time.Minute} {
			for _, ka := range []time.Duration{50 * ms, time.Second, 10 * time.Second, time.Minute} {
				d := testDevice("plc", "opc.tcp://h:4840", func(c *Config) {
					c.Interval, c.Timeouts.Request, c.Timeouts.Keepalive = iv, req, ka
				}, Point{Name: "p", Node: "ns=2;s=P"})
				err := d.Validate()
				if err != nil {
					if !strings.Contains(err.Error(), "opcua.timeouts.request: ") || !strings.Contains(err.Error(), "at least "+(4*iv).String()) {
						t.Errorf("interval %v request %v: error %q does not name the field and the least value", iv, req, err)
					}
					if req >= 4*iv {
						t.Errorf("interval %v request %v keepalive %v refused: %v", iv, req, ka, err)
					}
					continue
				}
				if req < 4*iv {
					t.Errorf("interval %v request %v accepted, want refused", iv, req)
				}
				n := keepAliveCount(iv, ka, req)
				period := time.Duration(max(n, minServerKeepAliveCount)) * iv
				if period > req/2 {
					t.Errorf("interval %v request %v keepalive %v: count %d, keep-alive period %v > half the publish wait",
						iv, req, ka, n, period)
				}
				if ka >= iv && ka <= req/2 && time.Duration(n)*iv > ka {
					t.Errorf("interval %v keepalive %v: count %d makes a period longer than the probe period", iv, ka, n)
				}
			}
		}
	}
	// The configuration: interval 500ms, default timeouts.
	if n := keepAliveCount(500*ms, 10*time.Second, 10*time.Second); n != 10 {
		t.Errorf("issue 27 configuration: count %d, want 10 (a 5s keep-alive period in a 10s publish wait)", n)
	}
	// Poll mode has no subscription: no rule.
	d := testDevice("plc", "opc.tcp://h:4840", func(c *Config) { c.Mode, c.Interval, c.Timeouts.Request = "poll", 10*time.Second, time.Second },
		Point{Name: "p", Node: "ns=2;s=P"})
	if err := d.Validate(); err != nil {
		t.Errorf("poll: %v", err)
	}
}

// attr returns the value of attribute key of the last record with msg
// (nil when none).
func (l logCapture) attr(msg, key string) any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var v any
	for _, r := range *l.recs {
		if r.Message != msg {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				v = a.Value.Any()
			}
			return true
		})
	}
	return v
}
