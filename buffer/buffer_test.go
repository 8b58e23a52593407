package buffer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	"time"

	"github.com/ferry-edge/ferry"
	ftest "github.com/ferry-edge/ferry/internal/testutil"
)

func TestAppendCommitNextAck(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, testConfig(), Options{ConfigVersion: "cfg-1"})
	// Two devices, interleaved, in one commit: one record per device,
	// each with its scans in order.
	var rs []*result
	b.qmu.Lock() // hold the writer off so that all six go in one batch
	for i := 0; i < 6; i++ {
		dev := []string{"press3", "boiler"}[i%2]
		s := scan(dev, t0.Add(time.Duration(i)*time.Second), 3)
		r := newResult()
		s.Done = r.done
		rs = append(rs, r)
		b.scans = append(b.scans, s)
		b.queued += 3
	}
	b.qmu.Unlock()
	b.signal()
	for _, r := range rs {
		if err := r.wait(t); err != nil {
			t.Fatalf("Done: %v", err)
		}
	}
	recs := next(t, b, 10, 1<<20)
	if len(recs) != 2 {
		t.Fatalf("got %d records, want 2 (one per device)", len(recs))
	}
	for i, dev := range []string{"press3", "boiler"} {
		r := recs[i]
		if r.Lane != ferry.LaneTelemetry || r.ID != ferry.RecordID("gw1", ferry.LaneTelemetry, r.Seq) {
			t.Fatalf("record %d: lane %v id %q", i, r.Lane, r.ID)
		}
		tel := decodeScans(t, r)
		if tel.Device != dev || tel.ConfigVersion != "cfg-1" || len(tel.Scans) != 3 {
			t.Fatalf("record %d: device %q version %q %d scans", i, tel.Device, tel.ConfigVersion, len(tel.Scans))
		}
		for j, sc := range tel.Scans {
			if want := t0.Add(time.Duration(2*j+i) * time.Second); !sc.Time.Equal(want) {
				t.Fatalf("record %d scan %d at %v, want %v", i, j, sc.Time, want)
			}
		}
	}
	if recs[1].Seq != recs[0].Seq+1 {
		t.Fatalf("seqs %v are not consecutive", seqs(recs))
	}
	st := b.Stats()
	if st.Lanes[ferry.LaneTelemetry].Records != 2 || st.Lanes[ferry.LaneTelemetry].InFlight != 2 {
		t.Fatalf("stats %+v", st.Lanes[ferry.LaneTelemetry])
	}
	if err := b.Ack(recs...); err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	if st := b.Stats(); st.Lanes[ferry.LaneTelemetry].Records != 0 {
		t.Fatalf("after ack: %+v", st.Lanes[ferry.LaneTelemetry])
	}
	b.Close()
	// Acked records are gone after a restart too.
	b2 := openT(t, dir, testConfig(), Options{})
	if st := b2.Stats(); st.Lanes[ferry.LaneTelemetry].Records != 0 {
		t.Fatalf("after reopen: %+v", st.Lanes[ferry.LaneTelemetry])
	}
}

