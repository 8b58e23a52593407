package buffer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
)

var _ Source = (*Cursor)(nil)

// cursorT returns the named cursor of b.
func cursorT(t testing.TB, b *Buffer, name string) *Cursor {
	t.Helper()
	c, err := b.Cursor(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// drainCursor takes every record ready for c without acking it.
func drainCursor(t testing.TB, c *Cursor) []ferry.Record {
	t.Helper()
	var out []ferry.Record
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		recs, err := c.Next(ctx, 1000, 1<<30)
		cancel()
		if err != nil {
			return out
		}
		out = append(out, recs...)
	}
}

func ids(recs []ferry.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

// fill appends n scans of distinct devices (one record each) and one
// alert, committed.
func fill(t testing.TB, b *Buffer, n int) {
	t.Helper()
	for i := range n {
		if err := appendWait(t, b, scan(fmt.Sprintf("d%d", i), t0, 2)); err != nil {
			t.Fatal(err)
		}
	}
	b.AppendAlert(fixedAlert(0))
	flush(t, b)
}

func TestCursorsEachGetEveryRecordAlertsFirst(t *testing.T) {
	b := openT(t, t.TempDir(), testConfig(), Options{Consumers: []string{"cloud", "scada"}})
	fill(t, b, 5)
	cloud, scada := cursorT(t, b, "cloud"), cursorT(t, b, "scada")

	got := drainCursor(t, cloud)
	if len(got) != 6 || got[0].Lane != ferry.LaneAlerts {
		t.Fatalf("cloud got %d records, first lane %v; want 6, the alert first", len(got), got[0].Lane)
	}
	// In flight for cloud, still ready for scada: the same records, ids.
	got2 := drainCursor(t, scada)
	if !slices.Equal(ids(got), ids(got2)) {
		t.Fatalf("scada got %v, cloud %v", ids(got2), ids(got))
	}
	if err := cloud.Ack(got...); err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	for _, r := range got {
		if cloud.Stored(r.Lane, r.Seq) || !scada.Stored(r.Lane, r.Seq) || !b.Stored(r.Lane, r.Seq) {
			t.Fatalf("%s after cloud's ack: cloud %v scada %v buffer %v; want false true true", r.ID,
				cloud.Stored(r.Lane, r.Seq), scada.Stored(r.Lane, r.Seq), b.Stored(r.Lane, r.Seq))
		}
	}
	if st := b.Stats(); st.Lanes[ferry.LaneTelemetry].Records != 5 {
		t.Fatalf("stored telemetry %d after one consumer's ack, want 5", st.Lanes[ferry.LaneTelemetry].Records)
	}
	if cs := cloud.Stats(); cs.Pending() != 0 {
		t.Fatalf("cloud pending %d, want 0", cs.Pending())
	}
	if cs := scada.Stats(); cs.Pending() != 6 || cs.Lanes[ferry.LaneTelemetry].InFlight != 5 || cs.Lanes[ferry.LaneTelemetry].Oldest.IsZero() {
		t.Fatalf("scada stats %+v, want 6 pending, 5 telemetry in flight, an oldest time", cs)
	}
	// Release by scada puts them back for scada only.
	scada.Release(got2...)
	if again := drainCursor(t, scada); len(again) != 6 {
		t.Fatalf("scada got %d after Release, want 6", len(again))
	}
	if again := drainCursor(t, cloud); len(again) != 0 {
		t.Fatalf("cloud got %d after its ack, want 0", len(again))
	}
	if err := scada.Ack(got2...); err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	if st := b.Stats(); st.Lanes[0].Records+st.Lanes[1].Records != 0 {
		t.Fatalf("stored %+v after both acks, want nothing", st.Lanes)
	}
	if n := testutil.ToFloat64(b.cm.acked[1][ferry.LaneTelemetry]); n != 5 {
		t.Fatalf("ferry_buffer_consumer_acked_total{consumer=scada,lane=telemetry} = %v, want 5", n)
	}
}

// The Buffer's own methods are the first consumer's.
func TestCursorsBufferIsFirstConsumer(t *testing.T) {
	b := openT(t, t.TempDir(), testConfig(), Options{Consumers: []string{"cloud", "scada"}})
	fill(t, b, 3)
	got := drainAll(t, b)
	if err := b.Ack(got...); err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	if n := cursorT(t, b, "cloud").Stats().Pending(); n != 0 {
		t.Fatalf("cloud pending %d after Buffer.Ack, want 0", n)
	}
	if n := cursorT(t, b, "scada").Stats().Pending(); n != 4 {
		t.Fatalf("scada pending %d, want 4", n)
	}
	if b.RetainWindow() != 0 {
		t.Fatal("the retention is on with two consumers")
	}
}

func TestCursorsRestartReoffersWhatEachDidNotAck(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Consumers: []string{"cloud", "scada"}}
	b := openT(t, dir, testConfig(), opts)
	fill(t, b, 10)
	cloud, scada := cursorT(t, b, "cloud"), cursorT(t, b, "scada")
	all := drainCursor(t, cloud)
	drainCursor(t, scada)
	// cloud acks the first 7, scada the last 4 and the alert.
	cloudAck, scadaAck := all[:7], append([]ferry.Record{all[0]}, all[7:]...)
	if err := cloud.Ack(cloudAck...); err != nil {
		t.Fatal(err)
	}
	if err := scada.Ack(scadaAck...); err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	b.Close()

	b = openT(t, dir, testConfig(), opts)
	cloud, scada = cursorT(t, b, "cloud"), cursorT(t, b, "scada")
	if got, want := ids(drainCursor(t, cloud)), ids(all[7:]); !slices.Equal(got, want) {
		t.Fatalf("cloud after restart got %v, want %v", got, want)
	}
	if got, want := ids(drainCursor(t, scada)), ids(all[1:7]); !slices.Equal(got, want) {
		t.Fatalf("scada after restart got %v, want %v", got, want)
	}
	// The alert (acked by both) is gone; the rest is stored once.
	if st := b.Stats(); st.Lanes[ferry.LaneAlerts].Records != 0 || st.Lanes[ferry.LaneTelemetry].Records != 10 {
		t.Fatalf("stored %+v, want 0 alerts, 10 telemetry", st.Lanes)
	}
	// A record deleted takes its marks along: after both ack everything
	// the cursors' bucket is empty.
	if err := cloud.Ack(all...); err != nil {
		t.Fatal(err)
	}
	if err := scada.Ack(all...); err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	if n := countMarks(t, b); n != 0 {
		t.Fatalf("%d marks left after every record was deleted", n)
	}
}

func countMarks(t testing.TB, b *Buffer) int {
	t.Helper()
	n := 0
	if err := b.viewDB(func(tx *bolt.Tx) error {
		if bk := cursorBucketOf(tx); bk != nil {
			n = bk.Stats().KeyN
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCursorsRemovedConsumerIsForgotten(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, testConfig(), Options{Consumers: []string{"cloud", "scada"}})
	fill(t, b, 6)
	cloud := cursorT(t, b, "cloud")
	scada := cursorT(t, b, "scada")
	all := drainCursor(t, cloud)
	drainCursor(t, scada)
	// cloud acked everything, scada the first three.
	if err := cloud.Ack(all...); err != nil {
		t.Fatal(err)
	}
	if err := scada.Ack(all[:3]...); err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	b.Close()

	// Restart without scada: what only scada still needed goes at Open.
	b = openT(t, dir, testConfig(), Options{Consumers: []string{"cloud"}})
	flush(t, b)
	if st := b.Stats(); st.Lanes[0].Records+st.Lanes[1].Records != 0 {
		t.Fatalf("stored %+v after restarting without scada, want nothing", st.Lanes)
	}
	if n := countMarks(t, b); n != 0 {
		t.Fatalf("%d marks left, want 0", n)
	}
	fill(t, b, 2)
	b.Close()

	// Restart without cloud, scada back: scada (forgotten, then added
	// again) starts with what the buffer holds.
	b = openT(t, dir, testConfig(), Options{Consumers: []string{"scada"}})
	if got := drainCursor(t, cursorT(t, b, "scada")); len(got) != 3 {
		t.Fatalf("scada got %d records, want the 3 stored", len(got))
	}
}

func TestCursorsOptionsChecked(t *testing.T) {
	for _, tc := range []struct {
		name      string
		consumers []string
	}{
		{"duplicate", []string{"a", "b", "a"}},
		{"empty name", []string{"a", ""}},
		{"bad char", []string{"a@b"}},
		{"too many", []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(t.TempDir(), testConfig(), Options{Gateway: "gw1", Consumers: tc.consumers})
			if !errors.Is(err, ferry.ErrInvalidConfig) {
				t.Fatalf("Open: %v, want ErrInvalidConfig", err)
			}
		})
	}
	b := openT(t, t.TempDir(), testConfig(), Options{})
	if _, err := b.Cursor("nope"); !errors.Is(err, ErrUnknownConsumer) {
		t.Fatalf("Cursor(nope): %v, want ErrUnknownConsumer", err)
	}
	if c, err := b.Cursor(DefaultConsumer); err != nil || c.Name() != DefaultConsumer {
		t.Fatalf("Cursor(default): %v, %v", c, err)
	}
}

// Each consumer's state buckets are its own; the first shares the
// Buffer's.
func TestCursorStateStoreIsPerConsumer(t *testing.T) {
	b := openT(t, t.TempDir(), testConfig(), Options{Consumers: []string{"cloud", "scada"}})
	cloud, scada := cursorT(t, b, "cloud"), cursorT(t, b, "scada")
	if err := cloud.Put("seals", []byte("k"), []byte("cloud")); err != nil {
		t.Fatal(err)
	}
	if err := scada.Put("seals", []byte("k"), []byte("scada")); err != nil {
		t.Fatal(err)
	}
	read := func(s ferry.StateStore) string {
		var v string
		if err := s.ForEach("seals", func(_, val []byte) error { v = string(val); return nil }); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if read(cloud) != "cloud" || read(scada) != "scada" || read(b) != "cloud" {
		t.Fatalf("cloud %q scada %q buffer %q", read(cloud), read(scada), read(b))
	}
	if err := scada.Delete("seals", []byte("k")); err != nil {
		t.Fatal(err)
	}
	if read(scada) != "" || read(cloud) != "cloud" {
		t.Fatal("scada's delete reached cloud's bucket")
	}
}

// A stalled consumer never blocks the other: the bound drops the oldest
// records, counted for the consumer that had not acknowledged them.
func TestCursorsStalledConsumerLosesToTheBound(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSize = 1 << 20
	reg := prometheus.NewRegistry()
	b := openT(t, t.TempDir(), cfg, Options{Consumers: []string{"cloud", "scada"}, fixedLimit: true, MaxRecordBytes: 8000, Registerer: reg})
	cloud := cursorT(t, b, "cloud")
	limit := cfg.dataLimit()

	// cloud keeps up, scada is down: write 3× the bound.
	var written int64
	cloudTel := 0
	first := uint64(0)
	for c := 0; written < 3*limit; c++ {
		var scans []ferry.Scan
		for i := range 50 {
			scans = append(scans, scan(fmt.Sprintf("d%03d", i), t0, 200))
		}
		appendBatch(t, b, scans)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		recs, err := cloud.Next(ctx, 1000, 1<<30)
		cancel()
		if err != nil {
			t.Fatalf("cloud Next: %v", err)
		}
		for _, r := range recs {
			if r.Lane == ferry.LaneTelemetry {
				if first == 0 {
					first = r.Seq
				}
				written += storedSize(r.Data)
				cloudTel++
			}
		}
		if err := cloud.Ack(recs...); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, b)
	st := b.Stats()
	if got := st.Lanes[0].Bytes + st.Lanes[1].Bytes; got > limit {
		t.Fatalf("stored %d bytes, over the bound %d", got, limit)
	}
	scadaDrops := testutil.ToFloat64(b.cm.dropVec.WithLabelValues("scada", "telemetry", reasonSize))
	cloudDrops := testutil.ToFloat64(b.cm.dropVec.WithLabelValues("cloud", "telemetry", reasonSize))
	if scadaDrops == 0 || cloudDrops != 0 {
		t.Fatalf("dropped for scada %v, for cloud %v; want some, none", scadaDrops, cloudDrops)
	}
	if int(scadaDrops) != dropped(b, ferry.LaneTelemetry, reasonSize) {
		t.Fatalf("scada lost %v, the buffer dropped %d", scadaDrops, dropped(b, ferry.LaneTelemetry, reasonSize))
	}
	// scada, back, gets the newest records: with what the bound dropped,
	// every record cloud got; nothing is left for cloud.
	got := drainCursor(t, cursorT(t, b, "scada"))
	tel := 0
	for _, r := range got {
		if r.Lane == ferry.LaneTelemetry {
			tel++
			if r.Seq == first {
				t.Fatal("scada got the oldest record, which the bound should have dropped")
			}
		}
	}
	if tel != st.Lanes[ferry.LaneTelemetry].Records || tel+int(scadaDrops) != cloudTel {
		t.Fatalf("scada got %d telemetry records (stored %d) and lost %v; cloud got %d", tel, st.Lanes[ferry.LaneTelemetry].Records, scadaDrops, cloudTel)
	}
	if n := cloud.Stats().Pending(); n != 0 {
		t.Fatalf("cloud has %d pending, want 0", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		found = found || mf.GetName() == "ferry_buffer_consumer_dropped_total"
	}
	if !found {
		t.Fatal("ferry_buffer_consumer_dropped_total is not registered")
	}
}
