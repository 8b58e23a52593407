package history

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/boltmap"
)

// FileName is the history file in the data directory.
const FileName = "history.db"

// Bounds of what waits in memory. Samples stay in memory (and in the
// journal on disk) until the next fold: maxPending bounds them; a commit
// folds when foldAt wait, or foldEvery after the last fold.
const (
	maxPending       = 1_000_000
	foldAt           = 400_000
	foldEvery        = time.Minute
	maxPendingAlerts = 10_000
)

// ErrLocked is returned by Open when another process (a running ferry)
// holds the history file.
var ErrLocked = errors.New("history file is in use by another process")

var (
	bktSeries = []byte("series")
	// bktRaw holds a bucket per hour of raw samples, keyed by fold
	// sequence and series id (putRaw); bktRawV1 is the layout before
	// (keyed by id and time), dropped at open.
	bktRaw    = []byte("raw2")
	bktRawV1  = []byte("raw")
	bktRoll   = []byte("rollups")
	bktAlerts = []byte("alerts")
	// bktJournal holds, under a sequence number, the samples of each
	// commit since the last fold (journal.go).
	bktJournal = []byte("journal")
)

// Options are what the store takes besides its configuration.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock for retention (default time.Now).
	Now func() time.Time
	// ReadOnly opens the file of a stopped ferry for queries only.
	ReadOnly bool
}

// Store is the history file. Add and Alert are safe from any goroutine;
// Run commits; queries may run at any time.
type Store struct {
	cfg  Config
	db   *bolt.DB
	log  *slog.Logger
	now  func() time.Time
	keep map[string]bool // nil: every device

	mu      sync.Mutex
	series  map[string]map[string]uint32
	scanIDs map[string]*scanIDs
	nextID  uint32
	newSer  []newSeries
	// acc holds, by series id, what waits for the next fold (journaled
	// or not yet); dirty lists the ids that have something.
	acc      []*seriesAcc
	dirty    []uint32
	pending  int
	alerts   []ferry.Alert
	alertSeq uint64

	// Touched only by commit (under wmu); queries hold it for reading,
	// so that they see a fold's samples either in memory or on disk.
	wmu        sync.RWMutex
	lastFold   time.Time
	jseq       uint64          // the last journal key
	foldSeq    uint64          // the last fold's key prefix in raw hours
	jBytes     int64           // key and value bytes in the journal
	rawBytes   map[int64]int64 // hour partition -> key+value bytes
	rollBytes  map[int64]int64 // day partition -> key+value bytes
	alertBytes int64
	alertCount int
	// ratio is the file's pages in use over the key and value bytes,
	// measured after each commit (bbolt's pages are about half full):
	// the size bound applies to bytes*ratio.
	ratio float64
	// releaseErr stops release after a failure (under wmu).
	releaseErr bool

	m metrics
}

// scanIDs are the series ids of a device's last scan, by position.
type scanIDs struct {
	points []string
	ids    []uint32
}

// maxScanIDs bounds the positions remembered per device.
const maxScanIDs = 10_000

type newSeries struct {
	key string
	id  uint32
}

// seriesAcc is what one series gathered since the last fold: its raw
// samples (raw[:jn] are in the journal) and the rollup of each minute
// they touched (most samples fall in the current minute: cur; a sample of
// another minute closes it into done).
type seriesAcc struct {
	raw []rawSample
	jn  int
	// spare is the slice of the fold before last, for the next one.
	spare  []rawSample
	cur    rollup
	curMin int64
	has    bool
	done   []minRollup
}

type minRollup struct {
	min int64
	r   rollup
}

type rawSample struct {
	ns int64
	v  float64
	q  ferry.Status
}

type rollKey struct {
	id  uint32
	min int64 // Unix seconds of the minute
}

// rollup is one minute of one point. Count is the number of samples with
// a value; Worst is the worst quality of every sample, with or without.
type rollup struct {
	Min, Max, Sum, Last float64
	LastNs              int64
	Count               uint32
	Worst               ferry.Status
}

