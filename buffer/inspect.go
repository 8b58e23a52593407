package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ferry-edge/ferry"
)

// InspectLockTimeout is how long Inspect waits for the lock: short, since
// a held lock means a ferry runs.
const InspectLockTimeout = 200 * time.Millisecond

// Inspection is a read-only look at a stopped ferry's buffer, for
// `ferry buffer stats|dump`. It holds a shared lock on the buffer until
// Close, so a ferry started meanwhile waits (Options.LockTimeout) instead
// of writing under it. It reads the file with the same checked walk as
// Open, never through bbolt's memory map, so a damaged file gives an error
// (or, with Damaged set, what could be salvaged), never a crash.
type Inspection struct {
	// Path is the buffer file.
	Path string
	// Gateway is the gateway id stored in the file ("" if none).
	Gateway string
	Stats   Stats
	// PageSize and the page counts describe the bbolt file.
	PageSize         int
	Pages, FreePages int
	BranchPages      int
	LeafPages        int
	OverflowPages    int
	DamagedRecords   int
	Sequences        [ferry.NumLanes]uint64
	// Damaged is not nil when the file is damaged: the figures are what a
	// salvage walk could read, and the next `ferry run` will quarantine
	// the file.
	Damaged error

	locks []*os.File
}

// Inspect opens the buffer in dir for reading. It returns an error wrapping
// ErrLocked when a ferry holds the buffer, and os.ErrNotExist when there is
// no buffer file.
func Inspect(dir string) (*Inspection, error) {
	in := &Inspection{Path: filepath.Join(dir, fileName)}
	lock, err := lockDir(dir, false, InspectLockTimeout)
	if err != nil {
		return nil, fmt.Errorf("buffer: %w", err)
	}
	if lock != nil {
		in.locks = append(in.locks, lock)
	}
	fh, err := os.Open(in.Path)
	if err != nil {
		in.Close()
		return nil, fmt.Errorf("buffer: %w", err)
	}
	// bbolt's own lock, in case something else (the bbolt tool) has it.
	if err := flock(fh, false, InspectLockTimeout); err != nil {
		fh.Close()
		in.Close()
		if errors.Is(err, ErrLocked) {
			return nil, fmt.Errorf("buffer: %w: %s is locked by a bbolt writer (a ferry probably runs with data_dir %s; stop it first)", ErrLocked, in.Path, dir)
		}
		return nil, fmt.Errorf("buffer: lock %s: %w", in.Path, err)
	}
	in.locks = append(in.locks, fh)
	if err := in.load(fh); err != nil {
		in.Close()
		return nil, fmt.Errorf("buffer: %w", err)
	}
	return in, nil
}

// Close releases the locks.
func (in *Inspection) Close() error {
	for _, f := range in.locks {
		f.Close()
	}
	in.locks = nil
	return nil
}

func (in *Inspection) open() (*rawFile, error) {
	fh := in.locks[len(in.locks)-1]
	fi, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	in.Stats.FileBytes = fi.Size()
	return openRaw(fh, fi.Size(), in.Damaged != nil)
}

func (in *Inspection) load(fh *os.File) error {
	oldest := [ferry.NumLanes]int64{}
	visit := func(path string, key, value []byte) error {
		switch path {
		case string(bucketMeta):
			if string(key) == string(keyGateway) {
				in.Gateway = string(value)
			}
			return nil
		}
		for l, name := range laneBuckets {
			if path != string(name) {
				continue
			}
			t, _, err := parseValue(key, value)
			if err != nil {
				in.DamagedRecords++
				return nil
			}
			s := &in.Stats.Lanes[l]
			s.Records++
			s.Bytes += int64(len(key) + len(value) + recordOverhead)
			if oldest[l] == 0 || t < oldest[l] {
				oldest[l] = t
			}
		}
		return nil
	}
	f, err := in.open()
	if err == nil {
		err = f.walk(visit)
		if errors.Is(err, errCorrupt) {
			// Walk again, salvaging what can be read.
			in.Damaged = err
			in.Stats.Lanes = [ferry.NumLanes]LaneStats{}
			in.DamagedRecords = 0
			oldest = [ferry.NumLanes]int64{}
			if f, err = in.open(); err == nil {
				err = f.walk(visit)
			}
		}
	}
	if errors.Is(err, errCorrupt) {
		in.Damaged = err // not even the meta pages can be read
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", in.Path, err)
	}
	in.PageSize = f.pageSize
	in.Pages = int(f.meta.hwm)
	in.FreePages = int(f.meta.hwm) - f.reachableCount()
	in.BranchPages, in.LeafPages, in.OverflowPages = f.branchPages, f.leafPages, f.overflowPages
	in.Stats.FreeBytes = int64(in.FreePages)*int64(f.pageSize) + in.Stats.FileBytes - int64(f.meta.hwm)*int64(f.pageSize)
	for l, name := range laneBuckets {
		in.Sequences[l] = f.sequences[string(name)]
		in.Stats.Lanes[l].Lane = ferry.Lane(l)
		if oldest[l] != 0 {
			in.Stats.Lanes[l].Oldest = time.Unix(0, oldest[l])
		}
	}
	if len(f.damage) > 0 && in.Damaged == nil {
		in.Damaged = f.damage[0]
	}
	return nil
}

// errStop ends a walk early.
var errStop = errors.New("stop")

// Records calls fn for the records of lane in order, at most limit of them
// (0: all). A damaged record comes with a non-nil error and no Data.
func (in *Inspection) Records(lane ferry.Lane, limit int, fn func(rec ferry.Record, err error) error) error {
	if int(lane) >= len(laneBuckets) {
		return fmt.Errorf("buffer: lane %d does not exist", lane)
	}
	if len(in.locks) == 0 {
		return ferry.ErrClosed
	}
	f, err := in.open()
	if err != nil {
		return fmt.Errorf("buffer: read %s: %w", in.Path, err)
	}
	gw := in.Gateway
	n := 0
	err = f.walk(func(path string, key, value []byte) error {
		if path != string(laneBuckets[lane]) {
			return nil
		}
		if limit > 0 && n >= limit {
			return errStop
		}
		n++
		rec := ferry.Record{Lane: lane}
		if len(key) == keySize {
			rec.Seq = binary.BigEndian.Uint64(key)
			rec.ID = ferry.RecordID(gw, lane, rec.Seq)
		}
		t, data, err := parseValue(key, value)
		if err != nil {
			return fn(rec, err)
		}
		rec.Time = time.Unix(0, t)
		rec.Data = append([]byte(nil), data...)
		return fn(rec, nil)
	})
	if errors.Is(err, errStop) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("buffer: read %s: %w", in.Path, err)
	}
	return nil
}
