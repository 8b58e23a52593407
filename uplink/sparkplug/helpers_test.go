package sparkplug

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
	"github.com/ferry-edge/ferry/buffer/buffertest"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink/sparkplug/sphost"
)

const (
	testGroup = "plant1"
	testNode  = "gw1"
	testHost  = "scada"
)

func TestMain(m *testing.M) { os.Exit(testutil.CheckLeaks(m)) }

// rig is a node on a real buffer, a mochi broker and a test host.
type rig struct {
	t    *testing.T
	dir  string
	buf  *buffer.Buffer
	bk   *testpeer.MQTTBroker
	host *sphost.Host
	reg  *prometheus.Registry
	node *Node
	stop func()
}

func newRig(t *testing.T, mod func(*Config), opts ...func(*Options)) *rig {
	t.Helper()
	r := &rig{t: t, dir: t.TempDir()}
	r.bk = testpeer.Broker(t)
	r.host = sphost.New(t, r.bk.URL(), testHost)
	r.openBuffer()
	r.newNode(mod, opts...)
	return r
}

func (r *rig) openBuffer() {
	r.t.Helper()
	r.buf = buffertest.Open(r.t, r.dir, buffer.Options{Gateway: testNode}, func(c *buffer.Config) {
		c.RetainAcked = 0
		c.CommitInterval = 0
	})
}

func (r *rig) newNode(mod func(*Config), opts ...func(*Options)) {
	r.t.Helper()
	cfg := DefaultConfig(testGroup, r.bk.URL())
	cfg.AckTimeout = 5 * time.Second
	cfg.ReconnectMax = 200 * time.Millisecond
	cfg.KeepAlive = 2 * time.Second
	if mod != nil {
		mod(&cfg)
	}
	r.reg = prometheus.NewRegistry()
	o := Options{Gateway: testNode, Registerer: r.reg, Logger: testLogger(r.t)}
	for _, f := range opts {
		f(&o)
	}
	n, err := New(cfg, r.buf, o)
	if err != nil {
		r.t.Fatal(err)
	}
	r.node = n
}

func (r *rig) run() {
	r.stop = testutil.Run(r.t, "sparkplug node", 15*time.Second, r.node.Run)
}

// add commits a scan of device with the given points and values and
// waits until it is durable.
func (r *rig) add(device string, at time.Time, pts ...sample) {
	r.t.Helper()
	sc := ferry.Scan{Device: device, Time: at}
	for _, p := range pts {
		sc.Samples = append(sc.Samples, ferry.Sample{Device: device, Point: p.point, Value: p.v, Quality: p.q, Time: at})
	}
	done := make(chan error, 1)
	sc.Done = func(err error) { done <- err }
	r.buf.AppendScanWait(sc)
	select {
	case err := <-done:
		if err != nil {
			r.t.Fatalf("buffer: %v", err)
		}
	case <-time.After(10 * time.Second):
		r.t.Fatal("scan not committed")
	}
}

type sample struct {
	point string
	v     ferry.Value
	q     ferry.Quality
}

func good(point string, v ferry.Value) sample { return sample{point: point, v: v} }
func bad(point string) sample {
	return sample{point: point, q: ferry.Quality{Status: ferry.Bad, Reason: "timeout"}}
}

func (r *rig) pending() int {
	st := r.buf.Stats()
	n := 0
	for _, l := range st.Lanes {
		n += l.Records
	}
	return n
}

func (r *rig) noViolations() {
	r.t.Helper()
	for _, v := range r.host.Violations() {
		r.t.Errorf("host: %s", v)
	}
}

func (r *rig) waitBorn(bdSeq uint64) {
	r.t.Helper()
	testutil.WaitFor(r.t, 15*time.Second, fmt.Sprintf("NBIRTH with bdSeq %d", bdSeq), func() bool {
		bd, born := r.host.BdSeq(testGroup, testNode)
		return born && bd == bdSeq
	})
}

// counter returns the value of a counter or gauge with the labels given
// as name=value pairs.
func counter(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, l := range labels {
				k, v, _ := strings.Cut(l, "=")
				if !hasLabel(m, k, v) {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == k && l.GetValue() == v {
			return true
		}
	}
	return false
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("SPARKPLUG_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}
