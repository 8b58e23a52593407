package opcua

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/devstat"
	"github.com/ferry-edge/ferry/internal/testpeer"
	ftest "github.com/ferry-edge/ferry/internal/testutil"
)

// TestBadNodesIsolated: unknown nodes, an unknown namespace and a node
// the user may not read are Bad with their own reason, the other points
// of the same batch are Good — in both modes, and again after the server
// restarts with its namespace at another index.
func TestBadNodesIsolated(t *testing.T) {
	for _, mode := range []string{"poll", "subscribe"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, serverOpts{none: true, extraNS: 1})
			ts := sourceTime
			srv.add(ts, "A", 1.0, "B", 2.0, "C", 3.0, lockedNode, 0.0)
			nsu := func(name string) string { return "nsu=" + testNS + ";s=" + name }
			points := []Point{
				{Name: "a", Node: nsu("A")},
				{Name: "missing", Node: nsu("Missing")},
				{Name: "b", Node: nsu("B")},
				{Name: "no_namespace_index", Node: "ns=77;s=A"},
				{Name: "no_namespace_uri", Node: "nsu=urn:nowhere;s=A"},
				{Name: "locked", Node: nsu(lockedNode)},
				{Name: "c", Node: srv.Node("C")}, // by index: valid until the restart below
			}
			logs := newLogCapture()
			d, err := New([]Device{testDevice("plc", srv.Endpoint(), func(c *Config) { insecure(c); c.Mode = mode }, points...)},
				Options{DataDir: t.TempDir(), Logger: slog.New(logs)})
			if err != nil {
				t.Fatal(err)
			}
			c := newCollector()
			runDriver(t, d, c)

			want := map[string]ferry.Quality{
				"missing":            ferry.BadQuality("BadNodeIdUnknown"),
				"no_namespace_index": ferry.BadQuality("Bad"),
				"no_namespace_uri":   ferry.BadQuality("unknown namespace"),
				"locked":             ferry.BadQuality("BadUserAccessDenied"),
			}
			check := func(from int, wantC ferry.Quality, values map[string]float64) {
				t.Helper()
				c.waitFor(t, from, "good and bad points", func(m map[string]ferry.Sample) bool {
					for name, v := range values {
						s, ok := m[name]
						if !ok || !s.Quality.IsGood() || !s.Value.Equal(ferry.FloatValue(v)) {
							return false
						}
					}
					for name, q := range want {
						if s, ok := m[name]; !ok || s.Quality != q {
							return false
						}
					}
					s, ok := m["c"]
					return ok && s.Quality.Status == wantC.Status
				})
			}
			check(0, ferry.GoodQuality, map[string]float64{"a": 1, "b": 2, "c": 3})

			// Restart with the test namespace moved from index 2 to 4:
			// nsu= points follow it, the ns=2 point now names a node of
			// another namespace and turns Bad.
			n := c.count()
			srv.Restart(t, 3)
			c.waitFor(t, n, "reconnected", func(map[string]ferry.Sample) bool { return d.DeviceStatus()[0].Connected })
			srv.Set("A", 10.0, ts.Add(time.Second))
			srv.Set("B", 20.0, ts.Add(time.Second))
			check(n, ferry.BadQuality("BadNodeIdUnknown"), map[string]float64{"a": 10, "b": 20})

			// Each node problem is logged once, although it was seen in
			// many polls or notifications and in two sessions.
			for name := range want {
				if name == "no_namespace_index" {
					continue // plain "Bad" is a value quality, not a node problem: not logged
				}
				if n := logs.count("point cannot be read; the other points are not affected", "point", name); n != 1 {
					t.Errorf("%s: logged %d times, want once", name, n)
				}
			}
			if n := logs.count("point cannot be read; the other points are not affected", "point", "c"); n != 1 {
				t.Errorf("c: logged %d times, want once", n)
			}
			if n := logs.count("point cannot be read; the other points are not affected", "point", "a"); n != 0 {
				t.Errorf("a: logged %d times", n)
			}
		})
	}
}

