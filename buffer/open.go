package buffer

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/codec"
)

// loaded is what the walk of a file at Open finds.
type loaded struct {
	lanes   [ferry.NumLanes][]entry
	maxSeq  [ferry.NumLanes]uint64
	bad     [ferry.NumLanes][][]byte // keys of damaged records
	chunks  []dedupeChunk
	own     []ferry.Alert
	layout  int
	gateway string
	clean   bool // the last run closed the file (keyClean)
	shifts  []clockShift
	// put, when set, copies what the walk finds into a fresh file
	// (salvage).
	put func(path string, key, value []byte) error
}

func (l *loaded) visit(path string, key, value []byte) error {
	// The root and the state bucket hold only buckets: a plain key there
	// is damage (and would make bbolt refuse to create the bucket).
	if path == "" || path == string(bucketState) {
		if l.put != nil {
			return nil // salvage: skip it
		}
		return corruptf("bucket %q holds a plain key %q", path, key)
	}
	for lane, name := range laneBuckets {
		if path != string(name) {
			continue
		}
		t, _, err := parseValue(key, value)
		if err != nil {
			l.bad[lane] = append(l.bad[lane], append([]byte(nil), key...))
			return nil
		}
		seq := binary.BigEndian.Uint64(key)
		l.lanes[lane] = append(l.lanes[lane], entry{seq: seq, time: t, size: uint32(len(key) + len(value) + recordOverhead)})
		l.maxSeq[lane] = max(l.maxSeq[lane], seq)
		if l.put != nil {
			return l.put(path, key, value)
		}
		return nil
	}
	switch {
	case path == string(bucketDedupe):
		if c, ok := parseChunk(key, value); ok {
			l.chunks = append(l.chunks, c)
		}
	case path == string(bucketMeta):
		switch k := string(key); {
		case k == string(keyLayout) && len(value) == 1:
			l.layout = int(value[0])
		case k == string(keyClean):
			l.clean = true
		case k == string(keyGateway):
			l.gateway = string(value)
		case strings.HasPrefix(k, shiftPrefix):
			if s, ok := parseShift(key, value); ok {
				l.shifts = append(l.shifts, s)
			}
		case strings.HasPrefix(k, alertPrefix):
			if _, a, err := codec.DecodeAlert(value); err == nil {
				l.own = append(l.own, a)
			}
		}
	case strings.HasPrefix(path, string(bucketState)+"/"):
		if l.put != nil {
			return l.put(path, key, value)
		}
	}
	return nil
}