const rollupLen = 8*5 + 4 + 1

func (r *rollup) add(ns int64, v float64, q ferry.Status) {
	r.Worst = max(r.Worst, q)
	if math.IsNaN(v) {
		return
	}
	if r.Count == 0 || v < r.Min {
		r.Min = v
	}
	if r.Count == 0 || v > r.Max {
		r.Max = v
	}
	r.Sum += v
	r.Count++
	if r.Count == 1 || ns >= r.LastNs {
		r.Last, r.LastNs = v, ns
	}
}

func (r *rollup) merge(o *rollup) {
	r.Worst = max(r.Worst, o.Worst)
	if o.Count == 0 {
		return
	}
	if r.Count == 0 {
		w := r.Worst
		*r = *o
		r.Worst = w
		return
	}
	r.Min = min(r.Min, o.Min)
	r.Max = max(r.Max, o.Max)
	r.Sum += o.Sum
	r.Count += o.Count
	if o.LastNs >= r.LastNs {
		r.Last, r.LastNs = o.Last, o.LastNs
	}
}

func (r *rollup) encode() []byte {
	b := make([]byte, 0, rollupLen)
	for _, f := range []float64{r.Min, r.Max, r.Sum, r.Last} {
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(f))
	}
	b = binary.BigEndian.AppendUint64(b, uint64(r.LastNs))
	b = binary.BigEndian.AppendUint32(b, r.Count)
	return append(b, byte(r.Worst))
}

func decodeRollup(b []byte) (rollup, bool) {
	if len(b) != rollupLen {
		return rollup{}, false
	}
	f := func(i int) float64 { return math.Float64frombits(binary.BigEndian.Uint64(b[i*8:])) }
	return rollup{
		Min: f(0), Max: f(1), Sum: f(2), Last: f(3),
		LastNs: int64(binary.BigEndian.Uint64(b[32:])),
		Count:  binary.BigEndian.Uint32(b[40:]),
		Worst:  ferry.Status(b[44]),
	}, true
}

type metrics struct {
	samples, dropped, skipped, evicted, alerts prometheus.Counter
	commits                                    prometheus.Counter
	commitErrors                               prometheus.Counter
}

// Open opens (creating it unless opts.ReadOnly) DIR/history.db.
func Open(dir string, cfg Config, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	path := filepath.Join(dir, FileName)
	if opts.ReadOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	db, err := bolt.Open(path, 0o640, &bolt.Options{Timeout: time.Second, ReadOnly: opts.ReadOnly})
	if err == nil {
		// Grow the file in small steps (bbolt's default is to double it
		// up to 16 MiB), so that it stays near max_size.
		db.AllocSize = int(min(max(int64(cfg.MaxSize)/64, 64<<10), 16<<20))
	}
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &Store{
		cfg: cfg, db: db, log: opts.Logger, now: opts.Now,
		series:   map[string]map[string]uint32{},
		scanIDs:  map[string]*scanIDs{},
		rawBytes: map[int64]int64{}, rollBytes: map[int64]int64{}, ratio: 2,
		lastFold: opts.Now(),
	}
	if len(cfg.Devices) > 0 {
		s.keep = map[string]bool{}
		for _, d := range cfg.Devices {
			s.keep[d] = true
		}
	}
	if err := s.load(opts.ReadOnly); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s.m = newMetrics(s, opts.Registerer)
	return s, nil
}

