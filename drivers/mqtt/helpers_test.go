package mqtt

import (
	"context"
	"crypto/tls"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/backoff"
	"github.com/ferry-edge/ferry/internal/devstat"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// testBroker is an in-process mochi broker.
type testBroker struct {
	srv   *mochi.Server
	addr  string // host:port
	close func()
}

type brokerOpts struct {
	addr    string      // default 127.0.0.1:0
	tls     *tls.Config // TLS listener
	store   string      // bolt file: sessions survive a restart
	noServe bool        // load the store but add no listener yet (see listen)
	auth    mochi.Hook  // default: allow everything
}

func quietLogger() *slog.Logger {
	if os.Getenv("MQTT_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func startBroker(t testing.TB, o brokerOpts) *testBroker {
	t.Helper()
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: quietLogger()})
	var h mochi.Hook = new(auth.AllowHook)
	if o.auth != nil {
		h = o.auth
	}
	if err := srv.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	if o.store != "" {
		err := srv.AddHook(new(bolt.Hook), &bolt.Options{Path: o.store, Options: &bbolt.Options{Timeout: 5 * time.Second}})
		if err != nil {
			t.Fatal(err)
		}
	}
	b := &testBroker{srv: srv, addr: o.addr}
	if b.addr == "" {
		b.addr = "127.0.0.1:0"
	}
	if !o.noServe {
		b.addListener(t, o.tls)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	b.close = func() { once.Do(func() { srv.Close() }) }
	t.Cleanup(b.close)
	return b
}

func (b *testBroker) addListener(t testing.TB, tc *tls.Config) {
	t.Helper()
	var l *listeners.TCP
	// The port may still be held by the previous broker's last
	// connections for a moment after a restart.
	deadline := time.Now().Add(5 * time.Second)
	for {
		l = listeners.NewTCP(listeners.Config{ID: "t", Address: b.addr, TLSConfig: tc})
		err := b.srv.AddListener(l)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listen on %s: %v", b.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.addr = l.Address()
}

// listen starts serving a broker started with noServe.
func (b *testBroker) listen(t testing.TB) {
	t.Helper()
	b.addListener(t, nil)
	b.srv.Listeners.Serve("t", b.srv.EstablishConnection)
}

func (b *testBroker) url() string { return "tcp://" + b.addr }

func (b *testBroker) publish(t testing.TB, topic string, payload []byte, qos byte, retain bool) {
	t.Helper()
	if err := b.srv.Publish(topic, payload, retain, qos); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

// inflight returns how many messages the broker holds unacknowledged for
// client id.
func (b *testBroker) inflight(id string) int {
	cl, ok := b.srv.Clients.Get(id)
	if !ok {
		return -1
	}
	return cl.State.Inflight.Len()
}

// subscriptions returns how many filters client id has.
func (b *testBroker) subscriptions(id string) int {
	cl, ok := b.srv.Clients.Get(id)
	if !ok {
		return 0
	}
	return cl.State.Subscriptions.Len()
}

// commitStore stands in for the buffer: it commits scans on its own
// goroutine, calls Done from there, and, like the buffer, drops a
// redelivered scan whose Key it has already committed (and calls Done(nil)).
type commitStore struct {
	ch   chan ferry.Scan
	done chan struct{}

	mu      sync.Mutex
	hold    bool         // keep scans uncommitted (a crash before the fsync)
	drop    int          // finish the next n scans with ErrDropped
	held    []ferry.Scan // scans not committed yet
	keys    map[string]bool
	scans   []ferry.Scan
	dedup   int
	dropped int
	changed chan struct{}
}

func newCommitStore(t testing.TB) *commitStore {
	c := &commitStore{ch: make(chan ferry.Scan, 4096), done: make(chan struct{}), keys: map[string]bool{}, changed: make(chan struct{}, 1)}
	go func() {
		defer close(c.done)
		for s := range c.ch {
			c.mu.Lock()
			if c.hold {
				c.held = append(c.held, s)
				c.mu.Unlock()
				c.signal()
				continue
			}
			c.mu.Unlock()
			c.commit(s)
		}
	}()
	t.Cleanup(func() {
		close(c.ch)
		<-c.done
		c.release(ferry.ErrClosed)
	})
	return c
}

func (c *commitStore) signal() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// emit is the driver's EmitFunc: it never blocks.
func (c *commitStore) emit(s ferry.Scan) {
	c.mu.Lock()
	if c.drop > 0 {
		c.drop--
		c.dropped++
		c.mu.Unlock()
		s.Finish(ferry.ErrDropped)
		return
	}
	c.mu.Unlock()
	select {
	case c.ch <- s:
	default:
		s.Finish(ferry.ErrDropped)
	}
}

func (c *commitStore) commit(s ferry.Scan) {
	c.mu.Lock()
	if s.Redelivered && s.Key != "" && c.keys[s.Key] {
		c.dedup++
		c.mu.Unlock()
		s.Finish(nil)
		c.signal()
		return
	}
	if s.Key != "" {
		c.keys[s.Key] = true
	}
	c.scans = append(c.scans, s)
	c.mu.Unlock()
	s.Finish(nil)
	c.signal()
}

// setHold switches holding on or off; off commits nothing held (see
// commitHeld, release).
func (c *commitStore) setHold(on bool) {
	c.mu.Lock()
	c.hold = on
	c.mu.Unlock()
}

// commitHeld commits the held scans now.
func (c *commitStore) commitHeld() {
	c.mu.Lock()
	held := c.held
	c.held = nil
	c.mu.Unlock()
	for _, s := range held {
		c.commit(s)
	}
}

// release finishes the held scans with err (the buffer closed).
func (c *commitStore) release(err error) {
	c.mu.Lock()
	held := c.held
	c.held = nil
	c.mu.Unlock()
	for _, s := range held {
		s.Finish(err)
	}
}

func (c *commitStore) heldCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.held)
}

// committed returns a copy of the committed scans.
func (c *commitStore) committed() []ferry.Scan {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]ferry.Scan(nil), c.scans...)
}

