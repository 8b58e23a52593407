package mqtt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/label"
	"github.com/ferry-edge/ferry/internal/setting"
	"github.com/ferry-edge/ferry/internal/testpeer"
	ftest "github.com/ferry-edge/ferry/internal/testutil"
)

// TestWildcardRouting checks topic → device routing: captures name the
// device, the most specific topic wins, equally specific topics all get
// the message, # matches its parent level, and an empty capture is refused.
func TestWildcardRouting(t *testing.T) {
	b := testpeer.Broker(t)
	store := newCommitStore(t)
	opts := testOptions(nil)
	devs := []Device{
		jsonDevice("lines", b.URL(), "plant/{line}/{device}/telemetry", Point{Name: "temp", Path: "temp"}),
		jsonDevice("press3", b.URL(), "plant/l1/press3/telemetry", Point{Name: "temp", Path: "temp"}, Point{Name: "rpm", Path: "rpm"}),
		jsonDevice("fan_a", b.URL(), "shared/t", Point{Name: "a", Path: "a"}),
		jsonDevice("fan_b", b.URL(), "shared/t", Point{Name: "b", Path: "b"}),
		jsonDevice("tree", b.URL(), "h/#", Point{Name: "v", Path: "v"}),
	}
	site := jsonDevice("sites", b.URL(), "site/{line}/+/{machine}/#", Point{Name: "v", Path: "v"})
	site.Config.Device = "{line}-{machine}"
	devs = append(devs, site)
	r := start(t, devs, opts, store.emit)
	r.waitSubscribed(t, b, 5) // shared/t is one filter

	tests := []struct {
		topic   string
		devices []string // the scans' devices, sorted
	}{
		{"plant/l2/m7/telemetry", []string{"m7"}},
		{"plant/l1/press3/telemetry", []string{"press3"}}, // not also "lines"
		{"plant/l1/press4/telemetry", []string{"press4"}},
		{"shared/t", []string{"fan_a", "fan_b"}},
		{"h", []string{"tree"}},
		{"h/a/b", []string{"tree"}},
		{"site/A/x/M 9/deep/er", []string{"A-M_9"}},
		{"site/B/x/M2/z", []string{"B-M2"}},
		{"plant/l1//telemetry", nil},            // empty device level: no device name
		{"plant//m7/telemetry", []string{"m7"}}, // the empty line is not in the name
		{"plant/l2/m.7/telemetry", []string{"m_7"}},
	}
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			n := len(store.committed())
			badTopics := testutil.ToFloat64(opts.Metrics.payloadErrs.WithLabelValues("lines", label.Code(reasonBadTopic)))
			b.Publish(t, tt.topic, []byte(`{"temp":1,"rpm":2,"a":3,"b":4,"v":5}`), 1, false)
			if tt.devices == nil {
				waitFor(t, "bad topic counted", 5*time.Second, func() bool {
					return testutil.ToFloat64(opts.Metrics.payloadErrs.WithLabelValues("lines", label.Code(reasonBadTopic))) == badTopics+1
				})
				waitFor(t, "acknowledged", 5*time.Second, func() bool { return b.Inflight(r.d.ClientID()) == 0 })
				if got := len(store.committed()); got != n {
					t.Fatalf("%d scans for a topic naming no device", got-n)
				}
				return
			}
			waitFor(t, "scans", 5*time.Second, func() bool { return len(store.committed()) >= n+len(tt.devices) })
			waitFor(t, "acknowledged", 5*time.Second, func() bool { return b.Inflight(r.d.ClientID()) == 0 })
			var got []string
			keys := map[string]bool{}
			for _, s := range store.committed()[n:] {
				got = append(got, s.Device)
				keys[s.Key] = true
				for _, x := range s.Samples {
					if x.Device != s.Device || !x.Quality.IsGood() {
						t.Errorf("sample %+v in scan of %s", x, s.Device)
					}
				}
			}
			sort.Strings(got)
			if strings.Join(got, ",") != strings.Join(tt.devices, ",") {
				t.Fatalf("devices %v, want %v", got, tt.devices)
			}
			if len(keys) != len(got) {
				t.Errorf("scans of one message share a key: %v", keys)
			}
		})
	}
	// Template devices are reported under their configured entry.
	if st := r.d.DeviceStatus(); len(st) != len(devs) || st[0].Device != "lines" || !st[0].Connected {
		t.Errorf("status %+v", st)
	}
}