// TestServerRestart: while the server is gone every point is Bad with
// reason "disconnected"; when it is back on the same address values flow
// again without restarting the driver.
func TestServerRestart(t *testing.T) {
	for _, mode := range []string{"poll", "subscribe"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, serverOpts{none: true})
			srv.add(sourceTime, "A", 1.0, "B", int32(2))
			m := NewMetrics(nil)
			logs := newLogCapture()
			d, err := New([]Device{testDevice("plc", srv.Endpoint(), func(c *Config) { insecure(c); c.Mode = mode },
				Point{Name: "a", Node: srv.Node("A")}, Point{Name: "b", Node: srv.Node("B")})},
				Options{DataDir: t.TempDir(), Metrics: m, Logger: slog.New(logs)})
			if err != nil {
				t.Fatal(err)
			}
			c := newCollector()
			runDriver(t, d, c)
			good := func(m map[string]ferry.Sample) bool {
				a, okA := m["a"]
				b, okB := m["b"]
				return okA && okB && a.Quality.IsGood() && b.Quality.IsGood()
			}
			c.waitFor(t, 0, "good values", good)

			srv.Stop()
			n := c.count()
			c.waitFor(t, n, "disconnected", func(m map[string]ferry.Sample) bool {
				return m["a"].Quality == ferry.BadQuality("disconnected") && m["b"].Quality == ferry.BadQuality("disconnected")
			})
			if d.DeviceStatus()[0].Connected {
				t.Error("status still connected")
			}
			// Bad samples keep coming at the interval while it is gone.
			n = c.count()
			c.waitFor(t, n, "repeated bad samples", func(m map[string]ferry.Sample) bool {
				return m["a"].Quality == ferry.BadQuality("disconnected")
			})

			srv.Restart(t, 0)
			n = c.count()
			srv.Set("A", 5.0, sourceTime.Add(time.Minute))
			got := c.waitFor(t, n, "values after the restart", func(m map[string]ferry.Sample) bool {
				return good(m) && m["a"].Value.Equal(ferry.FloatValue(5))
			})
			if !got["a"].Time.Equal(sourceTime.Add(time.Minute)) {
				t.Errorf("time %v", got["a"].Time)
			}
			if !d.DeviceStatus()[0].Connected {
				t.Error("status not connected")
			}
			if r := testutil.ToFloat64(m.reconnects.WithLabelValues("plc")); r != 1 {
				t.Errorf("reconnects = %v, want 1", r)
			}
			// One outage, logged once each way, however many retries failed.
			for _, msg := range []string{"connected", "connection lost", "connection back"} {
				if n := logs.count(msg, "", ""); n != 1 {
					t.Errorf("%q logged %d times, want once", msg, n)
				}
			}
		})
	}
}

// TestConnectionCut: a connection closed under the session (a network
// failure, a crashed server process) is noticed at once, the points turn
// Bad "disconnected", and the subscription is created again.
func TestConnectionCut(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverOpts{none: true})
	srv.add(sourceTime, "A", 1.0)
	d := newDriver(t, testDevice("plc", srv.Endpoint(), func(c *Config) {
		insecure(c)
		c.Timeouts.Request = time.Minute // the cut must be seen without a timeout
		c.Timeouts.Keepalive = time.Minute
	}, Point{Name: "a", Node: srv.Node("A")}))
	c := newCollector()
	runDriver(t, d, c)
	c.waitFor(t, 0, "a good value", func(m map[string]ferry.Sample) bool { s, ok := m["a"]; return ok && s.Quality.IsGood() })
	for i := 1; i <= 2; i++ {
		n := c.count()
		srv.Cut()
		c.waitFor(t, n, "disconnected", func(m map[string]ferry.Sample) bool { return m["a"].Quality == ferry.BadQuality("disconnected") })
		c.waitFor(t, n, "connected again", func(map[string]ferry.Sample) bool { return d.DeviceStatus()[0].Connected })
		n = c.count()
		v := float64(10 * i)
		srv.Set("A", v, sourceTime.Add(time.Duration(i)*time.Second))
		c.waitFor(t, n, "values again", func(m map[string]ferry.Sample) bool {
			s, ok := m["a"]
			return ok && s.Quality.IsGood() && s.Value.Equal(ferry.FloatValue(v))
		})
	}
}

// TestBatching: a poll of more nodes than the server's MaxNodesPerRead
// (32 on the gopcua server) is split into several Read requests, and
// monitored items are created in batches; an unknown node in the middle
// of a batch harms no other point.
func TestBatching(t *testing.T) {
	for _, mode := range []string{"poll", "subscribe"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			srv := sharedServer(t, false)
			var points []Point
			for i := range 100 {
				name := fmt.Sprintf("%s.N%03d", mode, i)
				if i != 50 {
					srv.add(sourceTime, name, float64(i))
				}
				points = append(points, Point{Name: fmt.Sprintf("pN%03d", i), Node: srv.Node(name)})
			}
			m := NewMetrics(nil)
			d, err := New([]Device{testDevice("plc", srv.Endpoint(), func(c *Config) { insecure(c); c.Mode = mode }, points...)},
				Options{DataDir: t.TempDir(), Metrics: m})
			if err != nil {
				t.Fatal(err)
			}
			d.devs[0].itemLimit = 7 // as if the server had refused larger batches
			c := newCollector()
			runDriver(t, d, c)
			c.waitFor(t, 0, "100 points", func(s map[string]ferry.Sample) bool {
				if len(s) != 100 {
					return false
				}
				for i := range 100 {
					p := s[fmt.Sprintf("pN%03d", i)]
					if i == 50 {
						if p.Quality != ferry.BadQuality("BadNodeIdUnknown") {
							return false
						}
					} else if !p.Quality.IsGood() || !p.Value.Equal(ferry.FloatValue(float64(i))) {
						return false
					}
				}
				return true
			})
			if mode == "poll" {
				reads := testutil.ToFloat64(m.reads.WithLabelValues("plc"))
				nodes := testutil.ToFloat64(m.readNodes.WithLabelValues("plc"))
				if reads < 4 || nodes/reads > 32 {
					t.Errorf("%v reads for %v nodes: requests larger than MaxNodesPerRead 32", reads, nodes)
				}
				if nodes/reads < 25 {
					t.Errorf("%v reads for %v nodes: want 4 requests per poll of 100 nodes", reads, nodes)
				}
			} else if got := testutil.ToFloat64(m.items.WithLabelValues("plc")); got != 100 {
				t.Errorf("monitored items %v, want 100", got)
			}
		})
	}
}

