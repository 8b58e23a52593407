package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
)

var (
	sampleFileOnce sync.Once
	sampleFile     []byte
	sampleFileErr  error
)

// sampleBufferFile returns the bytes of a small valid buffer file: both
// lanes, dedupe keys, state, a few pages.
func sampleBufferFile() ([]byte, error) {
	sampleFileOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ferry-buffer-fuzz")
		if err != nil {
			sampleFileErr = err
			return
		}
		defer os.RemoveAll(dir)
		// A fixed clock and one commit per step make the file the same on
		// every run, so that a failing input reproduces.
		clk := newClock(t0)
		b, err := Open(dir, testConfig(), Options{Gateway: "gw", Now: clk.Now})
		if err != nil {
			sampleFileErr = err
			return
		}
		tb := &fakeTB{}
		for i := 0; i < 40; i++ {
			s := scan(fmt.Sprintf("d%d", i%4), t0, 20)
			s.Key = fmt.Sprint(i)
			appendWait(tb, b, s)
		}
		b.AppendAlert(fixedAlert(1))
		b.Flush(context.Background())
		b.Put("rules", []byte("k"), []byte("v"))
		b.Close()
		// bbolt's hash map free list places pages in map order: copy the
		// file in one transaction into a fresh one, which is laid out the
		// same way every time.
		src, err := bolt.Open(filepath.Join(dir, fileName), 0o600, nil)
		if err != nil {
			sampleFileErr = err
			return
		}
		defer src.Close()
		dst, err := bolt.Open(filepath.Join(dir, "copy.db"), 0o600, &bolt.Options{NoFreelistSync: true})
		if err != nil {
			sampleFileErr = err
			return
		}
		if sampleFileErr = bolt.Compact(dst, src, 0); sampleFileErr != nil {
			return
		}
		dst.Close()
		sampleFile, sampleFileErr = os.ReadFile(filepath.Join(dir, "copy.db"))
	})
	return sampleFile, sampleFileErr
}

// FuzzRawFile: the checked walk never panics, whatever the file holds,
// strict or salvaging.
func FuzzRawFile(f *testing.F) {
	data, err := sampleBufferFile()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add(data[:len(data)/2])
	f.Add(make([]byte, 8192))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, salvage := range []bool{false, true} {
			rf, err := openRaw(bytes.NewReader(data), int64(len(data)), salvage)
			if err != nil {
				continue
			}
			_ = rf.walk(func(string, []byte, []byte) error { return nil })
		}
	})
}

// FuzzCheckedFileOpensInBolt damages a valid buffer file at a few places.
// Whenever the checked walk accepts the result, bbolt must open it (which
// rebuilds the free list by walking the tree, and panics in a goroutine of
// its own on damage), read every record, pass its own consistency check
// and close it, without a panic: that is the promise Open relies on.
func FuzzCheckedFileOpensInBolt(f *testing.F) {
	base, err := sampleBufferFile()
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0x40, 0, 7})
	f.Add([]byte{0x10, 0x10, 0, 0, 0xff, 0x20, 0x30, 0, 0, 1})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, muts []byte) {
		data := bytes.Clone(base)
		// Each 5 bytes: a little-endian offset (mod the size) and a byte.
		for ; len(muts) >= 5; muts = muts[5:] {
			off := binary.LittleEndian.Uint32(muts) % uint32(len(data))
			data[off] = muts[4]
		}
		path := filepath.Join(dir, "buffer.db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := checkFile(path, (&loaded{}).visit); err != nil {
			return
		}
		db, err := openBolt(path, 0)
		if err != nil {
			return // a clean error is fine
		}
		defer db.Close()
		readAll := func(tx *bolt.Tx) error {
			return tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
				if bk == nil {
					return nil
				}
				return walkBucket(bk)
			})
		}
		if err := db.View(readAll); err != nil {
			t.Fatal(err)
		}
		// A write: allocation from the rebuilt free list, a spill, a
		// commit.
		err = db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket(laneBuckets[ferry.LaneTelemetry])
			if bk == nil {
				return nil
			}
			if k, _ := bk.Cursor().First(); k != nil {
				if err := bk.Delete(k); err != nil {
					return err
				}
			}
			return bk.Put([]byte("zzzzzzzz"), bytes.Repeat([]byte{1}, 3000))
		})
		if err != nil {
			t.Fatalf("write to an accepted file: %v", err)
		}
		// bbolt's own check asserts on the page headers of both meta
		// pages, which bbolt itself otherwise ignores.
		for id, off := range []int{0, 4096} {
			if binary.LittleEndian.Uint64(data[off:]) != uint64(id) || binary.LittleEndian.Uint16(data[off+8:]) != metaPageFlag {
				return
			}
		}
		err = db.View(func(tx *bolt.Tx) error {
			for e := range tx.Check() {
				return e
			}
			return nil
		})
		if err != nil {
			t.Fatalf("checked walk accepted a file bbolt finds inconsistent: %v", err)
		}
	})
}

func walkBucket(bk *bolt.Bucket) error {
	return bk.ForEach(func(k, v []byte) error {
		if v == nil {
			if sub := bk.Bucket(k); sub != nil {
				return walkBucket(sub)
			}
		}
		return nil
	})
}

// FuzzOpenDamagedFile runs Open itself on damaged files: it must succeed
// (quarantining the file when it must), and the buffer must then work.
func FuzzOpenDamagedFile(f *testing.F) {
	base, err := sampleBufferFile()
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{})
	f.Add([]byte{0, 0x20, 0, 0, 7})
	f.Add([]byte{0x10, 0x10, 0, 0, 0xff, 0x20, 0x30, 0, 0, 1})
	f.Add([]byte{0x42, 0x80, 0x30, 0x30, 0x30})
	f.Fuzz(func(t *testing.T, muts []byte) {
		data := bytes.Clone(base)
		for ; len(muts) >= 5; muts = muts[5:] {
			off := binary.LittleEndian.Uint32(muts) % uint32(len(data))
			data[off] = muts[4]
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, fileName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		clk := newClock(t0)
		b, err := Open(dir, testConfig(), Options{Gateway: "gw", Now: clk.Now})
		if err != nil {
			t.Fatalf("Open of a damaged file: %v", err)
		}
		defer b.Close()
		if err := appendWait(t, b, scan("d", t0, 3)); err != nil {
			t.Fatalf("append after Open: %v", err)
		}
		recs := drainAll(t, b)
		if err := b.Ack(recs...); err != nil {
			t.Fatal(err)
		}
		if err := b.Put("rules", []byte("x"), []byte("y")); err != nil {
			t.Fatalf("Put after Open: %v", err)
		}
	})
}
