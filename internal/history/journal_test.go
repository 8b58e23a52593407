package history

import (
	"math"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
)

// TestJournalFoldAcrossRestart: samples of the same minutes spread over
// folded commits, journal commits and a restart (with the journal
// replayed) are each counted once, in the rollups and in raw, before
// and after the next fold.
func TestJournalFoldAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t0}
	s := open(t, dir, testConfig(), c)
	add := func(s *Store, from, to int) {
		for i := from; i < to; i++ {
			s.Add(scan("press", t0.Add(time.Duration(i)*time.Second), map[string]ferry.Value{"p": ferry.FloatValue(float64(i))}))
		}
	}
	commit := func(s *Store, advance time.Duration) {
		t.Helper()
		c.t = c.t.Add(advance)
		if err := s.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	check := func(s *Store, what string, n int) {
		t.Helper()
		// Three minutes of one sample a second: 0..179, the first n.
		roll, err := s.Query(Query{Device: "press", Point: "p", From: t0, To: t0.Add(3 * time.Minute), Step: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		var count uint32
		sum := 0.0
		for _, p := range roll.Points {
			count += p.Count
			sum += p.Mean * float64(p.Count)
		}
		raw, _ := s.Query(Query{Device: "press", Point: "p", From: t0, To: t0.Add(3 * time.Minute), Step: time.Second})
		wantSum := float64(n*(n-1)) / 2
		if int(count) != n || math.Abs(sum-wantSum) > 1e-6 || len(raw.Points) != n {
			t.Fatalf("%s: rollups count %d sum %v, %d raw; want %d, %v, %d", what, count, sum, len(raw.Points), n, wantSum, n)
		}
		for i, p := range raw.Points {
			if p.Last != float64(i) {
				t.Fatalf("%s: raw sample %d is %v", what, i, p.Last)
			}
		}
	}
	add(s, 0, 40)
	commit(s, time.Second) // journal
	check(s, "journaled", 40)
	add(s, 40, 70)
	commit(s, 2*time.Minute) // fold (minute 1 is open: folded partly)
	check(s, "folded", 70)
	s.wmu.RLock()
	if s.jBytes != 0 {
		t.Errorf("journal holds %d bytes after a fold", s.jBytes)
	}
	s.wmu.RUnlock()
	add(s, 70, 100)
	commit(s, time.Second) // journal again: minute 1 is in both
	check(s, "folded and journaled", 100)
	add(s, 100, 110) // never committed: lost in the crash below
	s.Close()

	s = open(t, dir, testConfig(), c)
	defer s.Close()
	check(s, "after restart, journal replayed", 100)
	add(s, 100, 180)
	commit(s, time.Second)
	check(s, "after restart, journaled", 180)
	commit(s, 2*time.Minute)
	check(s, "after restart, folded", 180)
	if got := s.Bytes(); got <= 0 {
		t.Errorf("bytes %d", got)
	}
}

// TestReadOnlyOlderFile: the file of a ferry from before the raw2 layout,
// opened read-only (ferry history on a stopped gateway), answers raw
// queries with what it has (nothing raw) instead of failing.
func TestReadOnlyOlderFile(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t0.Add(time.Minute)}
	s := open(t, dir, testConfig(), c)
	s.Add(scan("d", t0, map[string]ferry.Value{"p": ferry.FloatValue(7)}))
	if err := s.commit(true); err != nil {
		t.Fatal(err)
	}
	// Make it look like the older layout: raw samples in "raw", none in
	// "raw2".
	if err := s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bktRaw); err != nil {
			return err
		}
		_, err := tx.CreateBucket(bktRawV1)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	ro, err := Open(dir, testConfig(), Options{ReadOnly: true, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	raw, err := ro.Query(Query{Device: "d", Point: "p", From: t0, To: t0.Add(time.Minute), Step: time.Second})
	if err != nil || len(raw.Points) != 0 {
		t.Errorf("raw: %v, %+v", err, raw.Points)
	}
	roll, err := ro.Query(Query{Device: "d", Point: "p", From: t0, To: t0.Add(time.Minute), Step: time.Minute})
	if err != nil || len(roll.Points) != 1 || roll.Points[0].Last != 7 {
		t.Errorf("rollups: %v, %+v", err, roll.Points)
	}
}