func TestOrdering(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, testConfig(), Options{})
	// Telemetry first, then alerts: alerts still come out first.
	for i := 0; i < 5; i++ {
		if err := appendWait(t, b, scan("d", t0.Add(time.Duration(i)*time.Second), 1)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		b.AppendAlert(ferry.Alert{ID: "a" + string(rune('0'+i)), Rule: "r", Time: t0})
	}
	flush(t, b)

	recs := next(t, b, 4, 1<<20)
	if len(recs) != 4 {
		t.Fatalf("got %d records, want 4", len(recs))
	}
	for i, r := range recs[:3] {
		if r.Lane != ferry.LaneAlerts || decodeAlert(t, r).ID != "a"+string(rune('0'+i)) {
			t.Fatalf("record %d: lane %v, want alert a%d", i, r.Lane, i)
		}
	}
	if recs[3].Lane != ferry.LaneTelemetry {
		t.Fatalf("record 3 is %v, want telemetry", recs[3].Lane)
	}
	firstTel := recs[3].Seq

	// Release the second alert: it comes back before later telemetry.
	b.Release(recs[1])
	again := next(t, b, 2, 1<<20)
	if len(again) != 2 || again[0].Seq != recs[1].Seq || again[0].Lane != ferry.LaneAlerts || again[1].Seq != firstTel+1 {
		t.Fatalf("after Release got %v %v, want alert %d then telemetry %d", lanesOf(again), seqs(again), recs[1].Seq, firstTel+1)
	}
	// maxBytes: at least one record, then only what fits.
	one := next(t, b, 10, 1)
	if len(one) != 1 || one[0].Seq != firstTel+2 {
		t.Fatalf("maxBytes 1: got %v, want [%d]", seqs(one), firstTel+2)
	}
	if err := b.Ack(recs[0]); err != nil {
		t.Fatal(err)
	}
	b.Close()

	// After a restart every unacked record is offered again, in order.
	b2 := openT(t, dir, testConfig(), Options{})
	all := drainAll(t, b2)
	var got []string
	for _, r := range all {
		got = append(got, r.ID)
	}
	var want []string
	for _, r := range recs[1:3] {
		want = append(want, r.ID)
	}
	for i := 0; i < 5; i++ {
		want = append(want, ferry.RecordID("gw1", ferry.LaneTelemetry, firstTel+uint64(i)))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("after restart:\n got %v\nwant %v", got, want)
	}
}

func lanesOf(recs []ferry.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Lane.String())
	}
	return out
}

func TestNextBlocksUntilAppendAndCloses(t *testing.T) {
	b := openT(t, t.TempDir(), testConfig(), Options{})
	got := make(chan []ferry.Record, 1)
	go func() {
		recs, _ := b.Next(context.Background(), 10, 1<<20)
		got <- recs
	}()
	select {
	case <-got:
		t.Fatal("Next returned on an empty buffer")
	case <-time.After(50 * time.Millisecond):
	}
	b.AppendAlert(ferry.Alert{ID: "x"})
	select {
	case recs := <-got:
		if len(recs) != 1 || recs[0].Lane != ferry.LaneAlerts {
			t.Fatalf("got %v", recs)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next did not return after an append")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := b.Next(ctx, 1, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next on empty with deadline: %v", err)
	}

	errc := make(chan error, 1)
	go func() {
		_, err := b.Next(context.Background(), 1, 1)
		errc <- err
	}()
	ftest.WaitFor(t, 5*time.Second, "Next blocked", func() bool { return blockedIn("buffer.(*Buffer).Next") })
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ferry.ErrClosed) {
			t.Fatalf("Next after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next did not return on Close")
	}
	if err := b.Ack(ferry.Record{}); !errors.Is(err, ferry.ErrClosed) {
		t.Fatalf("Ack after Close: %v", err)
	}
	r := newResult()
	b.AppendScan(ferry.Scan{Device: "d", Done: r.done})
	if err := r.wait(t); !errors.Is(err, ferry.ErrClosed) {
		t.Fatalf("AppendScan after Close: Done(%v)", err)
	}
	if err := b.Put("s", []byte("k"), []byte("v")); !errors.Is(err, ferry.ErrClosed) {
		t.Fatalf("Put after Close: %v", err)
	}
}

func TestCloseCommitsQueue(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, testConfig(), Options{Linger: time.Hour, MaxBatch: 1 << 20})
	var rs []*result
	for i := 0; i < 100; i++ {
		s := scan("d", t0.Add(time.Duration(i)*time.Millisecond), 2)
		r := newResult()
		s.Done = r.done
		rs = append(rs, r)
		b.AppendScan(s)
	}
	b.AppendAlert(ferry.Alert{ID: "last"})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if err := r.wait(t); err != nil {
			t.Fatalf("scan %d: Done(%v)", i, err)
		}
	}
	b2 := openT(t, dir, testConfig(), Options{})
	st := b2.Stats()
	if st.Lanes[ferry.LaneAlerts].Records != 1 {
		t.Fatalf("alerts after reopen: %+v", st.Lanes[ferry.LaneAlerts])
	}
	n := 0
	for _, r := range drainAll(t, b2) {
		if r.Lane == ferry.LaneTelemetry {
			n += len(decodeScans(t, r).Scans)
		}
	}
	if n != 100 {
		t.Fatalf("%d scans after reopen, want 100", n)
	}
}

