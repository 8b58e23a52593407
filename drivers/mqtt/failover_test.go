package mqtt

import (
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	ftest "github.com/ferry-edge/ferry/internal/testutil"
)

// TestBrokerFailover runs ferry against two brokers, a and b (b the
// fallback): it connects to a; a stops → it connects to b and QoS 1
// messages published there arrive; a comes back with ferry's session and
// a message queued in it → ferry stays on b (the message waits on a); b
// stops → ferry is back on a and gets the queued message.
func TestBrokerFailover(t *testing.T) {
	storeA := filepath.Join(t.TempDir(), "a.db")
	a := testpeer.Broker(t, testpeer.BrokerStore(storeA))
	b := testpeer.Broker(t)
	store := newCommitStore(t)
	dev := jsonDevice("env", a.URL(), "s/env", Point{Name: "temp", Path: "temp"})
	dev.Config.FallbackBrokers = []string{b.URL()}
	reg := prometheus.NewRegistry()
	opts := testOptions(reg)
	var logs ftest.SyncBuffer
	opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	r := start(t, []Device{dev}, opts, store.emit)
	id := r.d.ClientID()
	single := jsonDevice("env", a.URL(), "s/env")
	if id != DefaultClientID("test", &single.Config) {
		t.Errorf("client id %s changed by the fallback list", id)
	}
	onBroker := func(want float64) func() bool {
		return func() bool { return testutil.ToFloat64(opts.Metrics.broker.WithLabelValues(id)) == want }
	}
	value := func(i int) float64 { return store.samples("env")[i].Value.Float64() }

	r.waitSubscribed(t, a, 1)
	waitFor(t, "gauge on broker 0", 5*time.Second, onBroker(0))
	a.Publish(t, "s/env", []byte(`{"temp":1}`), 1, false)
	waitFor(t, "message on a", 5*time.Second, func() bool { return len(store.samples("env")) == 1 })
	waitFor(t, "acknowledged on a", 5*time.Second, func() bool { return a.Inflight(id) == 0 })

	// a stops: one Bad sample, then the connection comes up on b.
	a.Stop() // its listener stays open: connections to a fail at once
	waitFor(t, "subscribed on b", 5*time.Second, func() bool { return b.Subscriptions(id) == 1 })
	waitFor(t, "gauge on broker 1", 5*time.Second, onBroker(1))
	b.Publish(t, "s/env", []byte(`{"temp":2}`), 1, false)
	waitFor(t, "message on b", 5*time.Second, func() bool { return len(store.samples("env")) == 3 })
	waitFor(t, "acknowledged on b", 5*time.Second, func() bool { return b.Inflight(id) == 0 })
	if s := store.samples("env"); s[1].Quality.Status != ferry.Bad || value(2) != 2 || !s[2].Quality.IsGood() {
		t.Fatalf("samples across the failover: %v", s)
	}
	if !strings.Contains(logs.String(), `msg="broker connected"`) || !strings.Contains(logs.String(), "broker="+b.URL()+" fallback=true") {
		t.Errorf("no log line names the fallback broker:\n%s", logs.String())
	}

	// a comes back with ferry's session and a message for it. ferry stays
	// on b: the message waits on a.
	a2 := a // the same listener, restarted
	a2.StartHeld(t)
	a2.Publish(t, "s/env", []byte(`{"temp":3}`), 1, false)
	if got := a2.Inflight(id); got != 1 {
		t.Fatalf("restarted broker a holds %d messages for ferry's session, want 1", got)
	}
	a2.Listen(t)
	// ferry connected to b does not try a at all, so no event marks that
	// it stayed: watch over several backoff periods (testOptions: 20..200 ms).
	never(t, 300*time.Millisecond, "ferry leaving the working fallback broker", func() bool { return !onBroker(1)() })
	if !onBroker(1)() || len(store.samples("env")) != 3 {
		t.Fatalf("ferry left a working fallback broker (gauge %v, %d samples)", testutil.ToFloat64(opts.Metrics.broker.WithLabelValues(id)), len(store.samples("env")))
	}

	// b stops: ferry is back on a (tried first) and gets the message
	// queued in its session there.
	b.Stop()
	waitFor(t, "gauge on broker 0 again", 5*time.Second, onBroker(0))
	waitFor(t, "queued message on a", 5*time.Second, func() bool { return len(store.samples("env")) == 5 })
	waitFor(t, "acknowledged on a again", 5*time.Second, func() bool { return a2.Inflight(id) == 0 })
	if s := store.samples("env"); s[3].Quality.Status != ferry.Bad || value(4) != 3 {
		t.Fatalf("samples after moving back: %v", s[3:])
	}
	if !r.d.devices[0].stat.IsConnected() {
		t.Error("device not connected")
	}
}