// samples returns the committed samples of device (every device if "").
func (c *commitStore) samples(device string) []ferry.Sample {
	var out []ferry.Sample
	for _, s := range c.committed() {
		for _, x := range s.Samples {
			if device == "" || x.Device == device {
				out = append(out, x)
			}
		}
	}
	return out
}

// waitFor is testutil.WaitFor with this package's argument order.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, timeout, what, cond)
}

// testOptions are Options for tests: fast backoff, short drain.
func testOptions(reg prometheus.Registerer) Options {
	return Options{
		Logger:       quietLogger(),
		Metrics:      NewMetrics(reg),
		Devices:      devstat.NewMetrics(reg),
		Gateway:      "test",
		Backoff:      backoff.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		DrainTimeout: 200 * time.Millisecond,
	}
}

// running is a Driver running in the background.
type running struct {
	d    *Driver
	halt func()
}

// start runs a driver over devices until the test ends (or stop).
func start(t testing.TB, devices []Device, opts Options, emit ferry.EmitFunc) *running {
	t.Helper()
	d, err := New(devices, opts)
	if err != nil {
		t.Fatal(err)
	}
	halt := testutil.Run(t, "Run", 10*time.Second, func(ctx context.Context) error { return d.Run(ctx, emit) })
	return &running{d: d, halt: halt}
}

// stop cancels Run and waits for it to return (failing the test started
// with if it does not in time, or returns an error).
func (r *running) stop(testing.TB) { r.halt() }

// waitSubscribed waits until the broker holds n subscriptions for the
// driver's client.
func (r *running) waitSubscribed(t testing.TB, b *testBroker, n int) {
	t.Helper()
	waitFor(t, "subscriptions", 5*time.Second, func() bool { return b.subscriptions(r.d.ClientID()) >= n })
	// The SUBACK is handled just after the broker records the filter;
	// wait for the driver to mark its devices too.
	waitFor(t, "devices connected", 5*time.Second, func() bool {
		for _, dv := range r.d.devices {
			if dv.node == nil && !dv.stat.IsConnected() {
				return false
			}
		}
		return true
	})
}

func jsonDevice(name, broker, topic string, points ...Point) Device {
	d := Device{Name: name, Points: points}
	d.Config.SetDefaults()
	d.Config.Broker = broker
	d.Config.Topic = topic
	return d
}
