package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/ferry-edge/ferry"
)

// The file layout.
//
//	meta       layout → 1 byte (layoutVersion); gateway → the gateway id;
//	           alert/<rule> → the buffer's own active alert (codec alert record)
//	alerts     seq:u64be → record value        (bucket sequence: last seq assigned)
//	telemetry  seq:u64be → record value
//	dedupe     chunk:u64be → time:i64be digest:u64le…   (bucket sequence: last chunk)
//	state      <name> → bucket of the StateStore's keys
//
// A record value is time:i64be crc:u32be data, where time is when the record
// was committed (Unix nanoseconds), crc is CRC-32C of key, time and data, and
// data is the internal/codec record. bbolt checksums only its meta pages; the
// CRC lets a damaged record be found and dropped on its own.
const (
	fileName      = "buffer.db"
	lockName      = "buffer.lock"
	seqName       = "buffer.seq"
	compactSuffix = ".compact"
	corruptInfix  = ".corrupt-"
	layoutVersion = 1
	valueHeader   = 12
	keySize       = 8
	// keepCorrupt is how many quarantined files are kept; older ones are
	// removed so that a disk that keeps damaging files does not fill up.
	keepCorrupt = 2
)

var (
	bucketMeta   = []byte("meta")
	bucketDedupe = []byte("dedupe")
	bucketState  = []byte("state")
	laneBuckets  = [ferry.NumLanes][]byte{[]byte(ferry.LaneAlerts.String()), []byte(ferry.LaneTelemetry.String())}
	keyLayout    = []byte("layout")
	keyGateway   = []byte("gateway")
	// keyClean is written by Close after the last commit and deleted at
	// open: its presence says the file was shut down cleanly.
	keyClean    = []byte("clean")
	alertPrefix = "alert/"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func seqKey(dst []byte, seq uint64) []byte { return binary.BigEndian.AppendUint64(dst, seq) }

// crcOf returns the checksum of a record: CRC-32C of its key, its time and
// its data (the value without its checksum field).
func crcOf(key, value []byte) uint32 {
	crc := crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, value[:8])
	return crc32.Update(crc, castagnoli, value[valueHeader:])
}

// errBadRecord is returned for a stored record that fails its checks.
var errBadRecord = errors.New("damaged record")

// parseValue checks a stored record and returns its time and data.
func parseValue(key, value []byte) (t int64, data []byte, err error) {
	if len(key) != keySize {
		return 0, nil, fmt.Errorf("%w: key of %d bytes", errBadRecord, len(key))
	}
	if len(value) < valueHeader {
		return 0, nil, fmt.Errorf("%w: value of %d bytes", errBadRecord, len(value))
	}
	if crcOf(key, value) != binary.BigEndian.Uint32(value[8:]) {
		return 0, nil, fmt.Errorf("%w: checksum mismatch", errBadRecord)
	}
	return int64(binary.BigEndian.Uint64(value)), value[valueHeader:], nil
}

// ErrLocked is returned by Open and Inspect when another process (a ferry on this data_dir) holds the lock.
var ErrLocked = errors.New("locked by another process")

// lockDir takes the buffer's lock file in dir: exclusive for the daemon,
// shared for inspection. It tries until timeout.
func lockDir(dir string, exclusive bool, timeout time.Duration) (*os.File, error) {
	path := filepath.Join(dir, lockName)
	flag := os.O_RDONLY
	if exclusive {
		flag = os.O_RDWR | os.O_CREATE
	}
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		if !exclusive && errors.Is(err, os.ErrNotExist) {
			return nil, nil // never opened by a daemon: nothing to lock against
		}
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := flock(f, exclusive, timeout); err != nil {
		f.Close()
		if errors.Is(err, ErrLocked) {
			return nil, fmt.Errorf("%w: %s is locked (another ferry probably runs with data_dir %s; stop it first)", ErrLocked, path, dir)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

func flock(f *os.File, exclusive bool, timeout time.Duration) error {
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		if !time.Now().Before(deadline) {
			return ErrLocked
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// boltOptions are the options of every bbolt file the buffer opens.
func boltOptions(lockTimeout time.Duration) *bolt.Options {
	return &bolt.Options{
		// The daemon holds buffer.lock first; bbolt's own lock catches any
		// other bbolt user (the bbolt CLI, an old ferry).
		Timeout: lockTimeout,
		// The free list is rebuilt at open instead of being written with
		// every commit: a large file with many free pages would otherwise
		// rewrite megabytes of free list per commit.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	}
}

// openBolt opens path with bbolt, turning a panic into an error.
func openBolt(path string, lockTimeout time.Duration) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, corruptf("bbolt panicked opening %s: %v", path, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, boltOptions(lockTimeout))
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s is locked (another ferry probably runs with the same data_dir; stop it first)", ErrLocked, path)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	return nil, err
}

// quarantine moves the damaged file at path aside to
// path.corrupt-<UTC time> and returns the new name. It keeps the newest
// keepCorrupt quarantined files and removes older ones.
func quarantine(path string, now time.Time) (string, error) {
	to := path + corruptInfix + now.UTC().Format("20060102T150405.000Z")
	if err := os.Rename(path, to); err != nil {
		return "", fmt.Errorf("move damaged %s aside: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return to, err
	}
	old, _ := filepath.Glob(path + corruptInfix + "*")
	sort.Strings(old)
	for len(old) > keepCorrupt {
		os.Remove(old[0])
		old = old[1:]
	}
	return to, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// The sequence floor file (buffer.seq) keeps, outside bbolt, a sequence
// number above every one the buffer has used, per lane. It is written ahead
// of use in steps of seqReserve, so it costs one small write per million
// records. When the bbolt file is lost (quarantined, deleted), the fresh
// file starts above the floor and above the clock in microseconds, so that
// no record id is ever reused, not even when the clock was set back.
const seqReserve = 1 << 20

func readSeqFloor(dir string) ([ferry.NumLanes]uint64, error) {
	var floor [ferry.NumLanes]uint64
	data, err := os.ReadFile(filepath.Join(dir, seqName))
	if errors.Is(err, os.ErrNotExist) {
		return floor, nil
	}
	if err != nil {
		return floor, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || strings.HasPrefix(line, "#") {
			continue
		}
		lane, err := ferry.ParseLane(f[0])
		if err != nil {
			continue
		}
		if n, err := strconv.ParseUint(f[1], 10, 64); err == nil {
			floor[lane] = max(floor[lane], n)
		}
	}
	return floor, nil
}

func writeSeqFloor(dir string, floor [ferry.NumLanes]uint64) error {
	var b strings.Builder
	b.WriteString("# ferry buffer: record sequences stay above these numbers, also if buffer.db is lost. Do not edit.\n")
	for l := ferry.Lane(0); l < ferry.NumLanes; l++ {
		fmt.Fprintf(&b, "%s %d\n", l, floor[l])
	}
	path := filepath.Join(dir, seqName)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(b.String())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func timeOf(ns int64) time.Time { return time.Unix(0, ns) }

// viewDB runs fn in a read transaction of the open store (see view);
// ferry.ErrClosed once the buffer is closed.
func (b *Buffer) viewDB(fn func(*bolt.Tx) error) error {
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.db == nil {
		return ferry.ErrClosed
	}
	return view(b.db, fn)
}

// view runs fn in a read transaction of db, turning a panic or a memory
// fault (a page that cannot be read from the mapped file) into an error:
// a damaged page found while running must not take ferry down. The next
// Open checks the file and quarantines it.
func view(db *bolt.DB, fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: reading the store panicked: %v", errCorrupt, r)
		}
	}()
	return db.View(fn)
}
