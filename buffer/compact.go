package buffer

import (
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Compaction. bbolt never shrinks its file: pages freed by acks and drops
// are reused, but after a long outage has been drained the file keeps its
// peak size. When the backlog is small and most of the file is free, the
// writer copies the live data into a fresh file (bbolt.Compact), fsyncs it
// and renames it over buffer.db. Appends wait in the queue meanwhile (the
// copy is small by construction); Next waits for the swap.
//
// A crash during compaction leaves either the old file (and a stale
// buffer.db.compact, removed at the next Open) or the new one: the rename is
// atomic and the directory is fsync'd after it.
const (
	// compactMinFile: smaller files are left alone.
	compactMinFile = 4 << 20
	// compactMaxBacklog bounds the data copied (and so the pause).
	compactMaxBacklog = 64 << 20
)

// compactWanted reports whether a file of size bytes holding live bytes of
// records should be compacted: at least 3/4 of it free.
func compactWanted(size, live int64) bool {
	return size >= compactMinFile && live <= compactMaxBacklog && live*4 <= size
}

func (w *writer) maybeCompact(now time.Time) {
	b := w.b
	w.lastCompact = now
	size := b.fileSize()
	b.mu.Lock()
	live := b.lanes[0].bytes + b.lanes[1].bytes + b.kept.bytes
	b.mu.Unlock()
	live += int64(w.dd.keys * 8)
	if !compactWanted(size, live) {
		return
	}
	start := time.Now()
	if err := w.compact(); err != nil {
		b.log.Warn("buffer compaction failed; the file keeps its size", "file", b.path, "err", err)
		return
	}
	b.log.Info("buffer compacted", "file", b.path, "before_bytes", size, "after_bytes", b.fileSize(), "took", time.Since(start).Round(time.Millisecond))
	b.m.fileBytes.Set(float64(b.fileSize()))
}

func (w *writer) compact() (err error) {
	b := w.b
	tmp := b.path + compactSuffix
	_ = os.Remove(tmp)
	dst, err := bolt.Open(tmp, 0o600, boltOptions(b.opts.LockTimeout))
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	b.dbMu.Lock()
	defer b.dbMu.Unlock()
	copyErr := func() (err error) {
		// A damaged page found while copying must not take ferry down.
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%w: copying the store panicked: %v", errCorrupt, r)
			}
		}()
		return bolt.Compact(dst, b.db, 64<<20)
	}()
	if copyErr != nil {
		dst.Close()
		os.Remove(tmp)
		return fmt.Errorf("copy into %s: %w", tmp, copyErr)
	}
	if err := dst.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := syncFile(tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	// From here the old file is closed: on any failure, reopen whatever
	// is at b.path (the old file, or the new one once renamed).
	if err := b.db.Close(); err != nil {
		os.Remove(tmp)
		return w.reopen(fmt.Errorf("close %s: %w", b.path, err))
	}
	b.db = nil
	if err := os.Rename(tmp, b.path); err != nil {
		os.Remove(tmp)
		return w.reopen(fmt.Errorf("rename %s: %w", tmp, err))
	}
	if err := syncDir(b.dir); err != nil {
		return w.reopen(err)
	}
	return w.reopen(nil)
}

// reopen opens b.path after a compaction; dbMu is held.
func (w *writer) reopen(cause error) error {
	b := w.b
	if b.db != nil {
		return cause
	}
	db, err := openBolt(b.path, b.opts.LockTimeout)
	if err != nil {
		// The writer fails every commit until a restart; Err reports it.
		return fmt.Errorf("reopen %s after compaction: %w (cause: %v)", b.path, err, cause)
	}
	db.AllocSize = int(growStep(b.cfg))
	b.db = db
	return cause
}
