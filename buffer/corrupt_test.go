package buffer

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/codec"
)

// populate writes a buffer with telemetry of many devices, some alerts and
// state, closes it and returns the highest telemetry sequence.
func populate(t *testing.T, dir string) (records int, lastSeq uint64) {
	t.Helper()
	b := openT(t, dir, testConfig(), Options{})
	for c := 0; c < 10; c++ {
		var scans []ferry.Scan
		for i := 0; i < 30; i++ {
			scans = append(scans, scan(fmt.Sprintf("dev%02d", i), t0, 40))
		}
		appendBatch(t, b, scans)
	}
	for i := 0; i < 5; i++ {
		b.AppendAlert(fixedAlert(i))
	}
	if err := b.Put("rules", []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	st := b.Stats()
	b.mu.Lock()
	tel := &b.lanes[ferry.LaneTelemetry]
	lastSeq = tel.ents[len(tel.ents)-1].seq
	b.mu.Unlock()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	return st.Lanes[0].Records + st.Lanes[1].Records, lastSeq
}

// reachablePages lists the pages the tree of the file at path uses, except
// the meta pages and the root bucket's page.
func reachablePages(t *testing.T, path string) []uint64 {
	t.Helper()
	f, err := checkFile(path, func(string, []byte, []byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for id := uint64(2); id < f.meta.hwm; id++ {
		if f.reachable[id/64]&(1<<(id%64)) != 0 && id != f.meta.root {
			ids = append(ids, id)
		}
	}
	return ids
}

// partialCut returns the largest length, in whole pages, that cuts the file
// at path so that some of its records can still be read and some cannot.
// Where bbolt put the root and branch pages varies from run to run (a cut
// that loses the root page leaves nothing to walk), so a fixed fraction of
// the file would make the test depend on the layout.
func partialCut(t *testing.T, path string) int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := openRaw(bytes.NewReader(data), int64(len(data)), false)
	if err != nil {
		t.Fatal(err)
	}
	count := func(f *rawFile) int {
		n := 0
		_ = f.walk(func(path string, _, _ []byte) error {
			for _, lb := range laneBuckets {
				if path == string(lb) {
					n++
				}
			}
			return nil
		})
		return n
	}
	total := count(whole)
	ps := int64(whole.pageSize)
	for cut := int64(whole.meta.hwm) - 1; cut > 2; cut-- {
		f, err := openRaw(bytes.NewReader(data[:cut*ps]), cut*ps, true)
		if err != nil {
			continue // the root page is gone
		}
		if n := count(f); n > 0 && n < total {
			return cut * ps
		}
	}
	t.Fatalf("no truncation of the %d pages leaves some but not all of %d records", whole.meta.hwm, total)
	return 0
}

func quarantined(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, fileName+corruptInfix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestCorruptFileIsQuarantined(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(t *testing.T, path string)
		salvage bool // some records can be salvaged
	}{
		{"truncated", func(t *testing.T, path string) {
			if err := os.Truncate(path, partialCut(t, path)); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"random bytes in pages", func(t *testing.T, path string) {
			ids := reachablePages(t, path)
			rng := rand.New(rand.NewPCG(7, 8))
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			page := make([]byte, 4096)
			for _, i := range rng.Perm(len(ids))[:3] {
				for j := range page {
					page[j] = byte(rng.Uint32())
				}
				if _, err := f.WriteAt(page, int64(ids[i])*4096); err != nil {
					t.Fatal(err)
				}
			}
		}, true},
		{"a page points to itself", func(t *testing.T, path string) {
			// Make the root bucket's page a branch whose only child is
			// itself: bbolt would loop or panic.
			f, err := checkFile(path, func(string, []byte, []byte) error { return nil })
			if err != nil {
				t.Fatal(err)
			}
			root := f.meta.root
			page := make([]byte, 4096)
			le := func(b []byte, v uint64, n int) {
				for i := 0; i < n; i++ {
					b[i] = byte(v >> (8 * i))
				}
			}
			le(page[0:], root, 8)
			le(page[8:], branchPageFlag, 2)
			le(page[10:], 1, 2)
			le(page[16:], 16, 4) // pos
			le(page[20:], 1, 4)  // ksize
			le(page[24:], root, 8)
			page[32] = 'a'
			fh, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			if _, err := fh.WriteAt(page, int64(root)*4096); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"both meta pages", func(t *testing.T, path string) {
			fh, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			if _, err := fh.WriteAt(bytes.Repeat([]byte{0xA5}, 8192), 0); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"random file", func(t *testing.T, path string) {
			data := make([]byte, 64<<10)
			rng := rand.New(rand.NewPCG(1, 1))
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"tiny file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("not a bbolt file"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			total, lastSeq := populate(t, dir)
			path := filepath.Join(dir, fileName)
			tc.damage(t, path)

			var alerts alertLog
			b := openT(t, dir, testConfig(), Options{Alert: alerts.add})
			if q := quarantined(t, dir); len(q) != 1 {
				t.Fatalf("quarantined files %v, want one", q)
			}
			if got := alerts.rules(); !slices.Equal(got, []string{RuleQuarantined + ":raised"}) {
				t.Fatalf("alerts %v, want %s raised", got, RuleQuarantined)
			}
			// Every salvaged record is whole, and the quarantine alert is
			// stored in the alerts lane (it is not one of the salvaged).
			flush(t, b)
			st := b.Stats()
			var sawAlert bool
			salvaged := 0
			recs := drainAll(t, b)
			for _, r := range recs {
				if r.Lane == ferry.LaneTelemetry {
					decodeScans(t, r)
					salvaged++
					continue
				}
				if decodeAlert(t, r).Rule == RuleQuarantined {
					sawAlert = true
					continue
				}
				salvaged++
			}
			if !sawAlert {
				t.Fatal("the quarantine alert is not in the alerts lane")
			}
			if tc.salvage && (salvaged == 0 || salvaged >= total) {
				t.Fatalf("salvaged %d of %d records, want some but not all", salvaged, total)
			}
			if !tc.salvage && salvaged != 0 {
				t.Fatalf("salvaged %d records from a file with nothing readable", salvaged)
			}
			// The fresh file works, ids go on above the old ones.
			if err := appendWait(t, b, scan("new", t0, 1)); err != nil {
				t.Fatal(err)
			}
			more := drainAll(t, b)
			if len(more) != 1 || more[0].Seq <= lastSeq {
				t.Fatalf("new record seqs %v, want one above %d", seqs(more), lastSeq)
			}
			b.Release(recs...)
			b.Close()
			// No loop: the next start opens the fresh file as it is.
			alerts = alertLog{}
			b2 := openT(t, dir, testConfig(), Options{Alert: alerts.add})
			if q := quarantined(t, dir); len(q) != 1 {
				t.Fatalf("after restart: quarantined files %v, want still one", q)
			}
			if got := b2.Stats(); got.Lanes[1].Records != st.Lanes[1].Records+1 {
				t.Fatalf("after restart: %d telemetry records, want %d", got.Lanes[1].Records, st.Lanes[1].Records+1)
			}
		})
	}
}

func TestDamagedRecordIsDropped(t *testing.T) {
	dir := t.TempDir()
	total, _ := populate(t, dir)
	path := filepath.Join(dir, fileName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Find one telemetry record's value in the file and flip a bit of its
	// data: the structure is intact, the record's checksum is not.
	var at int
	_, err = checkFile(path, func(p string, k, v []byte) error {
		if p == "telemetry" && at == 0 {
			at = bytes.Index(data, v)
		}
		return nil
	})
	if err != nil || at <= 0 {
		t.Fatalf("find a record: %v, offset %d", err, at)
	}
	data[at+valueHeader+3] ^= 0x10
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var alerts alertLog
	b := openT(t, dir, testConfig(), Options{Alert: alerts.add})
	if q := quarantined(t, dir); len(q) != 0 {
		t.Fatalf("quarantined %v for one damaged record", q)
	}
	// populate stored 5 alerts; the buffer's own dropping alert may be
	// stored already too.
	st := b.Stats()
	if got, want := st.Lanes[ferry.LaneTelemetry].Records, total-5-1; got != want {
		t.Fatalf("%d telemetry records, want %d", got, want)
	}
	if got := st.Lanes[ferry.LaneAlerts].Records; got != 5 && got != 6 {
		t.Fatalf("%d alert records, want the 5 stored (and perhaps the buffer's own)", got)
	}
	if got := dropped(b, ferry.LaneTelemetry, reasonCorrupt); got != 1 {
		t.Fatalf("dropped{telemetry,corrupt} = %d, want 1", got)
	}
	flush(t, b)
	if got := alerts.rules(); !slices.Equal(got, []string{RuleDropping + ":raised"}) {
		t.Fatalf("alerts %v, want %s raised", got, RuleDropping)
	}
	b.Close()
	in, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if in.DamagedRecords != 0 || in.Damaged != nil {
		t.Fatalf("after Open the damaged record should be gone: %d, %v", in.DamagedRecords, in.Damaged)
	}
}

func TestSalvagedRecordsKeepTheirIDs(t *testing.T) {
	dir := t.TempDir()
	populate(t, dir)
	path := filepath.Join(dir, fileName)
	// Remember every record's id and data, then damage one page.
	want := map[uint64][]byte{}
	_, err := checkFile(path, func(p string, k, v []byte) error {
		if p == "telemetry" {
			_, data, err := parseValue(k, v)
			if err != nil {
				return err
			}
			want[uint64(k[0])<<56|uint64(k[1])<<48|uint64(k[2])<<40|uint64(k[3])<<32|uint64(k[4])<<24|uint64(k[5])<<16|uint64(k[6])<<8|uint64(k[7])] = bytes.Clone(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ids := reachablePages(t, path)
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt(bytes.Repeat([]byte{0xFF}, 4096), int64(ids[len(ids)/2])*4096); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	b := openT(t, dir, testConfig(), Options{})
	n := 0
	for _, r := range drainAll(t, b) {
		if r.Lane != ferry.LaneTelemetry {
			continue
		}
		old, ok := want[r.Seq]
		if !ok || !bytes.Equal(old, r.Data) {
			t.Fatalf("salvaged record %s does not match the original", r.ID)
		}
		if _, err := codec.DecodeTelemetry(r.Data); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n == 0 || n == len(want) {
		t.Fatalf("salvaged %d of %d", n, len(want))
	}
	// The rule engine's state was salvaged too.
	var state []string
	b.ForEach("rules", func(k, v []byte) error { state = append(state, string(k)+"="+string(v)); return nil })
	t.Logf("salvaged %d of %d telemetry records; state %v", n, len(want), state)
}
