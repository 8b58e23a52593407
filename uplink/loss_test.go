package uplink

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// The rollback tests (issue 28): a real nats-server, a child process,
// whose store is rolled back to a snapshot taken while ferry ships —
// paused (SIGSTOP), its store directory copied, resumed; later killed
// (SIGKILL), the copy put back, started again on the same port. That is
// what a power cut leaves of a server that acknowledged writes it had
// not synced (sync_interval, 2 minutes by default).
//
// Without the retention (retain_acked 0) every record acknowledged after
// the snapshot is lost; with it, every accepted record is in the stream
// exactly once, counted by record id and by the number each scan
// carries.

// lossGateway is one gateway: a real buffer and an uplink, fed with
// numbered scans.
type lossGateway struct {
	id  string
	buf *buffer.Buffer
	up  *Uplink
	reg *prometheus.Registry

	mu       sync.Mutex
	n        int64
	accepted map[int64]bool // scan numbers committed (Done(nil))
	alerts   []ferry.Alert
}

func startLossGateway(t *testing.T, id string, urls []string, retain, lossCheck time.Duration, replicas int) *lossGateway {
	t.Helper()
	g := &lossGateway{id: id, reg: prometheus.NewRegistry(), accepted: map[int64]bool{}}
	var bcfg buffer.Config
	bcfg.SetDefaults()
	bcfg.RetainAcked = retain
	bcfg.CommitInterval = 20 * time.Millisecond
	buf, err := buffer.Open(t.TempDir(), bcfg, buffer.Options{Gateway: id, Logger: testLogger(t).With("gw", id), Registerer: g.reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { buf.Close() })
	g.buf = buf
	cfg := DefaultNATSConfig(urls...)
	cfg.CreateStream = true
	cfg.Replicas = replicas
	cfg.ConnectTimeout = 2 * time.Second
	cfg.ReconnectMax = 200 * time.Millisecond
	cfg.AckTimeout = 2 * time.Second
	cfg.Batch.MaxDelay = 50 * time.Millisecond
	cfg.LossCheck = cmp.Or(lossCheck, 2*time.Second)
	u, err := New(cfg, buf, Options{Gateway: id, Site: "lyon", Logger: testLogger(t).With("gw", id), Registerer: g.reg,
		Alert: func(a ferry.Alert) {
			g.mu.Lock()
			g.alerts = append(g.alerts, a)
			g.mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	g.up = u
	testutil.Run(t, "Run "+id, 30*time.Second, u.Run)
	return g
}

// feed appends numbered scans until ctx ends.
func (g *lossGateway) feed(ctx context.Context) {
	for ctx.Err() == nil {
		g.mu.Lock()
		g.n++
		n := g.n
		g.mu.Unlock()
		now := time.Now()
		s := ferry.Scan{Device: "press", Time: now, Samples: []ferry.Sample{
			{Device: "press", Point: "n", Value: ferry.IntValue(n), Time: now},
			{Device: "press", Point: "t", Value: ferry.FloatValue(rand.Float64()), Time: now},
		}}
		s.Done = func(err error) {
			if err == nil {
				g.mu.Lock()
				g.accepted[n] = true
				g.mu.Unlock()
			}
		}
		g.buf.AppendScan(s)
		// Pacing of the load generator (the sleep is the load, not a wait
		// for a condition): about 300 scans a second per gateway.
		time.Sleep(3 * time.Millisecond)
	}
}

func (g *lossGateway) acked(t testing.TB) float64 {
	return metric(t, g.reg, "ferry_uplink_acked_total", "lane", "telemetry")
}

func (g *lossGateway) drained() bool {
	st := g.buf.Stats()
	return st.Lanes[ferry.LaneTelemetry].Records == 0 && st.Lanes[ferry.LaneAlerts].Records == 0 && st.QueueLength == 0
}

// streamCount is what the stream holds of one gateway.
type streamCount struct {
	ids     map[string]int // record id → copies
	scans   map[int64]int  // scan number → copies
	records int
}

// readCounts reads every message of the stream and counts records and
// scans per gateway.
func readCounts(t testing.TB, url string) map[string]*streamCount {
	t.Helper()
	_, js := testpeer.Connect(t, url, nats.MaxReconnects(-1))
	msgs := streamMsgs(t, js, DefaultStream)
	out := map[string]*streamCount{}
	for _, m := range msgs {
		if m.Headers().Get(nats.MsgIdHdr) == "" {
			continue
		}
		recs, err := DecodeAll(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			t.Fatalf("decode %s: %v", m.Headers().Get(nats.MsgIdHdr), err)
		}
		for _, r := range recs {
			if r.Telemetry == nil {
				continue
			}
			c := out[r.Telemetry.Gateway]
			if c == nil {
				c = &streamCount{ids: map[string]int{}, scans: map[int64]int{}}
				out[r.Telemetry.Gateway] = c
			}
			c.ids[r.ID]++
			c.records++
			for _, sc := range r.Telemetry.Scans {
				for _, p := range sc.Points {
					if p.Name == "n" {
						c.scans[p.Value.Int64()]++
					}
				}
			}
		}
	}
	return out
}

// lossResult is what one gateway lost.
type lossResult struct {
	accepted, missing, dupScans, dupIDs, records int
	appended                                     float64
	resent, lost, unrecoverable                  float64
}

func (g *lossGateway) result(t testing.TB, c *streamCount) lossResult {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := lossResult{accepted: len(g.accepted)}
	if c == nil {
		c = &streamCount{ids: map[string]int{}, scans: map[int64]int{}}
	}
	for n := range g.accepted {
		switch c.scans[n] {
		case 0:
			r.missing++
		case 1:
		default:
			r.dupScans++
		}
	}
	for _, k := range c.ids {
		if k > 1 {
			r.dupIDs++
		}
	}
	r.records = len(c.ids)
	r.appended = metric(t, g.reg, "ferry_buffer_appended_total", "lane", "telemetry")
	r.resent = metric(t, g.reg, "ferry_uplink_upstream_resent_after_loss_total")
	r.lost = metric(t, g.reg, "ferry_uplink_upstream_lost_total")
	r.unrecoverable = metric(t, g.reg, "ferry_uplink_upstream_lost_unrecoverable_total")
	return r
}

// rollbackCase is one run: gateways shipping to one stream whose server
// (or one node of a cluster) is rolled back to a snapshot.
type rollbackCase struct {
	gateways int
	retain   time.Duration
	nodes    int // 1: a server alone; 3: a cluster with an R3 stream
	// after is how many records are acknowledged after the snapshot
	// before the rollback, and hold how long it is at least.
	after float64
	hold  time.Duration
	// lossCheck is uplink.nats.loss_check (default 2s here).
	lossCheck time.Duration
	// gone: the rollback reaches past the retention; the run waits until
	// the uplink reported it instead of waiting for every scan.
	gone bool
}

type rollbackOutcome struct {
	gateways         []*lossGateway
	results          []lossResult
	ackedAfterSnap   float64
	rolledBack       string
	ferryResentTotal float64
}

func runRollback(t *testing.T, rc rollbackCase) rollbackOutcome {
	t.Helper()
	bin := testpeer.BuildNATSServer(t)
	nodes := make([]*testpeer.NATSProc, rc.nodes)
	cluster := ""
	if rc.nodes > 1 {
		cluster = fmt.Sprintf("ferry-loss-%08x", rand.Uint32())
	}
	for i := range nodes {
		n := testpeer.NewNATSProc(t, bin, fmt.Sprintf("S%d", i+1))
		n.Cluster = cluster
		for _, o := range nodes[:i] {
			n.Routes = append(n.Routes, o.ClusterAddr())
		}
		if cluster != "" && i == 0 {
			// A JetStream cluster node needs a configured route: the first
			// one's goes to a peer that is down until the others route to
			// it (and it is given theirs when it starts again).
			n.Routes = []string{testpeer.DownAddr(t)}
		}
		n.Start()
		nodes[i] = n
	}
	if rc.nodes > 1 {
		// Every node routes to every other one when it starts again.
		for i, n := range nodes {
			n.Routes = nil
			for j, o := range nodes {
				if j != i {
					n.Routes = append(n.Routes, o.ClusterAddr())
				}
			}
		}
	}
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.URL())
	}
	gws := make([]*lossGateway, rc.gateways)
	for i := range gws {
		gws[i] = startLossGateway(t, fmt.Sprintf("gw%d", i+1), urls, rc.retain, rc.lossCheck, rc.nodes)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, g := range gws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.feed(ctx)
		}()
	}
	stopFeed := func() { cancel(); wg.Wait() }
	defer stopFeed()
	acked := func() float64 {
		s := 0.0
		for _, g := range gws {
			s += g.acked(t)
		}
		return s
	}
	testutil.WaitFor(t, 60*time.Second, "records acknowledged before the snapshot", func() bool { return acked() >= 100 })

	// The node rolled back: the stream's leader (the server alone).
	victim := nodes[0]
	if rc.nodes > 1 {
		leader := streamLeader(t, strings.Join(urls, ","))
		for _, n := range nodes {
			if n.Name() == leader {
				victim = n
			}
		}
	}
	snap := filepath.Join(t.TempDir(), "snapshot")
	victim.Pause()
	a0 := acked()
	victim.Snapshot(snap)
	victim.Resume()
	snapAt := time.Now()
	testutil.WaitFor(t, 60*time.Second, "records acknowledged after the snapshot", func() bool {
		return acked() >= a0+rc.after && time.Since(snapAt) >= rc.hold
	})
	victim.Kill()
	a1 := acked()
	victim.Restore(snap)
	victim.Start()
	testutil.WaitFor(t, 60*time.Second, "records acknowledged after the restart", func() bool { return acked() >= a1+100 })
	stopFeed()

	for _, g := range gws {
		testutil.WaitFor(t, 60*time.Second, g.id+"'s buffer drained", g.drained)
	}
	out := rollbackOutcome{gateways: gws, ackedAfterSnap: a1 - a0, rolledBack: victim.Name()}
	url := strings.Join(urls, ",")
	if rc.gone {
		testutil.WaitFor(t, 60*time.Second, "the loss past the retention reported", func() bool {
			return metric(t, gws[0].reg, "ferry_uplink_upstream_lost_unrecoverable_total") > 0
		})
	} else if rc.retain > 0 {
		// The check runs after the reconnect and every loss_check: wait
		// until it found nothing more to send.
		testutil.Eventually(t, 60*time.Second, "every accepted scan in the stream", func() error {
			counts := readCounts(t, url)
			for _, g := range gws {
				if r := g.result(t, counts[g.id]); r.missing > 0 {
					return fmt.Errorf("%s: %d of %d accepted scans missing", g.id, r.missing, r.accepted)
				}
			}
			return nil
		})
	}
	counts := readCounts(t, url)
	for _, g := range gws {
		r := g.result(t, counts[g.id])
		out.results = append(out.results, r)
		out.ferryResentTotal += r.resent
	}
	return out
}

// streamLeader returns the name of the server leading ferry's stream.
func streamLeader(t testing.TB, url string) string {
	t.Helper()
	_, js := testpeer.Connect(t, url, nats.MaxReconnects(-1))
	var leader string
	testutil.Eventually(t, 30*time.Second, "stream leader", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, DefaultStream)
		if err != nil {
			return err
		}
		info := s.CachedInfo()
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return fmt.Errorf("no leader")
		}
		leader = info.Cluster.Leader
		return nil
	})
	return leader
}