// TestAckOnlyAfterCommit shows that a QoS 1 or 2 message stays
// unacknowledged at the broker until its scan is committed.
func TestAckOnlyAfterCommit(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			b := testpeer.Broker(t)
			store := newCommitStore(t)
			store.setHold(true)
			reg := prometheus.NewRegistry()
			opts := testOptions(reg)
			dev := jsonDevice("env", b.URL(), "s/env", Point{Name: "temp", Path: "temp"})
			dev.Config.QoS = qos
			r := start(t, []Device{dev}, opts, store.emit)
			r.waitSubscribed(t, b, 1)
			id := r.d.ClientID()

			b.Publish(t, "s/env", []byte(`{"temp":20}`), qos, false)
			b.Publish(t, "s/env", []byte(`{"temp":21}`), qos, false)
			waitFor(t, "scans held", 5*time.Second, func() bool { return store.heldCount() == 2 })
			// Nothing marks the absence of an early ack: watch the broker
			// over a window.
			never(t, 50*time.Millisecond, "an ack reaching the broker before the commit", func() bool { return b.Inflight(id) != 2 })
			if got := testutil.ToFloat64(opts.Metrics.acksPending.WithLabelValues(id)); got != 2 {
				t.Errorf("acks_pending %v, want 2", got)
			}
			store.setHold(false)
			store.commitHeld()
			waitFor(t, "acknowledged", 5*time.Second, func() bool { return b.Inflight(id) == 0 })
			if got := testutil.ToFloat64(opts.Metrics.acks.WithLabelValues(id, "sent")); got != 2 {
				t.Errorf("acks sent %v, want 2", got)
			}
			waitFor(t, "acks_pending back to 0", time.Second, func() bool {
				return testutil.ToFloat64(opts.Metrics.acksPending.WithLabelValues(id)) == 0
			})
		})
	}
}

// TestQoS1StopBeforeCommit: ferry stops after receiving a message but
// before its scan is committed; after the restart the broker redelivers it
// and it is stored exactly once.
func TestQoS1StopBeforeCommit(t *testing.T) {
	b := testpeer.Broker(t)
	store := newCommitStore(t)
	dev := jsonDevice("env", b.URL(), "s/env", Point{Name: "temp", Path: "temp"})
	dev.Config.ClientID = "ferry-test-stop"

	store.setHold(true)
	r1 := start(t, []Device{dev}, testOptions(nil), store.emit)
	r1.waitSubscribed(t, b, 1)
	b.Publish(t, "s/env", []byte(`{"temp":20.5}`), 1, false)
	waitFor(t, "scan received", 5*time.Second, func() bool { return store.heldCount() == 1 })
	r1.stop(t)
	store.release(ferry.ErrClosed) // the buffer closes: never committed
	if got := b.Inflight(dev.Config.ClientID); got != 1 {
		t.Fatalf("broker holds %d messages for the stopped client, want 1", got)
	}

	store.setHold(false)
	opts := testOptions(nil)
	r2 := start(t, []Device{dev}, opts, store.emit)
	waitFor(t, "redelivery stored", 5*time.Second, func() bool { return len(store.committed()) == 1 })
	waitFor(t, "acknowledged", 5*time.Second, func() bool { return b.Inflight(dev.Config.ClientID) == 0 })
	sc := store.committed()[0]
	if !sc.Redelivered || sc.Samples[0].Value.Float64() != 20.5 {
		t.Errorf("redelivered scan %+v", sc)
	}
	if got := testutil.ToFloat64(opts.Metrics.redeliveries.WithLabelValues("env")); got != 1 {
		t.Errorf("redeliveries %v, want 1", got)
	}
	// Nothing more comes: the broker resends a session's unacknowledged
	// messages as the client connects, before a message published after
	// it subscribed, so once that marker is stored a second redelivery
	// would have been too.
	r2.stop(t)
	r3 := start(t, []Device{dev}, testOptions(nil), store.emit)
	r3.waitSubscribed(t, b, 1)
	b.Publish(t, "s/env", []byte(`{"temp":99}`), 1, false)
	waitFor(t, "marker stored", 5*time.Second, func() bool { return len(store.samples("env")) >= 2 })
	if got := len(store.samples("env")); got != 2 {
		t.Fatalf("stored %d samples, want the redelivered one once and the marker", got)
	}
}

