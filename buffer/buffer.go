package buffer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
)

// Options tune a Buffer. Only Gateway is required; zero values of the tuning
// fields take the defaults below.
type Options struct {
	// Gateway is the gateway id: the first part of every record id.
	Gateway string
	// ConfigVersion is written into every record header (see
	// SetConfigVersion).
	ConfigVersion string
	Logger        *slog.Logger
	// Registerer receives the ferry_buffer_… metrics; nil registers none.
	Registerer prometheus.Registerer
	Now        func() time.Time
	// Alert receives the buffer's own alerts (dropping data, store
	// quarantined, disk error). The buffer stores them in its alerts lane
	// itself; Alert is for the local sinks. It is called from the writer
	// goroutine and must not block.
	Alert func(ferry.Alert)

	// QueueSize bounds the samples waiting for the writer (a scan counts
	// its samples, at least 1). When it is full AppendScan drops the newest
	// scan. Default 131072.
	QueueSize int
	// AlertQueueSize bounds the alerts waiting for the writer, and those
	// kept for retry while the disk fails. Default 4096.
	AlertQueueSize int
	// Linger is how long the writer waits, after the first alert into an
	// idle queue, for more to commit together (telemetry waits for
	// Config.CommitInterval). Default 1ms.
	Linger time.Duration
	// MaxBatch ends the linger at once when this many samples are queued.
	// Default 16384.
	MaxBatch int
	// MaxRecordBytes caps the stored size of a telemetry record (a record
	// holding a single scan may exceed it). The default fits two records
	// in one bbolt page (2016 bytes with 4 KiB pages): no record needs
	// overflow pages, so every freed page can be reused and the file does
	// not fragment.
	MaxRecordBytes int
	// LockTimeout is how long Open waits for the buffer's lock. Default 1s.
	LockTimeout time.Duration
	// DedupeMaxKeys bounds the dedupe keys remembered (about 32 bytes of
	// memory each); the oldest are forgotten first. Default 1048576.
	DedupeMaxKeys int
	// Consumers names the buffer's consumers (one per upstream, at most
	// 8), each with its own durable cursor (see Cursor). Empty: one
	// consumer, DefaultConsumer, served by the Buffer's own methods.
	Consumers []string

	// commitInterval, when set, replaces Config.CommitInterval beyond its
	// 1s bound: tests of the group commit's triggers make it an hour, so
	// that only the trigger can have caused a commit.
	commitInterval time.Duration
	// releaseEvery spaces the releases of the file's mapped pages
	// (writer.release); tests make it tiny to release after every commit.
	releaseEvery time.Duration
	// fixedLimit turns off the adaptation of the bound to the file's page
	// fill, for tests that count drops exactly.
	fixedLimit bool
	// mono is the monotonic clock the writer detects wall clock steps
	// with (clock.go); nil, with an injected Now, turns the detection off.
	mono func() time.Duration
}

const (
	defaultQueueSize      = 1 << 17
	defaultAlertQueueSize = 4096
	defaultLinger         = time.Millisecond
	defaultMaxBatch       = 1 << 14
	defaultLockTimeout    = time.Second
	defaultDedupeMaxKeys  = 1 << 20
)

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
		if o.mono == nil {
			start := time.Now()
			o.mono = func() time.Duration { return time.Since(start) }
		}
	}
	if o.QueueSize <= 0 {
		o.QueueSize = defaultQueueSize
	}
	if o.AlertQueueSize <= 0 {
		o.AlertQueueSize = defaultAlertQueueSize
	}
	if o.Linger <= 0 {
		o.Linger = defaultLinger
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = defaultMaxBatch
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = defaultLockTimeout
	}
	if o.DedupeMaxKeys <= 0 {
		o.DedupeMaxKeys = defaultDedupeMaxKeys
	}
	if o.releaseEvery <= 0 {
		o.releaseEvery = releaseEvery
	}
}