func logOutcome(t *testing.T, name string, o rollbackOutcome) {
	t.Helper()
	for i, r := range o.results {
		t.Logf("%s gw%d: accepted %d scans (%v records); stream holds %d records; missing scans %d; duplicate scans %d, duplicate record ids %d; ferry found %v records lost, resent %v, unrecoverable %v",
			name, i+1, r.accepted, r.appended, r.records, r.missing, r.dupScans, r.dupIDs, r.lost, r.resent, r.unrecoverable)
	}
	t.Logf("%s: %v records acknowledged between the snapshot and the rollback of %s", name, o.ackedAfterSnap, o.rolledBack)
}

// checkNoLoss asserts exactly once, by scan and by record id.
func checkNoLoss(t *testing.T, o rollbackOutcome) {
	t.Helper()
	for i, r := range o.results {
		if r.missing > 0 || r.dupScans > 0 || r.dupIDs > 0 {
			t.Errorf("gw%d: %d accepted scans missing, %d stored twice, %d record ids twice", i+1, r.missing, r.dupScans, r.dupIDs)
		}
		if float64(r.records) != r.appended {
			t.Errorf("gw%d: stream holds %d record ids, the buffer accepted %v records", i+1, r.records, r.appended)
		}
	}
}

// TestRollbackWithoutRetentionLosesAcked shows the problem: with the
// retention off, the records acknowledged after the snapshot are gone.
func TestRollbackWithoutRetentionLosesAcked(t *testing.T) {
	o := runRollback(t, rollbackCase{gateways: 1, nodes: 1, after: 150})
	logOutcome(t, "retain_acked 0", o)
	r := o.results[0]
	if r.missing == 0 {
		t.Fatal("no scan lost with the retention off: the rollback did not take back acknowledged writes")
	}
	if float64(r.records) >= r.appended {
		t.Errorf("stream holds %d records of %v accepted: want fewer", r.records, r.appended)
	}
	if r.resent != 0 {
		t.Errorf("resent %v with the retention off", r.resent)
	}
}