// TestQoS1CommitAfterStop: the scan is committed after ferry stopped, so
// the acknowledgement never reaches the broker; the redelivery is dropped
// as a duplicate by its key, and the sample is stored once.
func TestQoS1CommitAfterStop(t *testing.T) {
	b := testpeer.Broker(t)
	store := newCommitStore(t)
	dev := jsonDevice("env", b.URL(), "s/env", Point{Name: "temp", Path: "temp"})
	dev.Config.ClientID = "ferry-test-late"

	store.setHold(true)
	opts1 := testOptions(nil)
	r1 := start(t, []Device{dev}, opts1, store.emit)
	r1.waitSubscribed(t, b, 1)
	b.Publish(t, "s/env", []byte(`{"temp":7}`), 1, false)
	waitFor(t, "scan received", 5*time.Second, func() bool { return store.heldCount() == 1 })
	r1.stop(t)
	store.setHold(false)
	store.commitHeld() // committed, but the connection is gone
	if got := testutil.ToFloat64(opts1.Metrics.acks.WithLabelValues(dev.Config.ClientID, "lost")); got != 1 {
		t.Errorf("acks lost %v, want 1", got)
	}

	r2 := start(t, []Device{dev}, testOptions(nil), store.emit)
	r2.waitSubscribed(t, b, 1)
	waitFor(t, "redelivery acknowledged", 5*time.Second, func() bool { return b.Inflight(dev.Config.ClientID) == 0 })
	store.mu.Lock()
	dedup := store.dedup
	store.mu.Unlock()
	if got := len(store.samples("env")); got != 1 || dedup != 1 {
		t.Fatalf("stored %d times with %d duplicates dropped, want 1 and 1", got, dedup)
	}
}

// TestDroppedScanRedelivered: a scan the pipeline drops is not
// acknowledged; the driver reconnects and the broker sends it again.
func TestDroppedScanRedelivered(t *testing.T) {
	b := testpeer.Broker(t)
	store := newCommitStore(t)
	opts := testOptions(nil)
	r := start(t, []Device{jsonDevice("env", b.URL(), "s/env", Point{Name: "temp", Path: "temp"})}, opts, store.emit)
	r.waitSubscribed(t, b, 1)
	id := r.d.ClientID()

	store.mu.Lock()
	store.drop = 1
	store.mu.Unlock()
	b.Publish(t, "s/env", []byte(`{"temp":1}`), 1, false)
	b.Publish(t, "s/env", []byte(`{"temp":2}`), 1, false)
	waitFor(t, "both stored", 10*time.Second, func() bool { return len(store.samples("env")) == 2 })
	waitFor(t, "all acknowledged", 5*time.Second, func() bool { return b.Inflight(id) == 0 })
	got := map[float64]int{}
	for _, s := range store.samples("env") {
		got[s.Value.Float64()]++
	}
	if got[1] != 1 || got[2] != 1 {
		t.Errorf("stored %v, want each value once", got)
	}
	if n := testutil.ToFloat64(opts.Metrics.resyncs.WithLabelValues(id)); n < 1 {
		t.Errorf("resyncs %v, want >= 1", n)
	}
	if n := testutil.ToFloat64(opts.Metrics.acks.WithLabelValues(id, "withheld")); n != 1 {
		t.Errorf("withheld %v, want 1", n)
	}
}