func newMetrics(s *Store, reg prometheus.Registerer) metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := metrics{
		samples:      c("ferry_history_samples_total", "Samples written to the local history."),
		dropped:      c("ferry_history_dropped_samples_total", "Samples and alerts not kept in history because too much waited for the next commit."),
		skipped:      c("ferry_history_skipped_samples_total", "Samples not kept in history because their value is a string."),
		evicted:      c("ferry_history_evicted_partitions_total", "History partitions (raw hours, rollup days) dropped for age or size."),
		alerts:       c("ferry_history_alerts_total", "Alert transitions written to the local history."),
		commits:      c("ferry_history_commits_total", "History commits."),
		commitErrors: c("ferry_history_commit_errors_total", "History commits that failed (their data is lost)."),
	}
	if reg != nil {
		reg.MustRegister(m.samples, m.dropped, m.skipped, m.evicted, m.alerts, m.commits, m.commitErrors,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ferry_history_bytes", Help: "Bytes of keys and values the local history holds (bounded by history.max_size less an eighth)."},
				func() float64 { return float64(s.Bytes()) }))
	}
	return m
}

// load reads the series ids and the partitions' sizes.
func (s *Store) load(readOnly bool) error {
	load := func(tx *bolt.Tx) error {
		if b := tx.Bucket(bktSeries); b != nil {
			err := b.ForEach(func(k, v []byte) error {
				dev, pt, ok := splitSeries(string(k))
				if !ok || len(v) != 4 {
					return nil
				}
				id := binary.BigEndian.Uint32(v)
				s.setID(dev, pt, id)
				s.nextID = max(s.nextID, id)
				return nil
			})
			if err != nil {
				return err
			}
		}
		for _, p := range []struct {
			name  []byte
			sizes map[int64]int64
		}{{bktRaw, s.rawBytes}, {bktRoll, s.rollBytes}} {
			b := tx.Bucket(p.name)
			if b == nil {
				continue
			}
			err := b.ForEachBucket(func(k []byte) error {
				var n int64
				_ = b.Bucket(k).ForEach(func(k, v []byte) error { n += int64(len(k) + len(v)); return nil })
				p.sizes[int64(binary.BigEndian.Uint64(k))] = n
				if bytes.Equal(p.name, bktRaw) {
					if lk, _ := b.Bucket(k).Cursor().Last(); len(lk) == 12 {
						s.foldSeq = max(s.foldSeq, binary.BigEndian.Uint64(lk))
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		s.replay(tx)
		if b := tx.Bucket(bktAlerts); b != nil {
			_ = b.ForEach(func(k, v []byte) error {
				s.alertBytes += int64(len(k) + len(v))
				s.alertCount++
				if len(k) == 16 {
					s.alertSeq = max(s.alertSeq, binary.BigEndian.Uint64(k[8:]))
				}
				return nil
			})
		}
		return nil
	}
	if readOnly {
		return s.db.View(load)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bktRawV1); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
			return err
		}
		for _, n := range [][]byte{bktSeries, bktRaw, bktRoll, bktAlerts, bktJournal} {
			if _, err := tx.CreateBucketIfNotExists(n); err != nil {
				return err
			}
		}
		return load(tx)
	})
}

func seriesKey(dev, pt string) string { return dev + "\x00" + pt }

func splitSeries(k string) (dev, pt string, ok bool) {
	for i := 0; i < len(k); i++ {
		if k[i] == 0 {
			return k[:i], k[i+1:], true
		}
	}
	return "", "", false
}

func (s *Store) setID(dev, pt string, id uint32) {
	m := s.series[dev]
	if m == nil {
		m = map[string]uint32{}
		s.series[dev] = m
	}
	m[pt] = id
}

// lookup returns the id of a series, or 0 when it has none.
func (s *Store) lookup(dev, pt string) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.series[dev][pt]
}

// Add keeps the samples of sc for the next commit. It does not keep sc.
func (s *Store) Add(sc *ferry.Scan) {
	if s.keep != nil && !s.keep[sc.Device] {
		return
	}
	var dropped, skipped int
	lastDev := "\x00" // no device has this name: the first sample looks up
	var ids *scanIDs
	s.mu.Lock()
	for i := range sc.Samples {
		smp := &sc.Samples[i]
		v, ok := smp.Value.Number()
		if !ok {
			if smp.Value.Kind() == ferry.KindString {
				skipped++
				continue
			}
			v = math.NaN()
		}
		if s.pending >= maxPending {
			dropped++
			continue
		}
		t := smp.Time
		if t.IsZero() {
			t = sc.Time
		}
		ns := t.UnixNano()
		dev := smp.Device
		if dev == "" {
			dev = sc.Device
		}
		// A device's scans list the same points in the same order, with
		// the same strings: the ids of its last scan, by position, save
		// the map lookups.
		var id uint32
		if dev != lastDev {
			lastDev, ids = dev, s.scanIDs[dev]
			if ids == nil {
				ids = &scanIDs{}
				s.scanIDs[dev] = ids
			}
		}
		if i < len(ids.points) && ids.points[i] == smp.Point {
			id = ids.ids[i]
		} else {
			id = s.series[dev][smp.Point]
		}
		if id == 0 {
			s.nextID++
			id = s.nextID
			s.setID(dev, smp.Point, id)
			s.newSer = append(s.newSer, newSeries{seriesKey(dev, smp.Point), id})
		}
		if i < len(ids.points) {
			ids.points[i], ids.ids[i] = smp.Point, id
		} else if i == len(ids.points) && i < maxScanIDs {
			ids.points, ids.ids = append(ids.points, smp.Point), append(ids.ids, id)
		}
		s.accumulate(id, ns, v, smp.Quality.Status)
	}
	s.mu.Unlock()
	if dropped > 0 {
		s.m.dropped.Add(float64(dropped))
	}
	if skipped > 0 {
		s.m.skipped.Add(float64(skipped))
	}
}

// accumulate keeps one sample of series id for the next fold. Call it
// with s.mu held.
func (s *Store) accumulate(id uint32, ns int64, v float64, q ferry.Status) {
	for int(id) >= len(s.acc) {
		s.acc = append(s.acc, nil)
	}
	a := s.acc[id]
	if a == nil {
		a = &seriesAcc{}
		s.acc[id] = a
	}
	if len(a.raw) == 0 && !a.has {
		s.dirty = append(s.dirty, id)
	}
	a.raw = append(a.raw, rawSample{ns, v, q})
	m := floorDiv(ns, int64(time.Minute)) * 60
	if a.has && m != a.curMin {
		a.done = append(a.done, minRollup{a.curMin, a.cur})
		a.has = false
	}
	if !a.has {
		a.cur, a.curMin, a.has = rollup{}, m, true
	}
	a.cur.add(ns, v, q)
	s.pending++
}

// Alert keeps an alert transition for the next commit.
func (s *Store) Alert(a ferry.Alert) {
	s.mu.Lock()
	full := len(s.alerts) >= maxPendingAlerts
	if !full {
		s.alerts = append(s.alerts, a)
	}
	s.mu.Unlock()
	if full {
		s.m.dropped.Inc()
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// Run commits every commit_interval until ctx ends, then commits what is
// left and returns.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := s.commit(true); err != nil {
				s.log.Error("history commit at shutdown", "err", err)
			}
			return nil
		case <-t.C:
			if err := s.Commit(); err != nil {
				s.log.Warn("history commit", "err", err)
			}
		}
	}
}