// TestRollbackResendsLost: with the retention on, what the server lost is
// sent again; every accepted record is in the stream exactly once.
func TestRollbackResendsLost(t *testing.T) {
	o := runRollback(t, rollbackCase{gateways: 1, nodes: 1, after: 150, retain: 5 * time.Minute})
	logOutcome(t, "retain_acked 5m", o)
	checkNoLoss(t, o)
	r := o.results[0]
	if r.resent == 0 || r.lost == 0 || r.unrecoverable != 0 {
		t.Errorf("ferry counted %v records lost, %v resent, %v past the retention: want the loss found, all resent", r.lost, r.resent, r.unrecoverable)
	}
	g := o.gateways[0]
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.alerts) != 1 || g.alerts[0].Rule != RuleUpstreamLoss || g.alerts[0].Severity != ferry.SeverityWarning ||
		!strings.Contains(g.alerts[0].Message, "acknowledged messages") || !strings.Contains(g.alerts[0].Message, "; resent ") {
		t.Errorf("alerts = %+v: want one %s warning saying what was lost and resent", g.alerts, RuleUpstreamLoss)
	}
	if st := g.up.LossStatus(); !st.Enabled || st.Lost == 0 || st.Resent != st.Lost || st.LastLossMessage == "" {
		t.Errorf("LossStatus = %+v", st)
	}
}