// TestBrokerRestart: the broker restarts on the same listener with its
// sessions on disk; messages published while ferry was away are delivered
// once it reconnects. Meanwhile the devices were reported lost with Bad
// samples.
func TestBrokerRestart(t *testing.T) {
	dir := t.TempDir()
	storePath := filepath.Join(dir, "broker.db")
	b1 := testpeer.Broker(t, testpeer.BrokerStore(storePath))
	b2 := b1 // the same listener: after Stop, StartHeld, Listen
	store := newCommitStore(t)
	dev := jsonDevice("env", b1.URL(), "s/env", Point{Name: "temp", Path: "temp"})
	r := start(t, []Device{dev}, testOptions(nil), store.emit)
	r.waitSubscribed(t, b1, 1)
	id := r.d.ClientID()
	b1.Publish(t, "s/env", []byte(`{"temp":1}`), 1, false)
	waitFor(t, "first message", 5*time.Second, func() bool { return len(store.samples("env")) == 1 })
	waitFor(t, "first acknowledged", 5*time.Second, func() bool { return b1.Inflight(id) == 0 })

	b1.Stop()
	waitFor(t, "Bad sample on loss", 5*time.Second, func() bool {
		s := store.samples("env")
		return len(s) == 2 && s[1].Quality.Status == ferry.Bad
	})
	if r.d.devices[0].stat.IsConnected() {
		t.Error("device connected while the broker is down")
	}

	// The broker comes back with its sessions but takes no connection
	// yet, and gets two messages for ferry's session while ferry cannot
	// connect.
	b2.StartHeld(t)
	b2.Publish(t, "s/env", []byte(`{"temp":2}`), 1, false)
	b2.Publish(t, "s/env", []byte(`{"temp":3}`), 1, false)
	if got := b2.Inflight(id); got != 2 {
		t.Fatalf("restarted broker holds %d messages for ferry's session, want 2", got)
	}
	b2.Listen(t)
	waitFor(t, "queued messages", 10*time.Second, func() bool { return len(store.samples("env")) == 4 })
	waitFor(t, "acknowledged", 5*time.Second, func() bool { return b2.Inflight(id) == 0 })
	// mochi resends a session's messages in no particular order within a
	// second; what matters is that both arrive.
	s := store.samples("env")
	if got := s[2].Value.Float64() + s[3].Value.Float64(); got != 5 || !s[2].Quality.IsGood() || !s[3].Quality.IsGood() {
		t.Errorf("after restart: %v, %v", s[2], s[3])
	}
	if !r.d.devices[0].stat.IsConnected() {
		t.Error("device not connected after the broker came back")
	}
}

// TestConnectRefused: with no broker, devices get one Bad sample each
// and a status with the reason; when the broker appears they connect.
func TestConnectRefused(t *testing.T) {
	// Bound but not listening: refused, and no one else can take the
	// port before the broker appears there.
	reserved := testpeer.Reserve(t)
	addr := reserved.Addr()
	store := newCommitStore(t)
	dev := jsonDevice("env", "tcp://"+addr, "s/env", Point{Name: "temp", Path: "temp"}, Point{Name: "hum", Path: "hum"})
	reg := prometheus.NewRegistry()
	r := start(t, []Device{dev}, testOptions(reg), store.emit)
	waitFor(t, "Bad samples", 5*time.Second, func() bool { return len(store.samples("env")) == 2 })
	// Several retries: still one Bad sample per point.
	waitFor(t, "three refused attempts", 5*time.Second, func() bool {
		return r.d.DeviceStatus()[0].Errors[ferry.ReasonConnRefused] >= 3
	})
	for _, s := range store.samples("env") {
		if s.Quality != ferry.BadQuality(ferry.ReasonConnRefused) {
			t.Errorf("sample %+v", s)
		}
	}
	if got := len(store.samples("env")); got != 2 {
		t.Errorf("%d Bad samples, want 2 (one per point, once per outage)", got)
	}
	// The Bad scan is a scan emitted: counted, and the points show bad.
	if got := testpeer.Gather(t, reg).Sum("ferry_device_scans_total", "device=env"); got != 1 {
		t.Errorf("ferry_device_scans_total{device=env} = %v, want 1", got)
	}
	if got := testpeer.Gather(t, reg).Sum("ferry_device_points", "device=env", "quality=bad"); got != 2 {
		t.Errorf("ferry_device_points{device=env,quality=bad} = %v, want 2", got)
	}
	st := r.d.DeviceStatus()[0]
	if st.Connected || st.Errors[ferry.ReasonConnRefused] == 0 || !strings.Contains(st.LastError, addr) {
		t.Errorf("status %+v", st)
	}

	b := testpeer.Broker(t, testpeer.BrokerListener(reserved.Listen(t)))
	r.waitSubscribed(t, b, 1)
	b.Publish(t, "s/env", []byte(`{"temp":1,"hum":2}`), 1, false)
	waitFor(t, "message", 5*time.Second, func() bool { return len(store.samples("env")) == 4 })
}