// Buffer is ferry's store-and-forward queue. See the package documentation.
type Buffer struct {
	dir, path string
	cfg       Config
	opts      Options
	log       *slog.Logger
	now       func() time.Time
	m         *metrics

	lock *os.File

	// dbMu guards db against compaction, which swaps the file: readers
	// hold it for reading around their transactions. Only the writer
	// goroutine writes db.
	dbMu sync.RWMutex
	db   *bolt.DB

	configVersion atomic.Pointer[string]
	pageSize      int // bbolt's page size (of every file this buffer opens)

	// The queue in front of the writer, guarded by qmu.
	qmu sync.Mutex
	// room is signalled (on qmu) when the writer takes the queue or the
	// buffer closes: AppendScanWait waits on it.
	room       sync.Cond
	scans      []ferry.Scan
	queued     int // samples in scans
	waiting    int // queued scans with a Done: a source waits for their commit
	alertq     []ferry.Alert
	stateOps   []*stateOp
	flushes    []chan error
	closing    bool
	notify     chan struct{} // capacity 1: there is work for the writer
	queueDrops atomic.Uint64 // scans dropped by AppendScan, for the writer's episode
	otherDrops atomic.Uint64 // records dropped outside the writer (damaged ones Next found)

	// The index and the read side, guarded by mu.
	mu    sync.Mutex
	lanes [ferry.NumLanes]laneIndex
	acks  [ferry.NumLanes][]uint64 // deletions for the writer
	kept  retention                // acknowledged records retained (retain.go)
	marks []markOp                 // consumers' marks for the writer (cursor.go)
	// keptChecked is when the last good check of the upstream started
	// (unix ns; KeptChecked).
	keptChecked atomic.Int64
	avail       chan struct{} // closed when records become ready
	closed      bool
	err         error // the current disk problem

	// The consumers (cursor.go), fixed at Open.
	consumers []string
	cursors   []*Cursor
	cm        *consumerMetrics

	w         *writer
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating it if needed) the buffer in dir/buffer.db and starts
// its writer goroutine. It fails fast, with ErrLocked, when another ferry
// holds the buffer. A damaged file is moved aside to
// buffer.db.corrupt-<time>, what can be read of it is salvaged into a fresh
// file, and an alert is raised; Open then succeeds.
func Open(dir string, cfg Config, opts Options) (*Buffer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("buffer: %w: %w", ferry.ErrInvalidConfig, err)
	}
	if opts.Gateway == "" {
		return nil, fmt.Errorf("buffer: %w: Options.Gateway is empty", ferry.ErrInvalidConfig)
	}
	if err := checkConsumers(opts.Consumers); err != nil {
		return nil, fmt.Errorf("buffer: %w: %w", ferry.ErrInvalidConfig, err)
	}
	opts.setDefaults()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("buffer: create data_dir: %w", err)
	}
	lock, err := lockDir(dir, true, opts.LockTimeout)
	if err != nil {
		return nil, fmt.Errorf("buffer: %w", err)
	}
	b := &Buffer{
		dir:    dir,
		path:   filepath.Join(dir, fileName),
		cfg:    cfg,
		opts:   opts,
		log:    opts.Logger,
		now:    opts.Now,
		lock:   lock,
		notify: make(chan struct{}, 1),
		avail:  make(chan struct{}),
		done:   make(chan struct{}),
	}
	b.room.L = &b.qmu
	v := opts.ConfigVersion
	b.configVersion.Store(&v)
	b.m = newMetrics(b)
	b.initConsumers()
	b.w = newWriter(b)
	if err := b.openStore(); err != nil {
		lock.Close()
		return nil, fmt.Errorf("buffer: %w", err)
	}
	// DB.Info reads the mapping a commit that grows the file replaces:
	// only the writer may call it once it runs.
	b.pageSize = b.db.Info().PageSize
	if err := b.loadKept(); err != nil {
		b.db.Close()
		lock.Close()
		return nil, fmt.Errorf("buffer: retained records: %w", err)
	}
	if err := b.loadMarks(); err != nil {
		b.db.Close()
		lock.Close()
		return nil, fmt.Errorf("buffer: consumer cursors: %w", err)
	}
	if opts.Registerer != nil {
		if err := b.m.register(opts.Registerer); err != nil {
			b.db.Close()
			lock.Close()
			return nil, fmt.Errorf("buffer: register metrics: %w", err)
		}
	}
	go b.w.run()
	return b, nil
}