// openStore checks buffer.db, quarantines and salvages it when damaged,
// opens it with bbolt and builds the index.
func (b *Buffer) openStore() error {
	start := time.Now()
	_ = os.Remove(b.path + compactSuffix) // a compaction that did not finish
	floor, err := readSeqFloor(b.dir)
	if err != nil {
		b.log.Warn("sequence floor file unreadable; using the clock", "file", seqName, "err", err)
	}
	ld := &loaded{}
	var quarantined, why string
	var salvaged int
	_, err = checkFileSafe(b.path, ld.visit)
	switch {
	case errors.Is(err, os.ErrNotExist):
		err = nil
	case errors.Is(err, errCorrupt):
		why = err.Error()
		quarantined, ld, salvaged, err = b.quarantineAndSalvage()
		if err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("read %s: %w", b.path, err)
	}
	if ld.layout > layoutVersion {
		return fmt.Errorf("%s has layout version %d; this ferry reads up to %d (was it written by a newer ferry?)", b.path, ld.layout, layoutVersion)
	}
	db, err := openBolt(b.path, b.opts.LockTimeout)
	if errors.Is(err, errCorrupt) && quarantined == "" {
		// The walk found nothing wrong but bbolt refuses the file.
		why = err.Error()
		quarantined, ld, salvaged, err = b.quarantineAndSalvage()
		if err == nil {
			db, err = openBolt(b.path, b.opts.LockTimeout)
		}
	}
	if err != nil {
		return err
	}
	b.db = db
	if b.opts.MaxRecordBytes <= 0 {
		// Two full records fill a page (its header, and a leaf element
		// and key beside each value): no record needs overflow pages, and
		// pages stay full.
		b.opts.MaxRecordBytes = (db.Info().PageSize-pageHeaderSize)/2 - elementSize - keySize
	}
	// Grow the file in steps of at most 1/64 of the bound (bbolt's default
	// is 16 MiB, or doubling below that), so that it stays near the data.
	db.AllocSize = int(growStep(b.cfg))
	if err := b.initStore(ld, floor); err != nil {
		db.Close()
		b.db = nil
		return err
	}
	var records [ferry.NumLanes]int
	for l := range ld.lanes {
		li := &b.lanes[l]
		// The walk yields keys in order; a salvage of a damaged tree is
		// made sure of.
		ents := ld.lanes[l]
		if !slices.IsSortedFunc(ents, func(a, b entry) int { return cmp.Compare(a.seq, b.seq) }) {
			slices.SortFunc(ents, func(a, b entry) int { return cmp.Compare(a.seq, b.seq) })
			ents = slices.CompactFunc(ents, func(a, b entry) bool { return a.seq == b.seq })
		}
		for _, s := range ld.shifts {
			if s.lane == ferry.Lane(l) {
				s.apply(ents)
			}
		}
		for _, e := range ents {
			li.add(e.seq, e.time, int(e.size))
		}
		records[l] = li.live
	}
	b.w.loadDedupe(ld.chunks)
	b.w.own.load(ld.own)
	bad := 0
	for l := range ld.bad {
		if n := len(ld.bad[l]); n > 0 {
			bad += n
			b.m.dropped(ferry.Lane(l), reasonCorrupt, n)
			b.otherDrops.Add(uint64(n))
		}
	}
	fi, _ := os.Stat(b.path)
	var size int64
	if fi != nil {
		size = fi.Size()
	}
	// The next sequences say where this run's ids start: each open moves
	// them past the floor file (see initStore), so ids of one run are
	// consecutive, and a consumer can tell a gap between runs from a loss.
	b.log.Info("buffer opened", "file", b.path, "alerts", records[ferry.LaneAlerts], "telemetry", records[ferry.LaneTelemetry],
		"file_bytes", size, "took", time.Since(start).Round(time.Millisecond),
		"next_alert_seq", b.w.seq[ferry.LaneAlerts]+1, "next_telemetry_seq", b.w.seq[ferry.LaneTelemetry]+1)
	if bad > 0 {
		b.log.Warn("damaged records dropped", "file", b.path, "records", bad)
	}
	if quarantined != "" {
		msg := fmt.Sprintf("buffer file was damaged (%s); moved to %s, salvaged %d records into a fresh file", why, quarantined, salvaged)
		b.log.Error("buffer file quarantined", "file", b.path, "moved_to", quarantined, "salvaged", salvaged, "err", why)
		b.w.own.raise(RuleQuarantined, ferry.SeverityCritical, msg, ferry.IntValue(int64(salvaged)), b.now())
	}
	return nil
}

// checkFileSafe is checkFile with a panic turned into a corruption error:
// the walk reads nothing unchecked, but a crash loop on a damaged file is
// the one outcome the buffer must never have.
func checkFileSafe(path string, visit visitFunc) (f *rawFile, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, corruptf("checking %s panicked: %v\n%s", path, r, debug.Stack())
		}
	}()
	return checkFile(path, visit)
}

