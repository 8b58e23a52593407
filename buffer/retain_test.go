package buffer

import (
	"bytes"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

type keptRef struct {
	lane      ferry.Lane
	seq, mark uint64
}

func kept(b *Buffer) []keptRef {
	var out []keptRef
	b.EachKept(func(l ferry.Lane, seq, mark uint64) { out = append(out, keptRef{l, seq, mark}) })
	return out
}

// Acknowledged records move to the retention with their marks, in the
// commit that takes them off the forward queue: they are offered no more,
// keep their bytes and ids, survive a restart, and leave after
// retain_acked.
func TestRetainAckedRecords(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	cfg := testConfig()
	cfg.RetainAcked = time.Minute
	b := openT(t, dir, cfg, Options{Now: clk.Now})
	for i := range 5 {
		if err := appendWait(t, b, scan("d1", t0.Add(time.Duration(i)*time.Second), 3)); err != nil {
			t.Fatal(err)
		}
	}
	recs := drainAll(t, b)
	if len(recs) != 5 {
		t.Fatalf("records = %d, want 5", len(recs))
	}
	// Three acknowledged with marks, one with mark 0 (not kept), one left.
	if err := b.AckKeep(recs[:4], []uint64{101, 102, 103, 0}); err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	want := []keptRef{{ferry.LaneTelemetry, recs[0].Seq, 101}, {ferry.LaneTelemetry, recs[1].Seq, 102}, {ferry.LaneTelemetry, recs[2].Seq, 103}}
	if got := kept(b); !equalRefs(got, want) {
		t.Fatalf("kept = %v, want %v", got, want)
	}
	if st := b.Stats(); st.Lanes[ferry.LaneTelemetry].Records != 1 {
		t.Fatalf("forward records = %d, want 1 (retained ones are not in the backlog)", st.Lanes[ferry.LaneTelemetry].Records)
	}
	got, err := b.ReadKept(ferry.LaneTelemetry, []uint64{recs[1].Seq, recs[3].Seq})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != recs[1].ID || !bytes.Equal(got[0].Data, recs[1].Data) || !got[0].Time.Equal(recs[1].Time) {
		t.Fatalf("ReadKept = %+v, want record %s as stored", got, recs[1].ID)
	}
	// Sent again: a new mark and a new retention time.
	clk.Add(40 * time.Second)
	if err := b.AckKeep(recs[:1], []uint64{201}); err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	b.Close()

	b = openT(t, dir, cfg, Options{Now: clk.Now})
	want[0].mark = 201
	if got := kept(b); !equalRefs(got, want) {
		t.Fatalf("kept after restart = %v, want %v", got, want)
	}
	if n := len(drainAll(t, b)); n != 1 {
		t.Fatalf("offered after restart = %d, want 1 (the record never acknowledged)", n)
	}
	// 30s later the two left alone are past the minute; the one sent again
	// is not. Nothing leaves before a check of the upstream has found it
	// there (KeptChecked) a minute after its acknowledgement.
	clk.Add(30 * time.Second)
	flush(t, b)
	flush(t, b)
	if got := kept(b); !equalRefs(got, want) {
		t.Fatalf("kept past the window before a check = %v, want %v", got, want)
	}
	b.KeptChecked(clk.Now().Add(-15 * time.Second)) // a check started at 55s: too early
	flush(t, b)
	flush(t, b)
	if got := kept(b); !equalRefs(got, want) {
		t.Fatalf("kept after a check that started within the window = %v, want %v", got, want)
	}
	b.KeptChecked(clk.Now())
	flush(t, b)
	if got := kept(b); !equalRefs(got, want[:1]) {
		t.Fatalf("kept after the window = %v, want %v", got, want[:1])
	}
	var expired []uint64
	b.EachExpired(func(_ ferry.Lane, seq, _ uint64) { expired = append(expired, seq) })
	if len(expired) != 2 || expired[0] != recs[1].Seq || expired[1] != recs[2].Seq {
		t.Fatalf("expired = %v, want [%d %d]", expired, recs[1].Seq, recs[2].Seq)
	}
	b.Close()
	b = openT(t, dir, cfg, Options{Now: clk.Now})
	if got := kept(b); !equalRefs(got, want[:1]) {
		t.Fatalf("kept after the window and a restart = %v, want %v", got, want[:1])
	}
	// The one sent again leaves a minute after its renewal, once checked.
	clk.Add(time.Minute)
	b.KeptChecked(clk.Now())
	flush(t, b)
	if got := kept(b); len(got) != 0 {
		t.Fatalf("kept after its window and a check = %v, want none", got)
	}
}

// retain_max_size bounds the retention, oldest first; retain_acked 0
// turns it off (AckKeep is Ack) and empties what an earlier run kept.
func TestRetainBounds(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.RetainAcked = time.Hour
	cfg.RetainMaxSize = 1 << 20
	b := openT(t, dir, cfg, Options{})
	big := 0
	for i := range 100 {
		if err := appendWait(t, b, scan("d1", t0.Add(time.Duration(i)*time.Second), 2000)); err != nil {
			t.Fatal(err)
		}
	}
	recs := drainAll(t, b)
	for _, r := range recs {
		big += len(r.Data)
	}
	marks := make([]uint64, len(recs))
	for i := range marks {
		marks[i] = uint64(i + 1)
	}
	if err := b.AckKeep(recs, marks); err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	flush(t, b)
	n, sz := b.KeptStats()
	if sz > int64(cfg.RetainMaxSize) || n == 0 || n >= len(recs) {
		t.Fatalf("kept %d records, %d bytes of %d: want some, within %d", n, sz, big, cfg.RetainMaxSize)
	}
	got := kept(b)
	if last := got[len(got)-1]; last.seq != recs[len(recs)-1].Seq {
		t.Fatalf("newest kept = %d, want %d (the oldest go first)", last.seq, recs[len(recs)-1].Seq)
	}
	b.Close()

	cfg.RetainAcked = 0
	b = openT(t, dir, cfg, Options{})
	flush(t, b)
	flush(t, b)
	if n, _ := b.KeptStats(); n != 0 {
		t.Fatalf("kept with retain_acked 0 = %d, want 0", n)
	}
	if err := appendWait(t, b, scan("d1", t0, 1)); err != nil {
		t.Fatal(err)
	}
	r := drainAll(t, b)
	if err := b.AckKeep(r, []uint64{7}); err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	if n, _ := b.KeptStats(); n != 0 {
		t.Fatalf("kept with retain_acked 0 after AckKeep = %d, want 0", n)
	}
	if len(drainAll(t, b)) != 0 {
		t.Fatal("a record acknowledged with AckKeep is offered again")
	}
}

func equalRefs(a, b []keptRef) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