// AppendScan queues s for the next commit and returns at once. s.Done is
// called with nil once s is committed (fsync'd), or with an error when it
// never will be. When the queue is full (the disk is slower than the
// drivers) the newest scan, s, is dropped: s.Done(ferry.ErrDropped), and
// ferry_buffer_dropped_total{lane="telemetry",reason="queue_full"} counts
// it. After Close, s.Done(ferry.ErrClosed).
func (b *Buffer) AppendScan(s ferry.Scan) { b.appendScan(s, false) }

// AppendScanWait is AppendScan for a caller that has a bounded queue of
// its own in front of the buffer (the gateway's pipeline): when the queue
// is full it waits until the writer has taken it, instead of dropping s,
// so that the caller's queue is the one place where scans are dropped and
// counted. It never waits while the queue is empty (a scan larger than
// QueueSize is taken alone), and returns at once after Close
// (s.Done(ferry.ErrClosed)).
func (b *Buffer) AppendScanWait(s ferry.Scan) { b.appendScan(s, true) }

func (b *Buffer) appendScan(s ferry.Scan, wait bool) {
	n := max(1, len(s.Samples))
	b.qmu.Lock()
	for wait && !b.closing && b.queued > 0 && b.queued+n > b.opts.QueueSize {
		b.room.Wait()
	}
	if b.closing {
		b.qmu.Unlock()
		s.Finish(ferry.ErrClosed)
		return
	}
	if b.queued+n > b.opts.QueueSize && !(wait && b.queued == 0) {
		b.qmu.Unlock()
		b.queueDrops.Add(1)
		b.m.dropped(ferry.LaneTelemetry, reasonQueueFull, 1)
		s.Finish(ferry.ErrDropped)
		return
	}
	wake := len(b.scans) == 0
	b.scans = append(b.scans, s)
	b.queued += n
	full := b.queued >= b.opts.MaxBatch
	if s.Done != nil {
		b.waiting++
		// The source holds back more until these are acknowledged.
		full = full || b.waiting >= b.cfg.CommitMaxWaiting
	}
	b.qmu.Unlock()
	if wake || full {
		b.signal()
	}
}

// AppendAlert queues a for the alerts lane. Alerts have a queue of their own
// (Options.AlertQueueSize, default 4096), so a flood of telemetry never
// crowds them out; alerts that fail to commit are kept and retried until the
// disk works again. Only when that queue is full (the disk has failed for
// long while alerts kept coming) is an alert dropped, and then loudly: an
// error log and ferry_buffer_dropped_total{lane="alerts",reason="queue_full"}.
func (b *Buffer) AppendAlert(a ferry.Alert) {
	b.qmu.Lock()
	if b.closing {
		b.qmu.Unlock()
		b.log.Error("alert not stored: buffer closed", "alert", a.ID, "rule", a.Rule, "state", a.State.String())
		b.m.dropped(ferry.LaneAlerts, reasonClosed, 1)
		return
	}
	if len(b.alertq) >= b.opts.AlertQueueSize {
		b.qmu.Unlock()
		b.queueDrops.Add(1)
		b.m.dropped(ferry.LaneAlerts, reasonQueueFull, 1)
		b.log.Error("alert not stored: alert queue full", "alert", a.ID, "rule", a.Rule, "state", a.State.String(), "queue", b.opts.AlertQueueSize)
		return
	}
	b.alertq = append(b.alertq, a)
	b.qmu.Unlock()
	b.signal()
}

func (b *Buffer) signal() {
	select {
	case b.notify <- struct{}{}:
	default:
	}
}