// TestRollbackSharedStream: two gateways write to one stream; after the
// rollback the stream's last sequence is soon past what either was given,
// with the other's messages at the sequences it had been given.
func TestRollbackSharedStream(t *testing.T) {
	o := runRollback(t, rollbackCase{gateways: 2, nodes: 1, after: 200, retain: 5 * time.Minute})
	logOutcome(t, "two gateways, retain_acked 5m", o)
	checkNoLoss(t, o)
	for i, r := range o.results {
		if r.resent == 0 {
			t.Errorf("gw%d resent nothing", i+1)
		}
	}
}

// TestRollbackClusterNode: a 3-node cluster with an R3 stream; the
// stream leader's store is rolled back (a minority loses what it had not
// synced). First JetStream alone (retention off): what it does is logged
// (the other two nodes hold every acknowledged message; the node rolled
// back catches up from the new leader). Then with the retention: every
// accepted record exactly once, whether or not JetStream repaired it.
func TestRollbackClusterNode(t *testing.T) {
	if testing.Short() {
		t.Skip("three nats-server processes: not in -short")
	}
	t.Run("retain_acked 0", func(t *testing.T) {
		if os.Getenv("FERRY_RELIABILITY") == "" {
			t.Skip("JetStream alone, for the record: FERRY_RELIABILITY=long go test -run TestRollbackClusterNode ./uplink")
		}
		o := runRollback(t, rollbackCase{gateways: 1, nodes: 3, after: 150})
		logOutcome(t, "R3, leader rolled back, retain_acked 0", o)
		for i, r := range o.results {
			if r.dupScans > 0 || r.dupIDs > 0 {
				t.Errorf("gw%d: %d scans, %d record ids stored twice", i+1, r.dupScans, r.dupIDs)
			}
		}
	})
	t.Run("retain_acked 5m", func(t *testing.T) {
		o := runRollback(t, rollbackCase{gateways: 1, nodes: 3, after: 150, retain: 5 * time.Minute})
		logOutcome(t, "R3, leader rolled back, retain_acked 5m", o)
		checkNoLoss(t, o)
	})
}

