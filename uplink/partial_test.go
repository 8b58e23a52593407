package uplink

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// TestReconcilePartialRecord: a record too large for max_payload goes
// out in parts; their PubAcks are lost and one part (p2) is not in the
// stream (deleted here, as if the server had lost it before the outage);
// the link then stays down longer than the duplicate window. Reconcile
// finds the other parts, and only p2 is sent again: every part is in the
// stream once (sent whole again, p1 and p3… were stored twice)
// (issue 21 item 13).
func TestReconcilePartialRecord(t *testing.T) {
	srv := testpeer.NATS(t, func(o *natsserver.Options) { o.MaxPayload = 8 << 10 })
	_, js := testpeer.Connect(t, srv.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const window = time.Second
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FERRY", Subjects: []string{"ferry.>"}, Duplicates: window})
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, strings.TrimPrefix(srv.URL(), "nats://"))
	src := newMemSource("gw1")
	reg := prometheus.NewRegistry()
	cfg := testConfig("nats://" + p.Addr())
	cfg.CreateStream = false
	cfg.AckTimeout = 300 * time.Millisecond
	cfg.ConnectTimeout = 500 * time.Millisecond
	cfg.DuplicateWindow = window
	u := newTestUplink(t, cfg, src, reg)
	runUplink(t, u, src)
	src.addScans("v", "env", scan("env", time.Now(), 2, 1))
	src.waitEmpty(t, 10*time.Second)

	p.DropReplies.Store(true)
	var scans []ferry.Scan
	t0 := time.Now()
	for i := range 60 {
		scans = append(scans, scan("press3", t0.Add(time.Duration(i)*time.Millisecond), 20, float64(i)))
	}
	rec := src.addScans("v", "press3", scans...)
	var parts []jetstream.Msg
	waitFor(t, 10*time.Second, "every part stored", func() bool {
		parts = parts[:0]
		for _, m := range streamMsgs(t, js, "FERRY") {
			if strings.HasPrefix(m.Headers().Get(nats.MsgIdHdr), rec.ID+"-p") {
				parts = append(parts, m)
			}
		}
		return len(parts) >= 3 && metric(t, reg, "ferry_uplink_errors_total", "reason", "timeout") >= float64(len(parts))
	})
	md, err := parts[1].Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if id := parts[1].Headers().Get(nats.MsgIdHdr); id != rec.ID+"-p2" {
		t.Fatalf("second part is %s", id)
	}
	if err := stream.DeleteMsg(ctx, md.Sequence.Stream); err != nil {
		t.Fatal(err)
	}

	p.Refuse.Store(true)
	p.Cut()
	// The outage's length is what is tested, not a wait: it must outlast
	// the duplicate window.
	time.Sleep(2 * window)
	p.DropReplies.Store(false)
	p.Refuse.Store(false)
	src.waitEmpty(t, 15*time.Second)

	count := map[string]int{}
	for _, m := range streamMsgs(t, js, "FERRY") {
		count[m.Headers().Get(nats.MsgIdHdr)]++
	}
	for i := 1; i <= len(parts); i++ {
		id := rec.ID + "-p" + strconv.Itoa(i)
		if count[id] != 1 {
			t.Errorf("part %s stored %d times, want once", id, count[id])
		}
	}
	if got := metric(t, reg, "ferry_uplink_reconciled_total"); got != 0 {
		t.Errorf("reconciled_total = %v: a partly stored record is not delivered", got)
	}
}