func TestSeqsNeverRepeat(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	seen := map[uint64]bool{}
	var last uint64
	for round := 0; round < 3; round++ {
		b := openT(t, dir, testConfig(), Options{Now: clk.Now})
		for i := 0; i < 3; i++ {
			if err := appendWait(t, b, scan("d", t0, 1)); err != nil {
				t.Fatal(err)
			}
		}
		recs := drainAll(t, b)
		for _, r := range recs {
			if seen[r.Seq] || r.Seq <= last {
				t.Fatalf("round %d: seq %d repeats or goes back (last %d)", round, r.Seq, last)
			}
			// An intact file continues its lane: ids stay consecutive
			// across restarts, so upstream can tell nothing is missing.
			if last != 0 && r.Seq != last+1 {
				t.Fatalf("round %d: seq %d after %d: a gap although nothing was dropped", round, r.Seq, last)
			}
			seen[r.Seq] = true
			last = r.Seq
		}
		// Empty the lane before the restart.
		if err := b.Ack(recs...); err != nil {
			t.Fatal(err)
		}
		b.Close()
	}
	// The file is lost and the clock set back a year: the floor file keeps
	// ids from repeating.
	if err := os.Remove(filepath.Join(dir, fileName)); err != nil {
		t.Fatal(err)
	}
	clk.Add(-365 * 24 * time.Hour)
	b := openT(t, dir, testConfig(), Options{Now: clk.Now})
	if err := appendWait(t, b, scan("d", t0, 1)); err != nil {
		t.Fatal(err)
	}
	recs := drainAll(t, b)
	if len(recs) != 1 || recs[0].Seq <= last {
		t.Fatalf("after losing the file: seqs %v, want above %d", seqs(recs), last)
	}
}