// Commit writes what Add and Alert kept since the last commit, in one
// transaction: the samples to the journal, or, when foldEvery passed
// since the last fold or foldAt samples wait, every sample since the last
// fold into the raw hours and the minute rollups (a fold); then it drops
// what is past its retention or the size bound.
//
// Why the journal: raw samples and rollups are kept by series (a query
// reads one series), so writing them touches a page per series; written
// every commit_interval that was about 8 pages written per page of data
// at 1,000 points. The journal is one value appended per commit, in
// arrival order, and a fold writes each series' page once a minute.
func (s *Store) Commit() error { return s.commit(false) }

func (s *Store) commit(forceFold bool) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	now := s.now()
	s.mu.Lock()
	if !forceFold && s.pending < foldAt && now.Sub(s.lastFold) < foldEvery {
		return s.commitJournal() // unlocks s.mu
	}
	s.lastFold = now
	raw, roll := make(map[uint32][]rawSample, len(s.dirty)), make(map[rollKey]*rollup, len(s.dirty))
	for _, id := range s.dirty {
		a := s.acc[id]
		raw[id] = a.raw
		for i := range a.done {
			d := &a.done[i]
			if r := roll[rollKey{id, d.min}]; r != nil {
				r.merge(&d.r)
			} else {
				roll[rollKey{id, d.min}] = &d.r
			}
		}
		if a.has {
			cur := a.cur
			if r := roll[rollKey{id, a.curMin}]; r != nil {
				r.merge(&cur)
			} else {
				roll[rollKey{id, a.curMin}] = &cur
			}
		}
		// A fresh slice: the commit reads the old one without the lock.
		a.raw, a.spare = a.spare, nil
		if a.raw == nil {
			a.raw = make([]rawSample, 0, cap(raw[id]))
		}
		a.done, a.has, a.jn = nil, false, 0
	}
	newSer, alerts, n := s.newSer, s.alerts, s.pending
	s.dirty, s.newSer, s.alerts, s.pending = s.dirty[:0], nil, nil, 0
	s.mu.Unlock()

	rawAdd, rollAdd := map[int64]int64{}, map[int64]int64{}
	var alertAdd int64
	var alertN int
	jBytes := s.jBytes
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := putSeries(tx, newSer); err != nil {
			return err
		}
		// What the journal held is in raw and roll: it goes, in the same
		// transaction (so a sample is never in both, or in neither).
		if err := tx.DeleteBucket(bktJournal); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
			return err
		}
		if _, err := tx.CreateBucket(bktJournal); err != nil {
			return err
		}
		s.jBytes = 0
		if s.cfg.Raw > 0 {
			if err := s.putRaw(tx, raw, rawAdd); err != nil {
				return err
			}
		}
		if err := s.putRollups(tx, roll, rollAdd); err != nil {
			return err
		}
		var err error
		if alertAdd, alertN, err = s.putAlerts(tx, alerts); err != nil {
			return err
		}
		for p, n := range rawAdd {
			s.rawBytes[p] += n
		}
		for p, n := range rollAdd {
			s.rollBytes[p] += n
		}
		s.alertBytes += alertAdd
		s.alertCount += alertN
		if err := s.evict(tx); err != nil {
			return err
		}
		tx.OnCommit(func() {
			s.measure()
			s.release()
		})
		return nil
	})
	// The transaction no longer reads the slices: keep them for the
	// fold after next (no allocation, no clearing, no growing).
	s.mu.Lock()
	for id, old := range raw {
		if a := s.acc[id]; a != nil && a.spare == nil {
			a.spare = old[:0]
		}
	}
	s.mu.Unlock()
	if err != nil {
		// The transaction rolled back: undo the counts it added.
		for p, n := range rawAdd {
			s.rawBytes[p] -= n
		}
		for p, n := range rollAdd {
			s.rollBytes[p] -= n
		}
		s.alertBytes -= alertAdd
		s.alertCount -= alertN
		s.jBytes = jBytes
		s.m.commitErrors.Inc()
		return fmt.Errorf("history commit: %w", err)
	}
	s.m.commits.Inc()
	s.m.samples.Add(float64(n))
	s.m.alerts.Add(float64(len(alerts)))
	return nil
}