// TestRollbackPastRetention: the rollback takes back more than the
// retention holds (retain_acked 2s, the snapshot 5s old): what is still
// retained is sent again; what had left it is counted and alerted, with
// its ids, and is exactly what the stream misses.
func TestRollbackPastRetention(t *testing.T) {
	o := runRollback(t, rollbackCase{gateways: 1, nodes: 1, after: 100, hold: 5 * time.Second, retain: 2 * time.Second, lossCheck: time.Second, gone: true})
	logOutcome(t, "retain_acked 2s, snapshot 5s old", o)
	r := o.results[0]
	if r.unrecoverable == 0 || r.resent == 0 {
		t.Fatalf("unrecoverable %v, resent %v: want both", r.unrecoverable, r.resent)
	}
	if r.dupScans > 0 || r.dupIDs > 0 {
		t.Errorf("%d scans, %d record ids stored twice", r.dupScans, r.dupIDs)
	}
	if float64(r.records)+r.unrecoverable != r.appended {
		t.Errorf("stream holds %d records and %v were reported lost for good: want the %v accepted", r.records, r.unrecoverable, r.appended)
	}
	g := o.gateways[0]
	g.mu.Lock()
	defer g.mu.Unlock()
	var found bool
	for _, a := range g.alerts {
		if a.Rule == RuleUpstreamLoss && a.State == ferry.AlertRaised {
			found = true
			if a.Severity != ferry.SeverityCritical || !strings.Contains(a.Message, "cannot be sent again: gw1-telemetry-") {
				t.Errorf("alert = %v %q: want critical, with the range of ids", a.Severity, a.Message)
			}
		}
	}
	if !found {
		t.Errorf("no %s alert raised; alerts: %+v", RuleUpstreamLoss, g.alerts)
	}
}

// groupKept rebuilds messages from retained records and their marks: a
// batch's records are one message even when the next batch was given the
// same stream sequence after a rollback; ids are the ones the messages
// were published under.
func TestGroupKept(t *testing.T) {
	const b, s = markBatch, markSingle
	var marks []uint64
	marks = marksFor(marks, 3, 150<<8|b) // telemetry 10..12: a batch lost at 150
	marks = marksFor(marks, 2, 150<<8|b) // 13..14: the next batch, given 150 after the rollback
	marks = marksFor(marks, 1, 151<<8|4) // 15: a record in 3 parts
	marks = marksFor(marks, 1, 0)        // 16: not kept
	marks = marksFor(marks, 1, 152<<8|s) // 17: alone
	each := func(fn func(ferry.Lane, uint64, uint64)) {
		fn(ferry.LaneAlerts, 4, 140<<8|s|markFirst)
		for i, m := range marks {
			fn(ferry.LaneTelemetry, uint64(10+i), m)
		}
	}
	var got []string
	for _, m := range groupKept(each) {
		got = append(got, fmt.Sprintf("%d %v %v", m.streamSeq, m.seqs, m.ids("gw1")))
	}
	want := []string{
		"140 [4] [gw1-alerts-4]",
		"150 [10 11 12] [gw1-telemetry-10-b]",
		"150 [13 14] [gw1-telemetry-13-b]",
		"151 [15] [gw1-telemetry-15-p1 gw1-telemetry-15-p2 gw1-telemetry-15-p3]",
		"152 [17] [gw1-telemetry-17]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("groupKept:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