func TestLock(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, testConfig(), Options{})
	start := time.Now()
	_, err := Open(dir, testConfig(), Options{Gateway: "gw1", LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("second Open took %v", took)
	}
	for _, want := range []string{lockName, "another ferry probably runs", dir} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := Inspect(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("Inspect while open: %v, want ErrLocked", err)
	}
	b.Close()
	in, err := Inspect(dir)
	if err != nil {
		t.Fatalf("Inspect after Close: %v", err)
	}
	// While inspecting, a ferry cannot start (it would write under it).
	if _, err := Open(dir, testConfig(), Options{Gateway: "gw1", LockTimeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Fatalf("Open during Inspect: %v", err)
	}
	in.Close()
	openT(t, dir, testConfig(), Options{})
}

func TestStateStore(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, testConfig(), Options{})
	for _, kv := range [][2]string{{"b", "2"}, {"a", "1"}, {"c", "3"}} {
		if err := b.Put("rules", []byte(kv[0]), []byte(kv[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Delete("rules", []byte("b")); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete("nothing", []byte("x")); err != nil {
		t.Fatalf("Delete from a missing bucket: %v", err)
	}
	for _, tc := range []struct {
		name   string
		bucket string
		key    []byte
	}{
		{"empty bucket", "", []byte("k")},
		{"empty key", "rules", nil},
	} {
		if err := b.Put(tc.bucket, tc.key, []byte("v")); !errors.Is(err, errBadState) {
			t.Errorf("%s: Put = %v, want errBadState", tc.name, err)
		}
	}
	b.Close()
	b2 := openT(t, dir, testConfig(), Options{})
	var got []string
	err := b2.ForEach("rules", func(k, v []byte) error {
		got = append(got, string(k)+"="+string(v))
		// fn may write: the entries were copied out.
		return b2.Put("rules2", k, v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a=1", "c=3"}; !slices.Equal(got, want) {
		t.Fatalf("ForEach: %v, want %v", got, want)
	}
	n := 0
	if err := b2.ForEach("rules2", func(k, v []byte) error { n++; return nil }); err != nil || n != 2 {
		t.Fatalf("rules2: %d entries, %v", n, err)
	}
	stop := errors.New("stop")
	if err := b2.ForEach("rules", func(k, v []byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("ForEach error: %v", err)
	}
}

// TestSeqsJumpAfterCrash: a file the last run did not close (a crash, a
// power cut) may have been rolled back by a disk that lied about fsync,
// and its last ids may already be upstream. Its lanes jump instead of
// reusing them; a clean stop continues them.
func TestSeqsJumpAfterCrash(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	b := openT(t, dir, testConfig(), Options{Now: clk.Now})
	for i := 0; i < 3; i++ {
		if err := appendWait(t, b, scan("d", t0, 1)); err != nil {
			t.Fatal(err)
		}
	}
	recs := drainAll(t, b)
	last := recs[len(recs)-1].Seq
	b.Close()

	// What a crash leaves: the file without the clean-close mark.
	db, err := bolt.Open(filepath.Join(dir, fileName), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyClean) }); err != nil {
		t.Fatal(err)
	}
	db.Close()

	b = openT(t, dir, testConfig(), Options{Now: clk.Now})
	if err := appendWait(t, b, scan("d", t0, 1)); err != nil {
		t.Fatal(err)
	}
	got := drainAll(t, b)
	// The unacked records of the first run are offered again with their
	// ids; the new one starts above the floor file's reservation.
	newest := got[len(got)-1].Seq
	if newest <= last+1 {
		t.Fatalf("after a crash the next seq is %d, right after the last one used (%d): it may repeat an id already upstream", newest, last)
	}
	b.Close()
}

// blockedIn reports whether a goroutine is blocked (in a select or on a
// channel) inside fn, e.g. "buffer.(*Buffer).Next".
func blockedIn(fn string) bool {
	buf := make([]byte, 1<<20)
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if (strings.Contains(g, "[select") || strings.Contains(g, "[chan receive")) && strings.Contains(g, fn+"(") {
			return true
		}
	}
	return false
}

// TestStored: a record is stored until it is acknowledged (in flight or
// not), and after a restart only what was not acknowledged is.
func TestStored(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, testConfig(), Options{})
	t0 := time.Now()
	for i := range 3 {
		if err := appendWait(t, b, scan("dev"+string(rune('a'+i)), t0, 2)); err != nil {
			t.Fatal(err)
		}
	}
	recs := next(t, b, 2, 1<<20)
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
	last := recs[1].Seq + 1
	for _, q := range []uint64{recs[0].Seq, recs[1].Seq, last} {
		if !b.Stored(ferry.LaneTelemetry, q) {
			t.Errorf("record %d not stored before its ack", q)
		}
	}
	if b.Stored(ferry.LaneAlerts, recs[0].Seq) || b.Stored(ferry.LaneTelemetry, last+1) || b.Stored(ferry.Lane(200), 1) {
		t.Error("Stored reports a record never written")
	}
	if err := b.Ack(recs[0]); err != nil {
		t.Fatal(err)
	}
	if b.Stored(ferry.LaneTelemetry, recs[0].Seq) {
		t.Error("an acknowledged record is still stored")
	}
	b.Release(recs[1])
	if !b.Stored(ferry.LaneTelemetry, recs[1].Seq) {
		t.Error("a released record is not stored")
	}
	b.Close()
	b2 := openT(t, dir, testConfig(), Options{})
	if b2.Stored(ferry.LaneTelemetry, recs[0].Seq) || !b2.Stored(ferry.LaneTelemetry, recs[1].Seq) || !b2.Stored(ferry.LaneTelemetry, last) {
		t.Error("after a restart: want the acknowledged record gone, the others stored")
	}
}
