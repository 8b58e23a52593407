package uplink

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// startProxy forwards to target until the test ends.
func startProxy(t testing.TB, target string) *testutil.Proxy {
	t.Helper()
	p := testutil.NewProxy(t, target)
	t.Cleanup(p.Close)
	return p
}

// TestReconcileAfterLongOutage loses the PubAcks of records the stream
// stored, then keeps the link down longer than the stream's duplicate
// window. Sent again, the records would be stored twice; the uplink finds
// them in the stream instead and sends only what is missing.
func TestReconcileAfterLongOutage(t *testing.T) {
	srv := testpeer.NATS(t)
	reconcileAfterLongOutage(t, srv.URL())
}

// TestReconcileAfterLongOutageExternalServer runs the same against the
// nats-server binary named by FERRY_NATS_SERVER (make interop sets it to
// Debian's nats-server 2.9, which takes one filter subject per consumer:
// the uplink reads every subject of the stream there).
func TestReconcileAfterLongOutageExternalServer(t *testing.T) {
	bin := os.Getenv("FERRY_NATS_SERVER")
	if bin == "" {
		t.Skip("set FERRY_NATS_SERVER to a nats-server binary (make interop does)")
	}
	// Port -1: the server picks a free port itself and logs it.
	srv := testpeer.Child(t, bin, "-js", "-sd", t.TempDir(), "-a", "127.0.0.1", "-p", "-1")
	listening := regexp.MustCompile(`Listening for client connections on (\S+)`)
	var addr string
	testutil.Eventually(t, 10*time.Second, "nats-server listening", func() error {
		if !srv.Running() {
			return fmt.Errorf("nats-server exited: %v", srv.Wait(0))
		}
		m := listening.FindStringSubmatch(srv.Log())
		if m == nil {
			return errors.New("no \"Listening for client connections\" line yet")
		}
		addr = m[1]
		return nil
	})
	reconcileAfterLongOutage(t, "nats://"+addr)
}

func reconcileAfterLongOutage(t *testing.T, url string) {
	_, js := testpeer.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const window = time.Second
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FERRY", Subjects: []string{"ferry.>"}, Duplicates: window}); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, url[len("nats://"):])
	src := newMemSource("gw1")
	reg := prometheus.NewRegistry()
	cfg := testConfig("nats://" + p.Addr())
	cfg.CreateStream = false
	cfg.AckTimeout = 300 * time.Millisecond
	cfg.ConnectTimeout = 500 * time.Millisecond
	cfg.DuplicateWindow = window
	u := newTestUplink(t, cfg, src, reg)
	runUplink(t, u, src)
	for i := range 5 {
		src.addScans("v", "press3", scan("press3", time.Now(), 3, float64(i)))
	}
	src.waitEmpty(t, 10*time.Second)

	// The server keeps storing; its answers are lost.
	p.DropReplies.Store(true)
	var lost []ferry.Record
	for i := range 20 {
		lost = append(lost, src.addScans("v", "press3", scan("press3", time.Now(), 3, float64(i))))
	}
	lost = append(lost, src.addAlert("v", alert(1)))
	waitFor(t, 10*time.Second, "publishes timed out", func() bool {
		return metric(t, reg, "ferry_uplink_errors_total", "reason", "timeout") >= float64(len(lost))
	})
	// The link goes down for longer than the duplicate window.
	p.Refuse.Store(true)
	p.Cut()
	// The outage's length is what is tested, not a wait: it must outlast
	// the duplicate window.
	time.Sleep(2 * window)
	p.DropReplies.Store(false)
	p.Refuse.Store(false)
	after := src.addScans("v", "env", scan("env", time.Now(), 2, 1))
	src.waitEmpty(t, 15*time.Second)

	checkExactlyOnce(t, streamMsgs(t, js, "FERRY"), src.records())
	if got := metric(t, reg, "ferry_uplink_reconciled_total"); got != float64(len(lost)) {
		t.Errorf("reconciled_total = %v, want %d", got, len(lost))
	}
	_ = after
}
