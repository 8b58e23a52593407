package buffer

import (
	"bytes"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
)

// FuzzParseMarkKey: a key parses only when it is a mark's, and then
// encodes back to itself.
func FuzzParseMarkKey(f *testing.F) {
	f.Add(markKey(nil, ferry.LaneTelemetry, 42, "cloud"))
	f.Add(markKey(nil, ferry.LaneAlerts, 1<<63, "a"))
	f.Add([]byte{})
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, 1, 'x'})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, k []byte) {
		lane, seq, name, ok := parseMarkKey(k)
		if !ok {
			if len(k) > keptKeySize && int(k[0]) < ferry.NumLanes {
				t.Fatalf("%x refused", k)
			}
			return
		}
		if back := markKey(nil, lane, seq, name); !bytes.Equal(back, k) {
			t.Fatalf("%x parsed to %v %d %q, encodes to %x", k, lane, seq, name, back)
		}
	})
}

// FuzzOpenWithMarks: whatever keys the cursors' bucket holds, Open
// succeeds, and each consumer is offered a subset of the stored records.
func FuzzOpenWithMarks(f *testing.F) {
	f.Add(markKey(nil, ferry.LaneTelemetry, 1, "cloud"), markKey(nil, ferry.LaneTelemetry, 1, "scada"))
	f.Add(markKey(nil, ferry.LaneAlerts, 0, "gone"), []byte{9})
	f.Add([]byte{0}, markKey(nil, ferry.LaneTelemetry, 1<<62, "cloud"))
	f.Fuzz(func(t *testing.T, k1, k2 []byte) {
		dir := t.TempDir()
		opts := Options{Consumers: []string{"cloud", "scada"}}
		b := openT(t, dir, testConfig(), opts)
		fill(t, b, 3)
		recs := drainCursor(t, cursorT(t, b, "cloud"))
		b.Close()
		// Plant the keys, with the first record's real marks beside them.
		db, err := bolt.Open(b.path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			bk, err := tx.Bucket(bucketState).CreateBucketIfNotExists([]byte(cursorBucket))
			if err != nil {
				return err
			}
			for _, k := range [][]byte{k1, k2, markKey(nil, recs[0].Lane, recs[0].Seq, "cloud")} {
				if len(k) == 0 || len(k) > bolt.MaxKeySize {
					continue
				}
				if err := bk.Put(k, markValue); err != nil {
					return err
				}
			}
			return nil
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		b = openT(t, dir, testConfig(), opts)
		stored := b.Stats().Lanes
		for _, name := range opts.Consumers {
			cs := cursorT(t, b, name).Stats()
			for l := range cs.Lanes {
				if cs.Lanes[l].Records < 0 || cs.Lanes[l].Records > stored[l].Records {
					t.Fatalf("%s has %d pending in lane %d, %d stored", name, cs.Lanes[l].Records, l, stored[l].Records)
				}
			}
			got := drainCursor(t, cursorT(t, b, name))
			if len(got) != cs.Pending() {
				t.Fatalf("%s offered %d, pending %d", name, len(got), cs.Pending())
			}
		}
		if cursorT(t, b, "cloud").Stored(recs[0].Lane, recs[0].Seq) {
			t.Fatalf("cloud's mark of %s was not applied", recs[0].ID)
		}
	})
}