// quarantineAndSalvage moves the damaged file aside and copies every record
// and state entry that can still be read (and passes its checksum) into a
// fresh file at b.path.
func (b *Buffer) quarantineAndSalvage() (moved string, ld *loaded, salvaged int, err error) {
	moved, err = quarantine(b.path, b.now())
	if err != nil {
		return "", nil, 0, err
	}
	ld = &loaded{}
	db, err := openBolt(b.path, b.opts.LockTimeout)
	if err != nil {
		return moved, nil, 0, fmt.Errorf("create fresh %s: %w", b.path, err)
	}
	defer func() {
		if cerr := db.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	tx, err := db.Begin(true)
	if err != nil {
		return moved, nil, 0, err
	}
	pending := 0
	ld.put = func(path string, key, value []byte) error {
		bk, err := bucketAt(tx, path)
		if err != nil {
			return err
		}
		bk.FillPercent = 1.0
		if err := bk.Put(key, value); err != nil {
			return err
		}
		salvaged++
		if pending += len(key) + len(value); pending >= 16<<20 {
			if err := tx.Commit(); err != nil {
				return err
			}
			pending = 0
			if tx, err = db.Begin(true); err != nil {
				return err
			}
		}
		return nil
	}
	var walkErr error
	func() {
		defer func() {
			if r := recover(); r != nil {
				walkErr = fmt.Errorf("salvage panicked: %v", r)
			}
		}()
		var fh *os.File
		if fh, walkErr = os.Open(moved); walkErr != nil {
			return
		}
		defer fh.Close()
		fi, err := fh.Stat()
		if err != nil {
			walkErr = err
			return
		}
		rf, err := openRaw(fh, fi.Size(), true)
		if err != nil {
			walkErr = err
			return
		}
		walkErr = rf.walk(ld.visit)
		// Keep the old file's sequences so that ids go on from there.
		for l, name := range laneBuckets {
			ld.maxSeq[l] = max(ld.maxSeq[l], rf.sequences[string(name)])
		}
	}()
	ld.put = nil
	if walkErr != nil {
		b.log.Warn("salvage stopped early", "file", moved, "err", walkErr)
	}
	if err := tx.Commit(); err != nil {
		return moved, nil, 0, fmt.Errorf("salvage into %s: %w", b.path, err)
	}
	// The salvaged dedupe keys and the own alerts are not kept: the first
	// would need the damaged file's clock, the second are re-raised.
	ld.chunks, ld.own = nil, nil
	// Damaged records were not copied, so there is nothing to delete.
	ld.bad = [ferry.NumLanes][][]byte{}
	return moved, ld, salvaged, nil
}

// bucketAt returns the bucket at path ("telemetry", "state/rules"),
// creating it.
func bucketAt(tx *bolt.Tx, path string) (*bolt.Bucket, error) {
	parts := strings.Split(path, "/")
	bk, err := tx.CreateBucketIfNotExists([]byte(parts[0]))
	for _, p := range parts[1:] {
		if err != nil {
			break
		}
		bk, err = bk.CreateBucketIfNotExists([]byte(p))
	}
	return bk, err
}

// initStore creates the buckets, records the layout and gateway, seeds the
// sequences of new lanes, and deletes damaged records.
func (b *Buffer) initStore(ld *loaded, floor [ferry.NumLanes]uint64) error {
	w := b.w
	// A fresh lane starts above the floor file, above the largest sequence
	// seen, and above the clock in microseconds, so that ids never repeat
	// even when the file was lost.
	clock := uint64(max(b.now().UnixMicro(), 0))
	err := b.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if err := meta.Put(keyLayout, []byte{layoutVersion}); err != nil {
			return err
		}
		if err := meta.Put(keyGateway, []byte(b.opts.Gateway)); err != nil {
			return err
		}
		// From now on a crash leaves the file without the mark.
		if err := meta.Delete(keyClean); err != nil {
			return err
		}
		for l, name := range laneBuckets {
			bk := tx.Bucket(name)
			if bk == nil {
				if bk, err = tx.CreateBucket(name); err != nil {
					return err
				}
			}
			// A lane of a file the last run closed cleanly continues
			// from its own sequence: ids stay consecutive across a stop
			// and start (a restart, an upgrade), which is how a reader
			// upstream tells that nothing is missing. It jumps above the
			// floor file and the clock when the file is new or lost its
			// sequence; when its sequence lies below the floor file's
			// current reservation (an older file put back); and after a
			// crash, because ferry cannot tell an intact file from one a
			// disk that lied about fsync rolled back, whose last ids may
			// already have left — reusing them would get the new records
			// dropped upstream as duplicates.
			seq := bk.Sequence()
			stale := floor[l] > seqReserve && seq < floor[l]-seqReserve
			if seq == 0 || seq < ld.maxSeq[l] || stale || !ld.clean {
				seq = max(seq, ld.maxSeq[l], floor[l], clock)
				if err := bk.SetSequence(seq); err != nil {
					return err
				}
			}
			w.seq[l] = seq
			w.runFirst[l] = seq + 1
			for _, k := range ld.bad[l] {
				if err := bk.Delete(k); err != nil {
					return err
				}
			}
		}
		// Clock shifts that no stored record needs any more go.
		var first [ferry.NumLanes]uint64
		for l, ents := range ld.lanes {
			first[l] = math.MaxUint64
			for _, e := range ents {
				first[l] = min(first[l], e.seq)
			}
		}
		if err := pruneShifts(meta, ld.shifts, first); err != nil {
			return err
		}
		dd, err := tx.CreateBucketIfNotExists(bucketDedupe)
		if err != nil {
			return err
		}
		w.dd.chunkSeq = dd.Sequence()
		_, err = tx.CreateBucketIfNotExists(bucketState)
		return err
	})
	if err != nil {
		return fmt.Errorf("initialise %s: %w", b.path, err)
	}
	// Reserve sequences ahead in the floor file.
	w.floor = floor
	return w.reserveSeqs()
}
