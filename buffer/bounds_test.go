package buffer

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/codec"
	ftest "github.com/ferry-edge/ferry/internal/testutil"
)

// appendBatch appends scans in one commit (the writer is held off while
// they are queued) and waits for every Done.
func appendBatch(t testing.TB, b *Buffer, scans []ferry.Scan) {
	t.Helper()
	rs := make([]*result, len(scans))
	b.qmu.Lock()
	for i := range scans {
		rs[i] = newResult()
		scans[i].Done = rs[i].done
		b.scans = append(b.scans, scans[i])
		b.queued += len(scans[i].Samples)
	}
	b.qmu.Unlock()
	b.signal()
	for i, r := range rs {
		if err := r.wait(t); err != nil {
			t.Fatalf("scan %d: Done(%v)", i, err)
		}
	}
}

func dropped(b *Buffer, lane ferry.Lane, reason string) int {
	return int(testutil.ToFloat64(b.m.droppedVec.WithLabelValues(lane.String(), reason)))
}

// storedSize is what a record of data costs against max_size.
func storedSize(data []byte) int64 { return int64(keySize + valueHeader + len(data) + recordOverhead) }

func fixedAlert(i int) ferry.Alert {
	return ferry.Alert{ID: fmt.Sprintf("a%05d", i), Rule: "oil_hot", Device: "press3", Point: "oil_temp", Message: "hot", Time: t0, Since: t0}
}

func TestBoundSizeDropsOldestTelemetryFirst(t *testing.T) {
	clk := newClock(t0)
	var alerts alertLog
	cfg := testConfig()
	cfg.MaxSize = 1 << 20
	b := openT(t, t.TempDir(), cfg, Options{Now: clk.Now, Alert: alerts.add, fixedLimit: true, MaxRecordBytes: 8000})
	limit := cfg.dataLimit()

	// Every scan encodes to a record of the same size: one device per
	// scan, names of one length, the same time.
	mk := func(i int) ferry.Scan { return scan(fmt.Sprintf("d%03d", i%100), t0, 200) }
	telSize := storedSize(codec.AppendTelemetry(nil, "", "d000", []ferry.Scan{mk(0)}))
	a := fixedAlert(0)
	alertSize := storedSize(codec.AppendAlert(nil, "", &a))

	// 5 alerts, then 1000 telemetry records in 20 commits.
	for i := 0; i < 5; i++ {
		b.AppendAlert(fixedAlert(i))
	}
	flush(t, b)
	const n = 1000
	for c := 0; c < n/50; c++ {
		var scans []ferry.Scan
		for i := 0; i < 50; i++ {
			scans = append(scans, mk(c*50+i))
		}
		appendBatch(t, b, scans)
	}
	flush(t, b) // the dropping alert is stored by the next commit

	st := b.Stats()
	// The buffer's own dropping alert joined the lane: 6 alerts.
	alertsBytes := st.Lanes[ferry.LaneAlerts].Bytes
	if st.Lanes[ferry.LaneAlerts].Records != 6 {
		t.Fatalf("alerts: %+v, want 6 records (none dropped)", st.Lanes[ferry.LaneAlerts])
	}
	if alertsBytes < 5*alertSize {
		t.Fatalf("alerts take %d bytes, want at least %d", alertsBytes, 5*alertSize)
	}
	// The dropping alert arrived after the drops: kept is what fits once
	// the 5 user alerts are counted, less what the sixth then displaced.
	kept := int((limit - alertsBytes) / telSize)
	if got := st.Lanes[ferry.LaneTelemetry].Records; got != kept {
		t.Fatalf("telemetry records %d, want %d (limit %d, record %d bytes, alerts %d bytes)", got, kept, limit, telSize, alertsBytes)
	}
	if got := dropped(b, ferry.LaneTelemetry, reasonSize); got != n-kept {
		t.Fatalf("dropped{telemetry,size} = %d, want %d", got, n-kept)
	}
	if got := dropped(b, ferry.LaneAlerts, reasonSize); got != 0 {
		t.Fatalf("dropped{alerts,size} = %d, want 0", got)
	}
	if total := st.Lanes[0].Bytes + st.Lanes[1].Bytes; total > limit {
		t.Fatalf("stored %d bytes, over the limit %d", total, limit)
	}
	// The newest telemetry survived, the oldest went.
	recs := drainAll(t, b)
	var telSeqs []uint64
	for _, r := range recs {
		if r.Lane == ferry.LaneTelemetry {
			telSeqs = append(telSeqs, r.Seq)
		}
	}
	if len(telSeqs) != kept || telSeqs[len(telSeqs)-1]-telSeqs[0] != uint64(kept-1) {
		t.Fatalf("telemetry seqs are not the %d newest: %v…", kept, telSeqs[:min(5, len(telSeqs))])
	}
	b.Release(recs...)
	// One alert per episode.
	if got := alerts.rules(); !slices.Equal(got, []string{RuleDropping + ":raised"}) {
		t.Fatalf("alerts %v, want one %s raised", got, RuleDropping)
	}
	// Quiet for DropQuietPeriod: the episode ends.
	clk.Add(DropQuietPeriod)
	flush(t, b)
	if got := alerts.rules(); !slices.Equal(got, []string{RuleDropping + ":raised", RuleDropping + ":cleared"}) {
		t.Fatalf("alerts %v, want %s raised then cleared", got, RuleDropping)
	}
}