// TestUnmatchedFromOldSession: a filter left in the persistent session by
// an earlier configuration still delivers; those messages are counted and
// acknowledged, not redelivered forever.
func TestUnmatchedFromOldSession(t *testing.T) {
	b := testpeer.Broker(t)
	store := newCommitStore(t)
	old := jsonDevice("env", b.URL(), "old/t", Point{Name: "v", Path: "v"})
	old.Config.ClientID = "ferry-test-old"
	r1 := start(t, []Device{old}, testOptions(nil), store.emit)
	r1.waitSubscribed(t, b, 1)
	r1.stop(t)

	cur := old
	cur.Config.Topic = "new/t"
	opts := testOptions(nil)
	r2 := start(t, []Device{cur}, opts, store.emit)
	r2.waitSubscribed(t, b, 2)
	b.Publish(t, "old/t", []byte(`{"v":1}`), 1, false)
	waitFor(t, "unmatched counted", 5*time.Second, func() bool {
		return testutil.ToFloat64(opts.Metrics.unmatched.WithLabelValues("ferry-test-old")) == 1
	})
	waitFor(t, "acknowledged", 5*time.Second, func() bool { return b.Inflight("ferry-test-old") == 0 })
	if n := len(store.committed()); n != 0 {
		t.Errorf("%d scans from an unmatched topic", n)
	}
}

// TestRetainedIsMarkedAsRepeat: a retained message is sent again at every
// subscription; its scan is keyed and marked as a possible repeat so that
// the buffer drops it when already stored.
func TestRetainedIsMarkedAsRepeat(t *testing.T) {
	b := testpeer.Broker(t)
	b.Publish(t, "r/t", []byte(`{"v":1}`), 0, true)
	store := newCommitStore(t)
	dev := jsonDevice("env", b.URL(), "r/t", Point{Name: "v", Path: "v"})
	dev.Config.QoS = 0
	dev.Config.ClientID = "ferry-test-retained"
	r1 := start(t, []Device{dev}, testOptions(nil), store.emit)
	waitFor(t, "retained", 5*time.Second, func() bool { return len(store.committed()) == 1 })
	r1.stop(t)
	start(t, []Device{dev}, testOptions(nil), store.emit)
	waitFor(t, "retained again, deduplicated", 5*time.Second, func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		return store.dedup == 1
	})
	if sc := store.committed()[0]; !sc.Redelivered || sc.Key == "" {
		t.Errorf("retained scan key %q redelivered %v", sc.Key, sc.Redelivered)
	}
	if n := len(store.committed()); n != 1 {
		t.Errorf("retained value stored %d times", n)
	}
}

