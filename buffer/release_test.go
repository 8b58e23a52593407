package buffer

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/boltmap"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestReleaseMappedPages: records read through bbolt's mapping (sent,
// then copied into the retention when acknowledged) leave the process's
// RSS after the next commit; with the release spaced an hour apart (the
// control) they stay mapped. The records read after the releases are
// still the records stored.
func TestReleaseMappedPages(t *testing.T) {
	if !boltmap.Supported {
		t.Skip("the release does nothing on this platform")
	}
	const scans, samples = 3000, 200
	run := func(t *testing.T, every time.Duration) float64 {
		dir := t.TempDir()
		cfg := testConfig()
		cfg.RetainAcked = time.Hour
		b := openT(t, dir, cfg, Options{releaseEvery: every})
		for i := range scans {
			b.AppendScan(scan("d1", t0.Add(time.Duration(i)*time.Second), samples))
			if i%200 == 199 {
				flush(t, b)
			}
		}
		flush(t, b)
		var n int
		for {
			recs := drainAll(t, b)
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				if tel := decodeScans(t, r); len(tel.Scans) == 0 {
					t.Fatalf("record %s holds no scan", r.ID)
				}
			}
			marks := make([]uint64, len(recs))
			for i := range marks {
				marks[i] = uint64(n + i + 1)
			}
			n += len(recs)
			if err := b.AckKeep(recs, marks); err != nil {
				t.Fatal(err)
			}
			flush(t, b)
		}
		ks := kept(b)
		if len(ks) != n {
			t.Fatalf("retained %d records, want %d", len(ks), n)
		}
		// The file has its size now (its growth remapped it, which
		// unmapped what the acks had read): read every retained record
		// through the mapping, as the uplink's check of the upstream
		// does, then commit once more.
		for _, k := range ks {
			got, err := b.ReadKept(k.lane, []uint64{k.seq})
			if err != nil || len(got) != 1 || len(decodeScans(t, got[0]).Scans) == 0 {
				t.Fatalf("retained record %d: %v, %v", k.seq, got, err)
			}
		}
		if err := appendWait(t, b, scan("d1", t0, 1)); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "buffer.db")
		size := float64(b.fileSize())
		mapped := testutil.MappedRSS(t, 0)[path]
		if every < time.Minute {
			testutil.WaitFor(t, 5*time.Second, "the file's pages released", func() bool {
				mapped = testutil.MappedRSS(t, 0)[path]
				return mapped < 1<<20
			})
			// Read after the release: still the records stored.
			for _, k := range ks[:10] {
				got, err := b.ReadKept(k.lane, []uint64{k.seq})
				if err != nil || len(got) != 1 || len(decodeScans(t, got[0]).Scans) == 0 {
					t.Fatalf("retained record %d after the release: %v, %v", k.seq, got, err)
				}
			}
		}
		t.Logf("release every %v: %d records, file %.1f MiB, %.2f MiB of it mapped", every, n, size/(1<<20), mapped/(1<<20))
		return mapped
	}
	t.Run("released", func(t *testing.T) { run(t, time.Nanosecond) })
	t.Run("control", func(t *testing.T) {
		if mapped := run(t, time.Hour); mapped < 4<<20 {
			t.Fatalf("only %.2f MiB mapped without releases: the test does not show what the release does", mapped/(1<<20))
		}
	})
}