func TestBoundSizeAlertsOnlyWhenNoTelemetry(t *testing.T) {
	clk := newClock(t0)
	cfg := testConfig()
	cfg.MaxSize = 1 << 20
	b := openT(t, t.TempDir(), cfg, Options{Now: clk.Now, AlertQueueSize: 1 << 16, fixedLimit: true})
	limit := cfg.dataLimit()
	for c := 0; c < 4; c++ {
		var scans []ferry.Scan
		for i := 0; i < 25; i++ {
			scans = append(scans, scan(fmt.Sprintf("d%03d", c*25+i), t0, 50))
		}
		appendBatch(t, b, scans)
	}
	tel := b.Stats().Lanes[ferry.LaneTelemetry].Records
	if tel != 100 {
		t.Fatalf("%d telemetry records, want 100", tel)
	}
	// Ten are in flight: they go too, before any alert.
	inflight := next(t, b, 10, 1<<20)
	// Alerts beyond the bound: every telemetry record goes before the
	// first alert does.
	a := fixedAlert(0)
	alertSize := storedSize(codec.AppendAlert(nil, "", &a))
	n := int(limit/alertSize) + 500
	for c := 0; c < n; c += 1000 {
		for i := c; i < min(n, c+1000); i++ {
			b.AppendAlert(fixedAlert(i))
		}
		flush(t, b)
	}
	st := b.Stats()
	if st.Lanes[ferry.LaneTelemetry].Records != 0 || dropped(b, ferry.LaneTelemetry, reasonSize) != 100 {
		t.Fatalf("telemetry left %d, dropped %d; want 0 left, 100 dropped", st.Lanes[ferry.LaneTelemetry].Records, dropped(b, ferry.LaneTelemetry, reasonSize))
	}
	// The dropping alert of the buffer itself is one more alert record,
	// of another size: the kept alerts fill the limit.
	if total := st.Lanes[ferry.LaneAlerts].Bytes; total > limit || total < limit-2*alertSize-256 {
		t.Fatalf("alerts take %d bytes, want just under %d", total, limit)
	}
	if got, want := dropped(b, ferry.LaneAlerts, reasonSize)+st.Lanes[ferry.LaneAlerts].Records, n+1; got != want {
		t.Fatalf("alerts dropped + kept = %d, want %d (every alert accounted for)", got, want)
	}
	// Acking a dropped record is a no-op.
	if err := b.Ack(inflight...); err != nil {
		t.Fatal(err)
	}
	// The oldest alerts went: the first kept is not a0.
	recs := next(t, b, 1, 1<<20)
	if got := decodeAlert(t, recs[0]).ID; got == "a00000" {
		t.Fatalf("oldest alert a00000 kept while alerts were dropped")
	}
}

func TestBoundAge(t *testing.T) {
	clk := newClock(t0)
	cfg := testConfig()
	cfg.MaxAge = time.Hour
	b := openT(t, t.TempDir(), cfg, Options{Now: clk.Now})
	var scans []ferry.Scan
	for i := 0; i < 10; i++ {
		scans = append(scans, scan(fmt.Sprintf("d%d", i), t0, 1))
	}
	appendBatch(t, b, scans)
	b.AppendAlert(fixedAlert(1))
	flush(t, b)
	// Two records in flight are not dropped by age.
	inflight := next(t, b, 3, 1<<20)[1:]
	clk.Add(30 * time.Minute)
	appendBatch(t, b, []ferry.Scan{scan("young", t0, 1)})
	clk.Add(31 * time.Minute)
	flush(t, b)
	st := b.Stats()
	if got := dropped(b, ferry.LaneTelemetry, reasonAge); got != 8 {
		t.Fatalf("dropped{telemetry,age} = %d, want 8", got)
	}
	if st.Lanes[ferry.LaneTelemetry].Records != 3 || st.Lanes[ferry.LaneAlerts].Records < 1 {
		t.Fatalf("left %+v, want 3 telemetry (2 in flight, 1 young) and the alerts", st.Lanes)
	}
	if err := b.Ack(inflight...); err != nil {
		t.Fatal(err)
	}
	if got := dropped(b, ferry.LaneAlerts, reasonAge); got != 0 {
		t.Fatalf("alerts dropped by age: %d", got)
	}
}

func TestQueueFullDropsNewest(t *testing.T) {
	b := openT(t, t.TempDir(), testConfig(), Options{QueueSize: 100})
	// Hold bbolt's write lock so the writer stalls on its next commit.
	tx, err := b.db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			tx.Rollback()
		}
	}()
	first := newResult()
	s := scan("d", t0, 10)
	s.Done = first.done
	b.AppendScan(s)
	// Wait until the writer has taken it (and is stuck in Begin).
	ftest.WaitFor(t, 5*time.Second, "the writer taking the first scan", func() bool { return b.Stats().QueueLength == 0 })
	// 10 scans of 10 samples fill the queue of 100; the next 5 are dropped.
	var rs []*result
	for i := 0; i < 15; i++ {
		r := newResult()
		s := scan("d", t0, 10)
		s.Done = r.done
		rs = append(rs, r)
		b.AppendScan(s)
	}
	for i, r := range rs[10:] {
		if err := r.wait(t); err != ferry.ErrDropped {
			t.Fatalf("scan %d: Done(%v), want ErrDropped", 10+i, err)
		}
	}
	if got := dropped(b, ferry.LaneTelemetry, reasonQueueFull); got != 5 {
		t.Fatalf("dropped{queue_full} = %d, want 5", got)
	}
	tx.Rollback()
	released = true
	for i, r := range append([]*result{first}, rs[:10]...) {
		if err := r.wait(t); err != nil {
			t.Fatalf("queued scan %d: Done(%v)", i, err)
		}
	}
}
