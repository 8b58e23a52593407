package buffer

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
)

func keyed(key string, redelivered bool) ferry.Scan {
	s := scan("env", t0, 1)
	s.Key, s.Redelivered = key, redelivered
	return s
}

// storedScans counts the scans in the buffer (none in flight afterwards).
func storedScans(t *testing.T, b *Buffer) int {
	t.Helper()
	recs := drainAll(t, b)
	n := 0
	for _, r := range recs {
		if r.Lane == ferry.LaneTelemetry {
			n += len(decodeScans(t, r).Scans)
		}
	}
	b.Release(recs...)
	return n
}

func TestDedupeRedeliveries(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	cfg := testConfig()
	cfg.DedupeWindow = 10 * time.Minute
	b := openT(t, dir, cfg, Options{Now: clk.Now})
	dedup := func() int { return int(testutil.ToFloat64(b.m.deduplicated)) }

	steps := []struct {
		name        string
		key         string
		redelivered bool
		stored      bool
	}{
		{"first delivery", "k1", false, true},
		{"redelivery of a committed key", "k1", true, false},
		{"redelivery of an unknown key", "k2", true, true},
		{"redelivery of that one", "k2", true, false},
		{"a new message with a known key", "k1", false, true},
		{"no key", "", true, true},
	}
	want := 0
	wantDedup := 0
	for _, st := range steps {
		if err := appendWait(t, b, keyed(st.key, st.redelivered)); err != nil {
			t.Fatalf("%s: Done(%v), want nil", st.name, err)
		}
		if st.stored {
			want++
		} else {
			wantDedup++
		}
		if got := storedScans(t, b); got != want {
			t.Fatalf("%s: %d scans stored, want %d", st.name, got, want)
		}
		if got := dedup(); got != wantDedup {
			t.Fatalf("%s: deduplicated_total %d, want %d", st.name, got, wantDedup)
		}
	}
	b.Close()

	// The keys survive a restart (a crash between commit and PUBACK).
	b = openT(t, dir, cfg, Options{Now: clk.Now})
	if err := appendWait(t, b, keyed("k1", true)); err != nil {
		t.Fatal(err)
	}
	if got := storedScans(t, b); got != want {
		t.Fatalf("after restart: %d scans stored, want %d (redelivery dropped)", got, want)
	}
	// Past the window a key is forgotten, and its chunk deleted.
	clk.Add(11 * time.Minute)
	if err := appendWait(t, b, keyed("k1", true)); err != nil {
		t.Fatal(err)
	}
	if got := storedScans(t, b); got != want+1 {
		t.Fatalf("past the window: %d scans stored, want %d", got, want+1)
	}
	clk.Add(11 * time.Minute)
	flush(t, b)
	b.Close()
	if b.w.dd.keys != 0 || len(b.w.dd.seen) != 0 {
		t.Fatalf("after the window: %d keys in chunks, %d in memory, want 0", b.w.dd.keys, len(b.w.dd.seen))
	}
	b = openT(t, dir, cfg, Options{Now: clk.Now})
	b.Close()
	if n := len(b.w.dd.chunks) - b.w.dd.head; n != 0 {
		t.Fatalf("%d dedupe chunks left in the file, want 0", n)
	}
}

func TestDedupeBoundedKeys(t *testing.T) {
	cfg := testConfig()
	b := openT(t, t.TempDir(), cfg, Options{DedupeMaxKeys: 10})
	for i := 0; i < 25; i++ {
		if err := appendWait(t, b, keyed(fmt.Sprintf("k%d", i), false)); err != nil {
			t.Fatal(err)
		}
	}
	b.Close()
	if b.w.dd.keys > 10 || len(b.w.dd.seen) > 10 {
		t.Fatalf("%d keys kept (%d in memory), want at most 10", b.w.dd.keys, len(b.w.dd.seen))
	}
	// The newest are kept: k24 is known, k0 is not.
	if !b.w.dd.known(digest("k24"), b.now().UnixNano()) || b.w.dd.known(digest("k0"), b.now().UnixNano()) {
		t.Fatal("eviction did not keep the newest keys")
	}
}

func TestDedupeDisabled(t *testing.T) {
	cfg := testConfig()
	cfg.DedupeWindow = 0
	b := openT(t, t.TempDir(), cfg, Options{})
	for i := 0; i < 2; i++ {
		if err := appendWait(t, b, keyed("k", i == 1)); err != nil {
			t.Fatal(err)
		}
	}
	if got := storedScans(t, b); got != 2 {
		t.Fatalf("%d scans stored with dedupe off, want 2", got)
	}
}

// Every commit's keys survive a restart, not only the last commit's: each
// commit writes its keys under a chunk number of its own. (The chunk
// number did not advance after a commit, so each commit overwrote the
// previous one's chunk on disk: after a kill -9, redeliveries of messages
// committed before the last commit were stored again. Group commits of a
// redelivered burst, acked after several commits, showed it in the kill
// storm.)
func TestDedupeKeysOfEveryCommitSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	b := openT(t, dir, cfg, Options{})
	const commits = 5
	for i := range commits {
		if err := appendWait(t, b, keyed(fmt.Sprintf("k%d", i), false)); err != nil {
			t.Fatal(err)
		}
	}
	stored := storedScans(t, b)
	if stored != commits {
		t.Fatalf("%d scans stored, want %d", stored, commits)
	}
	b.Close()

	b = openT(t, dir, cfg, Options{})
	for i := range commits {
		if err := appendWait(t, b, keyed(fmt.Sprintf("k%d", i), true)); err != nil {
			t.Fatal(err)
		}
	}
	if got := storedScans(t, b); got != stored {
		t.Errorf("after a restart, redeliveries of %d committed messages stored %d scans again", commits, got-stored)
	}
	if got := int(testutil.ToFloat64(b.m.deduplicated)); got != commits {
		t.Errorf("deduplicated_total %d after the restart, want %d", got, commits)
	}
}