// SetConfigVersion sets the configuration version written into the header
// of every record committed from now on.
func (b *Buffer) SetConfigVersion(v string) { b.configVersion.Store(&v) }

// Err returns nil, or the disk problem that keeps the buffer from
// committing now (for /readyz). It returns to nil after the next
// successful commit.
func (b *Buffer) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// Flush commits everything queued before the call (scans, alerts, acks)
// and returns when that commit is done, with its error, or when ctx ends.
func (b *Buffer) Flush(ctx context.Context) error {
	ch := make(chan error, 1)
	b.qmu.Lock()
	if b.closing {
		b.qmu.Unlock()
		return ferry.ErrClosed
	}
	b.flushes = append(b.flushes, ch)
	b.qmu.Unlock()
	b.signal()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close commits the queue (calling every queued scan's Done), stops the
// writer and closes the file. Records in flight stay stored and are offered
// again after the next Open. Next, Ack and the StateStore methods return
// ferry.ErrClosed afterwards. Close is safe to call more than once.
func (b *Buffer) Close() error {
	b.closeOnce.Do(func() {
		b.qmu.Lock()
		b.closing = true
		b.room.Broadcast()
		b.qmu.Unlock()
		b.signal()
		<-b.done
		b.mu.Lock()
		b.closed = true
		close(b.avail)
		b.mu.Unlock()
		b.dbMu.Lock()
		if b.db != nil {
			// The writer has committed its last batch: mark the file
			// as closed cleanly, so the next run continues its ids.
			if err := b.db.Update(func(tx *bolt.Tx) error {
				if meta := tx.Bucket(bucketMeta); meta != nil {
					return meta.Put(keyClean, []byte{1})
				}
				return nil
			}); err != nil {
				b.log.Warn("marking the clean close failed; the next start will jump record ids", "err", err)
			}
			if err := b.db.Close(); err != nil {
				b.closeErr = fmt.Errorf("buffer: close %s: %w", b.path, err)
			}
			b.db = nil
		}
		b.dbMu.Unlock()
		if b.opts.Registerer != nil {
			b.m.unregister(b.opts.Registerer)
		}
		b.lock.Close()
	})
	return b.closeErr
}

// Stats is a snapshot of the buffer.
type Stats struct {
	Lanes [ferry.NumLanes]LaneStats `json:"lanes"`
	// FileBytes is the size of buffer.db; FreeBytes the part of it that
	// holds no data and will be reused (free pages).
	FileBytes int64 `json:"file_bytes"`
	FreeBytes int64 `json:"free_bytes"`
	// QueueLength is the samples waiting for the writer.
	QueueLength int `json:"queue_length"`
}

// LaneStats describes one lane.
type LaneStats struct {
	Lane    ferry.Lane `json:"-"`
	Records int        `json:"records"`
	// Bytes is the stored size of the records (with bbolt's per-record
	// overhead).
	Bytes int64 `json:"bytes"`
	// Oldest is when the oldest record was committed (zero when empty).
	Oldest   time.Time `json:"oldest,omitzero"`
	InFlight int       `json:"in_flight"`
}

// Stats returns the buffer's state now.
func (b *Buffer) Stats() Stats {
	var s Stats
	b.mu.Lock()
	for l := range s.Lanes {
		li := &b.lanes[l]
		s.Lanes[l] = LaneStats{Lane: ferry.Lane(l), Records: li.live, Bytes: li.bytes, InFlight: li.inFlight}
		if t := li.oldest(); t != 0 {
			s.Lanes[l].Oldest = time.Unix(0, t)
		}
	}
	b.mu.Unlock()
	b.qmu.Lock()
	s.QueueLength = b.queued
	b.qmu.Unlock()
	b.dbMu.RLock()
	if b.db != nil {
		st := b.db.Stats()
		s.FreeBytes = int64(st.FreePageN+st.PendingPageN) * int64(b.pageSize)
	}
	b.dbMu.RUnlock()
	if fi, err := os.Stat(b.path); err == nil {
		s.FileBytes = fi.Size()
	}
	return s
}