// TestRunStopsPromptly: Run returns soon after ctx ends, even while
// connecting to a broker that does not answer.
func TestRunStopsPromptly(t *testing.T) {
	// A listener that accepts and never speaks MQTT.
	b := testpeer.Broker(t)
	dev := jsonDevice("env", b.URL(), "s/env", Point{Name: "v", Path: "v"})
	d, err := New([]Device{dev}, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, func(s ferry.Scan) { s.Finish(nil) }) }()
	waitFor(t, "subscribed", 5*time.Second, func() bool { return b.Subscriptions(d.ClientID()) == 1 })
	if err := d.Run(ctx, nil); err == nil {
		t.Error("a second Run of the same driver did not fail")
	}
	ftest.StopRun(t, cancel, done, 5*time.Second)

	// Connecting to a silent listener: ctx ends the attempt.
	dialed := make(chan struct{}, 1)
	silent := ftest.ServeTCP(t, func(c net.Conn) {
		select {
		case dialed <- struct{}{}:
		default:
		}
		_, _ = io.Copy(io.Discard, c)
	})
	dev2 := jsonDevice("env2", "tcp://"+silent, "s/env", Point{Name: "v", Path: "v"})
	dev2.Config.ConnectTimeout = time.Minute
	d2, err := New([]Device{dev2}, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { done <- d2.Run(ctx2, func(s ferry.Scan) {}) }()
	select {
	case <-dialed: // the attempt is under way
	case <-time.After(5 * time.Second):
		t.Fatal("no connection attempt")
	}
	cancel2()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return while connecting")
	}
}

func TestNewErrors(t *testing.T) {
	a := jsonDevice("a", "tcp://h:1883", "t/a", Point{Name: "v", Path: "v"})
	otherBroker := jsonDevice("b", "tcp://other:1883", "t/b", Point{Name: "v", Path: "v"})
	otherKeepalive := jsonDevice("c", "tcp://h:1883", "t/c", Point{Name: "v", Path: "v"})
	otherKeepalive.Config.KeepAlive = time.Minute
	invalid := jsonDevice("d", "tcp://h:1883", "", Point{Name: "v", Path: "v"})
	tests := []struct {
		name    string
		devs    []Device
		gateway string
		wantMsg string
	}{
		{"none", nil, "gw", "no devices"},
		{"other broker", []Device{a, otherBroker}, "gw", "differs"},
		{"other keepalive", []Device{a, otherKeepalive}, "gw", "mqtt.keepalive"},
		{"invalid", []Device{invalid}, "gw", "mqtt.topic"},
		{"no client id", []Device{a}, "", "client_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions(nil)
			opts.Gateway = tt.gateway
			_, err := New(tt.devs, opts)
			if !errors.Is(err, ferry.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %v, want ErrInvalidConfig mentioning %q", err, tt.wantMsg)
			}
		})
	}
	d, err := New([]Device{a}, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	if id := d.ClientID(); id != DefaultClientID("test", &a.Config) || !strings.HasPrefix(id, "ferry-test-") {
		t.Errorf("client id %q", id)
	}
}