func partKey(p int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(p)) }

// putRaw writes each series' samples of a fold as one block per hour:
// key fold sequence (8 bytes) + series id (4), value the first sample's
// ns (8 bytes) then, per sample, zigzag varint delta ns from it, status,
// float64. A fold's keys all sort after the previous fold's: they are
// appended to each hour's B+tree, in id order, and no earlier block is
// read or written again (keyed by id first, each fold inserted a block
// beside every series' last one and rewrote its page).
func (s *Store) putRaw(tx *bolt.Tx, raw map[uint32][]rawSample, add map[int64]int64) error {
	rb := tx.Bucket(bktRaw)
	cutoff := s.now().Add(-s.cfg.Raw).UnixNano()
	s.foldSeq++
	ids := make([]uint32, 0, len(raw))
	for id := range raw {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	hourB := map[int64]*bolt.Bucket{}
	var buf []byte
	for _, id := range ids {
		smps := raw[id]
		if !slices.IsSortedFunc(smps, cmpRaw) {
			slices.SortStableFunc(smps, cmpRaw)
		}
		for i := 0; i < len(smps); {
			hour := floorDiv(smps[i].ns, int64(time.Hour))
			j := i
			for j < len(smps) && floorDiv(smps[j].ns, int64(time.Hour)) == hour {
				j++
			}
			block := smps[i:j]
			i = j
			if block[len(block)-1].ns < cutoff {
				continue // already past retention
			}
			hb := hourB[hour]
			if hb == nil {
				var err error
				if hb, err = rb.CreateBucketIfNotExists(partKey(hour * 3600)); err != nil {
					return err
				}
				// Keys only grow: fill the pages.
				hb.FillPercent = 1
				hourB[hour] = hb
			}
			k := binary.BigEndian.AppendUint64(make([]byte, 0, 12), s.foldSeq)
			k = binary.BigEndian.AppendUint32(k, id)
			base := block[0].ns
			// bbolt keeps the value until the transaction ends: a
			// slice of one buffer per fold, grown as needed.
			if cap(buf)-len(buf) < 8+len(block)*19 {
				buf = make([]byte, 0, max(64<<10, 8+len(block)*19))
			}
			start := len(buf)
			buf = binary.BigEndian.AppendUint64(buf, uint64(base))
			for _, r := range block {
				buf = binary.AppendVarint(buf, r.ns-base)
				buf = append(buf, byte(r.q))
				buf = binary.BigEndian.AppendUint64(buf, math.Float64bits(r.v))
			}
			v := buf[start:len(buf):len(buf)]
			buf = buf[len(buf):]
			if err := hb.Put(k, v); err != nil {
				return err
			}
			add[hour*3600] += int64(len(k) + len(v))
		}
	}
	return nil
}

func cmpRaw(a, b rawSample) int { return cmp.Compare(a.ns, b.ns) }

// decodeBlock calls f for every sample of a raw block whose key holds base.
func decodeBlock(base int64, v []byte, f func(ns int64, val float64, q ferry.Status)) {
	for len(v) > 0 {
		d, n := binary.Varint(v)
		if n <= 0 || len(v) < n+9 {
			return
		}
		q := ferry.Status(v[n])
		val := math.Float64frombits(binary.BigEndian.Uint64(v[n+1:]))
		f(base+d, val, q)
		v = v[n+9:]
	}
}

func (s *Store) putRollups(tx *bolt.Tx, roll map[rollKey]*rollup, add map[int64]int64) error {
	rb := tx.Bucket(bktRoll)
	cutoff := s.now().Add(-s.cfg.Rollups).Unix()
	var cur *bolt.Bucket
	curDay := int64(math.MinInt64)
	for k, r := range roll {
		if k.min < cutoff {
			continue
		}
		day := floorDiv(k.min, 86400) * 86400
		if day != curDay {
			b, err := rb.CreateBucketIfNotExists(partKey(day))
			if err != nil {
				return err
			}
			b.FillPercent = 0.9
			cur, curDay = b, day
		}
		key := binary.BigEndian.AppendUint32(make([]byte, 0, 12), k.id)
		key = binary.BigEndian.AppendUint64(key, uint64(k.min))
		merged := *r
		if v := cur.Get(key); v != nil {
			if old, ok := decodeRollup(v); ok {
				old.merge(r)
				merged = old
			}
		} else {
			add[day] += int64(len(key) + rollupLen)
		}
		if err := cur.Put(key, merged.encode()); err != nil {
			return err
		}
	}
	return nil
}

// measure updates ratio from the file's pages in use. Called after a
// commit, under wmu.
func (s *Store) measure() {
	tracked := s.bytesLocked()
	if tracked < 256<<10 {
		return
	}
	var size int64
	_ = s.db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil })
	st := s.db.Stats()
	inUse := size - int64(st.FreePageN+st.PendingPageN)*int64(s.db.Info().PageSize)
	s.ratio = max(1, float64(inUse)/float64(tracked))
}

