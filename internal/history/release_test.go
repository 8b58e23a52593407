package history

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/boltmap"
	ftestutil "github.com/ferry-edge/ferry/internal/testutil"
)

// TestFoldReleasesMappedPages: the pages queries read through bbolt's
// mapping (two hours of raw samples of 100 points: megabytes) leave the
// process's RSS at the next fold, and queries after it still read the
// samples stored.
func TestFoldReleasesMappedPages(t *testing.T) {
	if !boltmap.Supported {
		t.Skip("the release does nothing on this platform")
	}
	dir := t.TempDir()
	cfg := testConfig()
	c := &clock{t0}
	s := open(t, dir, cfg, c)
	defer s.Close()
	const points, span = 100, 2 * time.Hour
	pts := map[string]ferry.Value{}
	for at := t0; at.Before(t0.Add(span)); at = at.Add(time.Second) {
		for p := range points {
			pts[fmt.Sprintf("p%03d", p)] = ferry.FloatValue(float64(at.Unix() % 1000))
		}
		s.Add(scan("d", at, pts))
		if at.Second() == 0 && at.Minute()%10 == 0 {
			c.t = at
			if err := s.commit(true); err != nil {
				t.Fatal(err)
			}
		}
	}
	c.t = t0.Add(span)
	if err := s.commit(true); err != nil {
		t.Fatal(err)
	}
	query := func() {
		t.Helper()
		for p := range points {
			r, err := s.Query(Query{Device: "d", Point: fmt.Sprintf("p%03d", p), From: t0, To: t0.Add(span), Step: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Points) != int(span/time.Second) {
				t.Fatalf("point %d: %d raw samples, want %d", p, len(r.Points), int(span/time.Second))
			}
		}
	}
	path := filepath.Join(dir, FileName)
	query()
	read := ftestutil.MappedRSS(t, 0)[path]
	if read < 4<<20 {
		t.Fatalf("%.2f MiB of %s mapped after the queries: the test does not show a release", read/(1<<20), path)
	}
	s.Add(scan("d", c.t, pts))
	if err := s.commit(true); err != nil {
		t.Fatal(err)
	}
	after := ftestutil.MappedRSS(t, 0)[path]
	t.Logf("file %.1f MiB; mapped %.1f MiB after the queries, %.2f MiB after the next fold", float64(s.FileSize())/(1<<20), read/(1<<20), after/(1<<20))
	if after > 1<<20 {
		t.Fatalf("%.2f MiB still mapped after a fold", after/(1<<20))
	}
	query()
}