func TestValidate(t *testing.T) {
	base := func() Device { return jsonDevice("d", "tcp://h:1883", "t", Point{Name: "v", Path: "v"}) }
	tests := []struct {
		name     string
		mutate   func(d *Device)
		wantPath string // "" = valid
	}{
		{"valid", func(d *Device) {}, ""},
		{"no broker", func(d *Device) { d.Config.Broker = "" }, "mqtt.broker"},
		{"bad scheme", func(d *Device) { d.Config.Broker = "http://h:1883" }, "mqtt.broker"},
		{"credentials in URL", func(d *Device) { d.Config.Broker = "tcp://u:p@h:1883" }, "mqtt.broker"},
		{"no port", func(d *Device) { d.Config.Broker = "tcp://h" }, "mqtt.broker"},
		{"ws without port", func(d *Device) { d.Config.Broker = "ws://h/mqtt" }, ""},
		{"qos 3", func(d *Device) { d.Config.QoS = 3 }, "mqtt.qos"},
		{"client id with #", func(d *Device) { d.Config.ClientID = "a#" }, "mqtt.client_id"},
		{"format", func(d *Device) { d.Config.Format = "xml" }, "mqtt.format"},
		{"no topic", func(d *Device) { d.Config.Topic = "" }, "mqtt.topic"},
		{"# not last", func(d *Device) { d.Config.Topic = "a/#/b" }, "mqtt.topic"},
		{"partial +", func(d *Device) { d.Config.Topic = "a/b+/c" }, "mqtt.topic"},
		{"partial capture", func(d *Device) { d.Config.Topic = "a/x{b}/c" }, "mqtt.topic"},
		{"capture twice", func(d *Device) { d.Config.Topic = "{a}/{a}" }, "mqtt.topic"},
		{"template unknown capture", func(d *Device) { d.Config.Topic = "p/{line}"; d.Config.Device = "{machine}" }, "mqtt.device"},
		{"template no capture", func(d *Device) { d.Config.Topic = "p/{line}"; d.Config.Device = "fixed" }, "mqtt.device"},
		{"template bad text", func(d *Device) { d.Config.Topic = "p/{line}"; d.Config.Device = "{line}.x" }, "mqtt.device"},
		{"template ok", func(d *Device) { d.Config.Topic = "p/{line}/{m}"; d.Config.Device = "{line}-{m}_x" }, ""},
		{"tls on tcp", func(d *Device) { d.Config.TLS.CA = "/ca.pem" }, "mqtt.tls"},
		{"cert without key", func(d *Device) { d.Config.Broker = "ssl://h:8883"; d.Config.TLS.Cert = "/c.pem" }, "mqtt.tls"},
		{"keepalive", func(d *Device) { d.Config.KeepAlive = time.Millisecond }, "mqtt.keepalive"},
		{"connect timeout", func(d *Device) { d.Config.ConnectTimeout = 0 }, "mqtt.connect_timeout"},
		{"time path", func(d *Device) { d.Config.Time.Path = "a..b" }, "mqtt.time.path"},
		{"time layout", func(d *Device) { d.Config.Time = Time{Path: "ts", Layout: "unix"} }, "mqtt.time.layout"},
		{"no points", func(d *Device) { d.Points = nil }, "points"},
		{"no path", func(d *Device) { d.Points[0].Path = "" }, "points[0].path"},
		{"bad path", func(d *Device) { d.Points[0].Path = "a[x]" }, "points[0].path"},
		{"bad type", func(d *Device) { d.Points[0].Type = "float32" }, "points[0].type"},
		{"metric on json", func(d *Device) { d.Points[0].Metric = "m" }, "points[0].metric"},
		{"value with path", func(d *Device) { d.Config.Format = FormatValue }, "points[0].path"},
		{"value two points", func(d *Device) {
			d.Config.Format = FormatValue
			d.Points = []Point{{Name: "a"}, {Name: "b"}}
		}, "points"},
		{"sparkplug", func(d *Device) {
			d.Config.Format, d.Config.Topic = FormatSparkplug, ""
			d.Config.Sparkplug = Sparkplug{GroupID: "g", EdgeNode: "e"}
			d.Points = []Point{{Name: "a", Metric: "A/b"}}
		}, ""},
		{"sparkplug topic", func(d *Device) {
			d.Config.Format = FormatSparkplug
			d.Config.Sparkplug = Sparkplug{GroupID: "g", EdgeNode: "e"}
			d.Points = []Point{{Name: "a", Metric: "A"}}
		}, "mqtt.topic"},
		{"sparkplug no node", func(d *Device) {
			d.Config.Format, d.Config.Topic = FormatSparkplug, ""
			d.Config.Sparkplug = Sparkplug{GroupID: "g"}
			d.Points = []Point{{Name: "a", Metric: "A"}}
		}, "mqtt.sparkplug.edge_node"},
		{"sparkplug wildcard", func(d *Device) {
			d.Config.Format, d.Config.Topic = FormatSparkplug, ""
			d.Config.Sparkplug = Sparkplug{GroupID: "g", EdgeNode: "+"}
			d.Points = []Point{{Name: "a", Metric: "A"}}
		}, "mqtt.sparkplug.edge_node"},
		{"sparkplug no metric", func(d *Device) {
			d.Config.Format, d.Config.Topic = FormatSparkplug, ""
			d.Config.Sparkplug = Sparkplug{GroupID: "g", EdgeNode: "e"}
		}, "points[0].metric"},
		{"sparkplug on json", func(d *Device) { d.Config.Sparkplug.GroupID = "g" }, "mqtt.sparkplug"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := base()
			tt.mutate(&d)
			err := d.Validate()
			if tt.wantPath == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var paths []string
			for _, fe := range setting.Flatten(err) {
				paths = append(paths, fe.Path)
				if fe.Path == tt.wantPath {
					return
				}
			}
			t.Fatalf("errors at %v (%v), want one at %s", paths, err, tt.wantPath)
		})
	}
}

