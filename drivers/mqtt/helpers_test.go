package mqtt

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/backoff"
	"github.com/ferry-edge/ferry/internal/devstat"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

func quietLogger() *slog.Logger {
	if os.Getenv("MQTT_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
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
var never = testutil.Never

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
func (r *running) waitSubscribed(t testing.TB, b *testpeer.MQTTBroker, n int) {
	t.Helper()
	waitFor(t, "subscriptions", 5*time.Second, func() bool { return b.Subscriptions(r.d.ClientID()) >= n })
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
