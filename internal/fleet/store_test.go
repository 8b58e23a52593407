package fleet

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestStorePrune: saving the state removes the staged bundles it no
// longer names and the leftovers of cut-short stages and removals; the
// ones it names stay whole.
func TestStorePrune(t *testing.T) {
	s := mustStore(t)
	var hashes []string
	for i := range 3 {
		m, err := Merge(crashBundle(uint64(i+1)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stage(m); err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, m.Hash)
	}
	bundles := filepath.Join(s.dir, "bundles")
	for _, left := range []string{".tmp-123", ".tmp-gone-abc"} {
		if err := os.MkdirAll(filepath.Join(bundles, left, "devices.d"), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveState(State{LKG: &Applied{Hash: hashes[0], Revision: 1}, Last: &Applied{Hash: hashes[2], Revision: 3}}); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(bundles)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, e := range entries {
		got[e.Name()] = true
	}
	if len(got) != 2 || !got[hashes[0]] || !got[hashes[2]] {
		t.Fatalf("bundles left: %v, want %s and %s", got, hashes[0], hashes[2])
	}
	for i, h := range []string{hashes[0], hashes[2]} {
		if gen, err := testutil.OneGeneration(s.Dir(h), crashFiles); err != nil || gen != uint64(2*i+1) {
			t.Errorf("%s: generation %d, %v", h, gen, err)
		}
	}
	st, err := s.State()
	if err != nil || st.LKG.Hash != hashes[0] || st.Last.Revision != 3 {
		t.Fatalf("state read back: %+v %v", st, err)
	}
}
