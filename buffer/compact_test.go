package buffer

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testutil"
)

func TestCompactionShrinksTheFile(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	b := openT(t, dir, testConfig(), Options{Now: clk.Now})
	if err := b.Put("rules", []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	// An outage: 8 MiB of backlog.
	for c := 0; b.fileSize() < 8<<20; c++ {
		var scans []ferry.Scan
		for i := 0; i < 100; i++ {
			scans = append(scans, scan(fmt.Sprintf("dev%02d", i%20), t0.Add(time.Duration(c)*time.Second), 100))
		}
		appendBatch(t, b, scans)
	}
	peak := b.fileSize()
	// The link is back: drained, except a few records still in flight.
	recs := drainAll(t, b)
	keep := recs[len(recs)-3:]
	if err := b.Ack(recs[:len(recs)-3]...); err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	if got := b.fileSize(); got != peak {
		t.Fatalf("file changed from %d to %d before compaction was due", peak, got)
	}
	clk.Add(compactEvery)
	flush(t, b) // the writer checks after this commit
	after := b.fileSize()
	testutil.Eventually(t, 10*time.Second, "compaction", func() error {
		if after = b.fileSize(); after*4 > peak {
			return fmt.Errorf("file %d bytes, peak %d: not compacted", after, peak)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(dir, fileName+compactSuffix)); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind: %v", err)
	}
	// The records in flight are still there and can be acked; new ones
	// continue the sequence; state survived.
	st := b.Stats()
	if st.Lanes[ferry.LaneTelemetry].Records != 3 || st.Lanes[ferry.LaneTelemetry].InFlight != 3 {
		t.Fatalf("after compaction: %+v", st.Lanes[ferry.LaneTelemetry])
	}
	if err := appendWait(t, b, scan("new", t0, 1)); err != nil {
		t.Fatal(err)
	}
	fresh := next(t, b, 10, 1<<20)
	if len(fresh) != 1 || fresh[0].Seq != keep[2].Seq+1 {
		t.Fatalf("after compaction Next gave %v, want [%d]", seqs(fresh), keep[2].Seq+1)
	}
	if err := b.Ack(append(keep, fresh...)...); err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	b.Close()
	b2 := openT(t, dir, testConfig(), Options{Now: clk.Now})
	if st := b2.Stats(); st.Lanes[ferry.LaneTelemetry].Records != 0 {
		t.Fatalf("after reopen: %+v", st.Lanes[ferry.LaneTelemetry])
	}
	var got string
	b2.ForEach("rules", func(k, v []byte) error { got = string(k) + "=" + string(v); return nil })
	if got != "k=v" {
		t.Fatalf("state after compaction: %q", got)
	}
	t.Logf("peak %d bytes, after compaction %d", peak, after)
}