// aclHook allows every client and denies subscriptions to one filter
// until told otherwise.
type aclHook struct {
	mochi.HookBase
	deny atomic.Value // string
}

func (h *aclHook) ID() string { return "test-acl" }
func (h *aclHook) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}
func (h *aclHook) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }
func (h *aclHook) OnACLCheck(_ *mochi.Client, topic string, write bool) bool {
	return write || topic != h.deny.Load().(string)
}

// TestSubscriptionRefused: the broker refuses one device's topic; that
// device is reported and gets Bad samples, the other works, and once the
// ACL allows it the subscription is retried and succeeds.
func TestSubscriptionRefused(t *testing.T) {
	acl := &aclHook{}
	acl.deny.Store("secret/x")
	b := testpeer.Broker(t, testpeer.BrokerAuth(acl))
	store := newCommitStore(t)
	ok := jsonDevice("open", b.URL(), "open/x", Point{Name: "v", Path: "v"})
	nope := jsonDevice("closed", b.URL(), "secret/x", Point{Name: "v", Path: "v"})
	r := start(t, []Device{ok, nope}, testOptions(nil), store.emit)
	waitFor(t, "refusal reported", 5*time.Second, func() bool {
		return strings.Contains(r.d.DeviceStatus()[1].LastError, "refused by the broker")
	})
	waitFor(t, "Bad sample", 5*time.Second, func() bool {
		s := store.samples("closed")
		return len(s) == 1 && s[0].Quality == ferry.BadQuality(reasonSubRefused)
	})
	waitFor(t, "open connected", 5*time.Second, func() bool { return r.d.DeviceStatus()[0].Connected })
	b.Publish(t, "open/x", []byte(`{"v":1}`), 1, false)
	waitFor(t, "open works", 5*time.Second, func() bool { return len(store.samples("open")) == 1 })

	acl.deny.Store("")
	waitFor(t, "closed subscribed after the ACL changed", 5*time.Second, func() bool { return r.d.DeviceStatus()[1].Connected })
	b.Publish(t, "secret/x", []byte(`{"v":2}`), 1, false)
	waitFor(t, "closed works", 5*time.Second, func() bool { return len(store.samples("closed")) == 2 })
}

// TestNoGoroutineLeak: after Run returns, no goroutine of the driver or
// of paho is left.
func TestNoGoroutineLeak(t *testing.T) {
	b := testpeer.Broker(t)
	store := newCommitStore(t)
	dev := jsonDevice("env", b.URL(), "s/env", Point{Name: "v", Path: "v"})
	// The broker's goroutines are all started when Broker returns.
	base := runtime.NumGoroutine()
	for i := 0; i < 3; i++ {
		r := start(t, []Device{dev}, testOptions(nil), store.emit)
		r.waitSubscribed(t, b, 1)
		b.Publish(t, "s/env", []byte(`{"v":1}`), 1, false)
		waitFor(t, "message", 5*time.Second, func() bool { return len(store.samples("env")) == i+1 })
		r.stop(t)
	}
	// Also after failed connection attempts.
	bad := jsonDevice("gone", "tcp://"+testpeer.Reserve(t).Addr(), "s/env", Point{Name: "v", Path: "v"})
	r := start(t, []Device{bad}, testOptions(nil), store.emit)
	waitFor(t, "a failed attempt", 5*time.Second, func() bool { return r.d.DeviceStatus()[0].LastError != "" })
	r.stop(t)
	waitFor(t, "goroutines back to the baseline", 5*time.Second, func() bool { return runtime.NumGoroutine() <= base })
}