// TestFailoverAllDown: with every broker of the list down, the error names
// each, and the device gets one Bad sample.
func TestFailoverAllDown(t *testing.T) {
	// Bound, not listening: both refuse, and stay refusing.
	a, b := "tcp://"+testpeer.Reserve(t).Addr(), "tcp://"+testpeer.Reserve(t).Addr()
	store := newCommitStore(t)
	dev := jsonDevice("env", a, "s/env", Point{Name: "temp", Path: "temp"})
	dev.Config.FallbackBrokers = []string{b}
	r := start(t, []Device{dev}, testOptions(nil), store.emit)
	waitFor(t, "Bad sample", 5*time.Second, func() bool { return len(store.samples("env")) == 1 })
	st := r.d.DeviceStatus()[0]
	if st.Connected || !strings.Contains(st.LastError, a+", "+b) || st.Endpoint != a+","+b+" s/env" {
		t.Errorf("status %+v", st)
	}
}

// TestFallbackBrokersConfig: the fallback list is validated like broker,
// is a setting devices sharing a connection must agree on, and leaves the
// default client id alone.
func TestFallbackBrokersConfig(t *testing.T) {
	tests := []struct {
		name      string
		broker    string
		fallbacks []string
		wantPath  string // "" = valid
		wantMsg   string
	}{
		{"one", "tcp://a:1883", []string{"tcp://b:1883"}, "", ""},
		{"ws and tcp", "tcp://a:1883", []string{"ws://b/mqtt", "mqtt://c:1883"}, "", ""},
		{"all tls", "ssl://a:8883", []string{"mqtts://b:8883", "wss://c/mqtt"}, "", ""},
		{"bad scheme", "tcp://a:1883", []string{"tcp://b:1883", "http://c:1883"}, "mqtt.fallback_brokers[1]", "scheme"},
		{"no port", "tcp://a:1883", []string{"tcp://b"}, "mqtt.fallback_brokers[0]", "no port"},
		{"credentials", "tcp://a:1883", []string{"tcp://u:p@b:1883"}, "mqtt.fallback_brokers[0]", "credentials"},
		{"empty", "tcp://a:1883", []string{""}, "mqtt.fallback_brokers[0]", "empty"},
		{"plain after tls", "ssl://a:8883", []string{"tcp://b:1883"}, "mqtt.fallback_brokers[0]", "TLS"},
		{"tls after plain", "tcp://a:1883", []string{"tcp://b:1883", "ssl://c:8883"}, "mqtt.fallback_brokers[1]", "TLS"},
		{"same as broker", "tcp://a:1883", []string{"tcp://a:1883"}, "mqtt.fallback_brokers[0]", "already mqtt.broker"},
		{"twice", "tcp://a:1883", []string{"tcp://b:1883", "tcp://b:1883"}, "mqtt.fallback_brokers[1]", "already mqtt.fallback_brokers[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := jsonDevice("d", tt.broker, "t", Point{Name: "v", Path: "v"})
			d.Config.FallbackBrokers = tt.fallbacks
			err := d.Validate()
			if tt.wantPath == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantPath+": ") || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %v, want one at %s mentioning %q", err, tt.wantPath, tt.wantMsg)
			}
		})
	}

	// Devices sharing a connection must agree on the list.
	x := jsonDevice("x", "tcp://a:1883", "t/x", Point{Name: "v", Path: "v"})
	x.Config.FallbackBrokers = []string{"tcp://b:1883"}
	y := jsonDevice("y", "tcp://a:1883", "t/y", Point{Name: "v", Path: "v"})
	y.Config.FallbackBrokers = []string{"tcp://c:1883"}
	if GroupKey(&x) != GroupKey(&y) {
		t.Error("the fallback list is part of GroupKey: devices with one client id would get two connections")
	}
	_, err := New([]Device{x, y}, testOptions(nil))
	if !errors.Is(err, ferry.ErrInvalidConfig) || !strings.Contains(err.Error(), "differ in mqtt.fallback_brokers") {
		t.Errorf("err = %v, want ErrInvalidConfig naming mqtt.fallback_brokers", err)
	}

	// The default client id of a single-broker configuration is what it
	// was before fallback brokers existed, and adding them keeps it.
	if got := DefaultClientID("press-line-3", &x.Config); got != "ferry-press-line-3-0734ec6b" {
		t.Errorf("DefaultClientID = %s, want ferry-press-line-3-0734ec6b", got)
	}
	single := jsonDevice("x", "tcp://a:1883", "t/x")
	if DefaultClientID("gw", &x.Config) != DefaultClientID("gw", &single.Config) {
		t.Error("fallback brokers change the default client id")
	}
}
