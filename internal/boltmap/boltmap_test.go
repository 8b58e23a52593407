package boltmap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry/internal/testutil"
)

const (
	values    = 8192
	valueSize = 2000 // two to a 4 KiB page, like the buffer's records
)

// fill writes values records of valueSize bytes, each holding its own
// index, and returns the open database.
func fill(t testing.TB) (*bolt.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for start := 0; start < values; start += 1024 {
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("r"))
			if err != nil {
				return err
			}
			for i := start; i < start+1024; i++ {
				if err := b.Put(key(i), value(i)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return db, path
}

func key(i int) []byte { return binary.BigEndian.AppendUint64(nil, uint64(i)) }

func value(i int) []byte {
	return bytes.Repeat(binary.BigEndian.AppendUint32(nil, uint32(i)), valueSize/4)
}

// readAll reads every record through the mapping and checks its bytes.
func readAll(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		i := 0
		return tx.Bucket([]byte("r")).ForEach(func(k, v []byte) error {
			if !bytes.Equal(k, key(i)) || !bytes.Equal(v, value(i)) {
				return fmt.Errorf("record %d: key %x, value %x…", i, k, v[:8])
			}
			i++
			return nil
		})
	})
}

// mustReadAll is readAll on the test's goroutine.
func mustReadAll(t testing.TB, db *bolt.DB) {
	t.Helper()
	if err := readAll(db); err != nil {
		t.Fatal(err)
	}
}

// repeat runs fn until stop is closed or fn fails, on a goroutine of wg.
func repeat(t *testing.T, wg *sync.WaitGroup, stop <-chan struct{}, fn func() error) {
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := fn(); err != nil {
				t.Error(err)
				return
			}
		}
	})
}

// TestReleaseDropsMappedPages: reading a 16 MB file through bbolt maps it
// into the process; Release takes it out, and what is read afterwards is
// still the file's bytes.
func TestReleaseDropsMappedPages(t *testing.T) {
	if !Supported {
		t.Skip("Release does nothing on this platform")
	}
	db, path := fill(t)
	mustReadAll(t, db)
	before := testutil.MappedRSS(t, 0)[path]
	if before < values*valueSize/2 {
		t.Fatalf("%.1f MiB of %s mapped after reading all of it: the test does not show a release", before/(1<<20), path)
	}
	if err := Release(db); err != nil {
		t.Fatal(err)
	}
	after := testutil.MappedRSS(t, 0)[path]
	t.Logf("mapped: %.1f MiB after reading the file, %.2f MiB after Release", before/(1<<20), after/(1<<20))
	if after > 256<<10 {
		t.Fatalf("%.2f MiB still mapped after Release", after/(1<<20))
	}
	mustReadAll(t, db)
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("r")).Put(key(values), value(values)) }); err != nil {
		t.Fatal(err)
	}
}

// TestReleaseWhileReadingAndWriting: releases racing with readers and a
// writer (which remaps the file as it grows) never show a reader anything
// but the records' bytes.
func TestReleaseWhileReadingAndWriting(t *testing.T) {
	db, _ := fill(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		repeat(t, &wg, stop, func() error { return readAll(db) })
	}
	repeat(t, &wg, stop, func() error { return Release(db) })
	// The writer grows the file past its mapping: bbolt maps it again
	// while releases and reads go on.
	for i := range 64 {
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("grow"))
			if err != nil {
				return err
			}
			for j := range 256 {
				if err := b.Put(key(i*256+j), value(j)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

// BenchmarkRelease: "mapped 16MB" is a release of a 16 MB file all of
// whose pages are mapped (the reads between two releases excluded from the
// timing); "then commit" is a release followed by a write transaction
// appending 20 records, whose tree path faults back in, against "commit
// only" without the release — without fsync, so that the difference is
// the page faults and not the disk. Together: what a release costs the
// buffer's writer once a second.
func BenchmarkRelease(b *testing.B) {
	b.Run("mapped 16MB", func(b *testing.B) {
		db, _ := fill(b)
		for range b.N {
			b.StopTimer()
			mustReadAll(b, db)
			b.StartTimer()
			if err := Release(db); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, release := range []bool{false, true} {
		name := "commit only"
		if release {
			name = "then commit"
		}
		b.Run(name, func(b *testing.B) {
			db, _ := fill(b)
			db.NoSync = true
			mustReadAll(b, db)
			next := values + 1
			b.ResetTimer()
			for range b.N {
				if release {
					if err := Release(db); err != nil {
						b.Fatal(err)
					}
				}
				err := db.Update(func(tx *bolt.Tx) error {
					bk := tx.Bucket([]byte("r"))
					for range 20 {
						if err := bk.Put(key(next), value(next)); err != nil {
							return err
						}
						next++
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