// TestUnreachableCounted: the Bad scans of a server that cannot be reached
// are scans emitted like any other: ferry_device_scans_total counts each,
// and ferry_device_points shows the points bad.
func TestUnreachableCounted(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	devs := devstat.NewMetrics(reg)
	// Bound, not listening: refused for as long as the test runs.
	d, err := New([]Device{testDevice("plc", "opc.tcp://"+testpeer.Reserve(t).Addr(), insecure,
		Point{Name: "a", Node: "ns=1;s=A"}, Point{Name: "b", Node: "ns=1;s=B"})},
		Options{DataDir: t.TempDir(), Gateway: "gw-test", Devices: devs})
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	runDriver(t, d, c)
	c.waitFor(t, 0, "Bad samples", func(m map[string]ferry.Sample) bool {
		return c.count() >= 3 && m["a"].Quality.Status == ferry.Bad
	})
	value := func(name string, labels ...string) float64 {
		kv := make([]string, 0, len(labels)/2)
		for i := 0; i+1 < len(labels); i += 2 {
			kv = append(kv, labels[i]+"="+labels[i+1])
		}
		if v, ok := testpeer.Gather(t, reg).Find(name, kv...); ok {
			return v
		}
		return -1
	}
	// Counted before emitted: the count may run one or two ahead.
	n := c.count()
	if scans := value("ferry_device_scans_total", "device", "plc"); scans < float64(n) || scans > float64(n)+2 {
		t.Errorf("ferry_device_scans_total = %v, %d scans emitted", scans, n)
	}
	if bad := value("ferry_device_points", "device", "plc", "quality", "bad"); bad != 2 {
		t.Errorf("ferry_device_points{quality=bad} = %v, want 2", bad)
	}
}

// TestSubscriptionDeletedByServer: a server that drops the subscription
// (its lifetime ran out, an operator removed it) while the session lives
// on: the driver notices and subscribes again, and changes arrive.
func TestSubscriptionDeletedByServer(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverOpts{none: true})
	srv.add(sourceTime, "A", 1.0)
	d := newDriver(t, testDevice("plc", srv.Endpoint(), insecure, Point{Name: "a", Node: srv.Node("A")}))
	c := newCollector()
	runDriver(t, d, c)
	c.waitFor(t, 0, "a good value", func(m map[string]ferry.Sample) bool { s, ok := m["a"]; return ok && s.Quality.IsGood() })
	subs := srv.Server().SubscriptionService
	subs.Mu.Lock()
	var ids []uint32
	for id := range subs.Subs {
		ids = append(ids, id)
	}
	subs.Mu.Unlock()
	for _, id := range ids {
		subs.DeleteSubscription(id)
	}
	n := c.count()
	srv.Set("A", 2.0, sourceTime.Add(time.Second))
	c.waitFor(t, n, "the new value", func(m map[string]ferry.Sample) bool {
		s, ok := m["a"]
		return ok && s.Value.Equal(ferry.FloatValue(2))
	})
	if r := testutil.ToFloat64(d.opts.Metrics.reconnects.WithLabelValues("plc")); r != 1 {
		t.Errorf("reconnects = %v, want 1 (the silent subscription ends its session)", r)
	}
}

// TestQuietSubscriptionKept: values that do not change send nothing, and
// the probe that watches for a dropped subscription must not take that
// for one: no reconnect over several keep-alive periods.
func TestQuietSubscriptionKept(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverOpts{none: true})
	// Reads of A: the quiet probe reads every checked point once per
	// keep-alive period (1 s), so reads of A count the periods gone by.
	var readsA atomic.Int64
	srv.AddFunc("A", func() *ua.DataValue { readsA.Add(1); return testpeer.DataValue(1.0, sourceTime) })
	srv.add(sourceTime, "B", int32(2))
	m := NewMetrics(nil)
	d, err := New([]Device{testDevice("plc", srv.Endpoint(), insecure,
		Point{Name: "a", Node: srv.Node("A")}, Point{Name: "b", Node: srv.Node("B")})},
		Options{DataDir: t.TempDir(), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	runDriver(t, d, c)
	c.waitFor(t, 0, "good values", func(m map[string]ferry.Sample) bool { return m["a"].Quality.IsGood() && m["b"].Quality.IsGood() })
	// Four quiet probes: a probe that took the quiet for a dropped
	// subscription would have ended the session at the second.
	start, n := time.Now(), readsA.Load()
	ftest.WaitFor(t, 30*time.Second, "four quiet probes", func() bool { return readsA.Load() >= n+4 })
	t.Logf("four probes in %v", time.Since(start))
	if r := testutil.ToFloat64(m.reconnects.WithLabelValues("plc")); r != 0 {
		t.Fatalf("reconnects = %v over a quiet subscription, want 0", r)
	}
}