// release drops the file's pages that reads mapped into the process (the
// fold's, the queries' since the last fold: a 7-day query of a point reads
// megabytes): see internal/boltmap. Called after a fold's commit, under
// wmu.
func (s *Store) release() {
	if s.releaseErr {
		return
	}
	if err := boltmap.Release(s.db); err != nil {
		s.releaseErr = true
		s.log.Warn("history: cannot release the file's mapped pages; they stay in RSS until the file is mapped again", "err", err)
	}
}

// Bytes is the key and value bytes the history holds.
func (s *Store) Bytes() int64 {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.bytesLocked()
}

func (s *Store) bytesLocked() int64 {
	n := s.alertBytes + s.jBytes
	for _, b := range s.rawBytes {
		n += b
	}
	for _, b := range s.rollBytes {
		n += b
	}
	return n
}

func oldest(m map[int64]int64) (int64, bool) {
	var o int64
	found := false
	for p := range m {
		if !found || p < o {
			o, found = p, true
		}
	}
	return o, found
}

// evict drops the partitions past their retention, then the oldest ones
// while the history holds more than its limit, and the oldest alerts
// beyond max_alerts.
func (s *Store) evict(tx *bolt.Tx) error {
	now := s.now()
	drop := func(name []byte, sizes map[int64]int64, p int64) error {
		if err := tx.Bucket(name).DeleteBucket(partKey(p)); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
			return err
		}
		delete(sizes, p)
		s.m.evicted.Inc()
		return nil
	}
	// Retention: a raw hour goes when its end is past raw, a rollup day
	// when its end is past rollups.
	for {
		p, ok := oldest(s.rawBytes)
		if !ok || time.Unix(p+3600, 0).After(now.Add(-s.cfg.Raw)) {
			break
		}
		if err := drop(bktRaw, s.rawBytes, p); err != nil {
			return err
		}
	}
	for {
		p, ok := oldest(s.rollBytes)
		if !ok || time.Unix(p+86400, 0).After(now.Add(-s.cfg.Rollups)) {
			break
		}
		if err := drop(bktRoll, s.rollBytes, p); err != nil {
			return err
		}
	}
	// Size.
	limit := int64(float64(s.cfg.limit()) / s.ratio)
	for total := s.bytesLocked(); total > limit; total = s.bytesLocked() {
		var rawTotal int64
		for _, b := range s.rawBytes {
			rawTotal += b
		}
		rp, rok := oldest(s.rawBytes)
		dp, dok := oldest(s.rollBytes)
		switch {
		case rok && (rawTotal*2 > total || !dok):
			if err := drop(bktRaw, s.rawBytes, rp); err != nil {
				return err
			}
		case dok:
			if err := drop(bktRoll, s.rollBytes, dp); err != nil {
				return err
			}
		default:
			// Only alerts left: max_alerts bounds them.
			total = 0
		}
		if total == 0 {
			break
		}
	}
	if s.alertCount > s.cfg.MaxAlerts {
		c := tx.Bucket(bktAlerts).Cursor()
		for k, v := c.First(); k != nil && s.alertCount > s.cfg.MaxAlerts; k, v = c.First() {
			s.alertBytes -= int64(len(k) + len(v))
			s.alertCount--
			if err := c.Delete(); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close closes the file. Call it after Run returned (Run commits last);
// anything added after that is lost.
func (s *Store) Close() error { return s.db.Close() }

// FileSize is the size of the history file on disk.
func (s *Store) FileSize() int64 {
	fi, err := os.Stat(s.db.Path())
	if err != nil {
		return 0
	}
	return fi.Size()
}
