package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/backoff"
	"github.com/ferry-edge/ferry/internal/boltmap"
	"github.com/ferry-edge/ferry/internal/codec"
)

// Drop reasons, the reason label of ferry_buffer_dropped_total.
const (
	reasonSize      = "size"       // max_size reached: oldest records dropped
	reasonAge       = "age"        // older than max_age
	reasonQueueFull = "queue_full" // the queue in front of the writer was full
	reasonCorrupt   = "corrupt"    // a stored record failed its checksum
	reasonDiskError = "disk_error" // a commit failed; the scan was not accepted
	reasonClosed    = "closed"     // appended after Close
)

const (
	// maintenanceInterval: the writer wakes this often when idle, to
	// expire by age, end episodes and consider compaction.
	maintenanceInterval = time.Second
	// maxDropsPerCycle and maxExpirePerCycle bound the deletions one
	// commit makes; more wait for the next.
	maxDropsPerCycle  = 1 << 14
	maxExpirePerCycle = 64
	// ackLinger gathers acks (when nothing else is queued) into fewer
	// commits.
	ackLinger = 10 * time.Millisecond
	// maxRatio caps ratio: beyond it the file may exceed its slack.
	maxRatio = 2.0
	// compactEvery spaces compaction checks.
	compactEvery = 10 * time.Second
	// releaseEvery spaces the releases of the file's mapped pages
	// (release): at 10k samples/s the records read in a second map about
	// 0.2 MiB, and a release costs a page-table walk of the mapping and
	// the hot pages' minor faults after it.
	releaseEvery = time.Second
)

// writer is the state of the writer goroutine; only it touches these
// fields (Open fills them before the goroutine starts).
type writer struct {
	b *Buffer

	enc    codec.Encoder
	arena  []byte
	recs   []newRecord
	groups map[string]int
	order  []string
	gscans [][]ferry.Scan

	scans   []ferry.Scan
	alerts  []ferry.Alert // this cycle's, then kept for retry after a failed commit
	ops     []*stateOp
	flushes []chan error
	acks    [ferry.NumLanes][]uint64
	keptOps []keptOp
	marks   []markOp // consumers' marks (cursor.go)
	markBuf []byte
	drops   []drop
	keyBuf  []byte

	seq      [ferry.NumLanes]uint64 // the last sequence assigned per lane
	runFirst [ferry.NumLanes]uint64 // the first sequence of this run per lane
	seqSaved [ferry.NumLanes]uint64 // the sequence the file holds
	floor    [ferry.NumLanes]uint64 // the floor file's sequences

	dd        dedupe
	newChunks []dedupeChunk
	own       ownAlerts

	// released is when release last ran; releaseErr stops it after a
	// failure.
	released   time.Time
	releaseErr bool

	// Dropping episode.
	lastDrop     time.Time
	episodeDrops uint64
	seenDrops    uint64 // queueDrops+otherDrops already counted

	// ratio is the file's pages in use over the bytes stored (at least 1):
	// the bound on stored bytes is divided by it, so that pages left part
	// full (records acked out of order) count against max_size.
	ratio float64
	// allocs holds the bytes of pages the last commits allocated.
	allocs   [8]int64
	allocIdx int

	// atLimit: the last cycle stopped at its per-cycle limit of drops; the
	// next runs at once.
	atLimit bool

	failing     error
	retryAt     time.Time
	bo          backoff.Backoff
	lastCompact time.Time

	// Wall clock steps (clock.go): the clocks at the last cycle, and the
	// shifts to store with the next commit.
	clock  clockRef
	shifts []clockShift
}

type newRecord struct {
	lane       ferry.Lane
	seq        uint64
	start, end int // the value in arena
	samples    int
	dropped    bool
}

type drop struct {
	lane     ferry.Lane
	seq      uint64
	reason   string
	inFlight bool  // the record was in flight (restored so on a failed commit)
	pending  uint8 // the consumers that had not acknowledged it
}

func newWriter(b *Buffer) *writer {
	w := &writer{b: b, groups: map[string]int{}}
	w.dd = dedupe{window: int64(b.cfg.DedupeWindow), maxKeys: b.opts.DedupeMaxKeys, seen: map[uint64]int64{}}
	w.own = ownAlerts{b: b, active: map[string]ferry.Alert{}}
	w.bo = backoff.Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second}
	w.ratio = 1
	return w
}

func (w *writer) loadDedupe(chunks []dedupeChunk) {
	for _, c := range chunks {
		for _, d := range c.digests {
			if w.dd.seen[d] < c.time {
				w.dd.seen[d] = c.time
			}
		}
		w.dd.chunks = append(w.dd.chunks, c)
		w.dd.keys += len(c.digests)
		w.dd.chunkSeq = max(w.dd.chunkSeq, c.seq)
	}
}

// reserveSeqs raises the floor file ahead of the sequences in use.
func (w *writer) reserveSeqs() error {
	need := false
	next := w.floor
	for l := range w.seq {
		if w.seq[l] >= w.floor[l] {
			next[l] = w.seq[l] + seqReserve
			need = true
		}
	}
	if !need {
		return nil
	}
	if err := writeSeqFloor(w.b.dir, next); err != nil {
		return err
	}
	w.floor = next
	return nil
}

// run is the writer goroutine: it commits what is queued, in cycles, until
// Close.
func (w *writer) run() {
	b := w.b
	defer close(b.done)
	// A fault on the mapped file becomes a panic that commit recovers
	// into an error, instead of killing the process.
	debug.SetPanicOnFault(true)
	tick := time.NewTicker(maintenanceInterval)
	defer tick.Stop()
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	more := true // a first cycle hands over what Open raised
	// since is when the work now pending began to wait, at the latest: the
	// start of the last cycle when work arrived during it. Telemetry that
	// arrived while a commit ran lingers for the rest of its
	// commit_interval like telemetry that finds the writer idle: committed
	// at once, it made commits follow each other back to back whenever
	// messages flow, a handful of messages each (at 1000 QoS 1 msg/s a
	// commit of about 5 scans instead of commit_max_waiting; issue 20).
	var since time.Time
	first := true
	for {
		if !more {
			select {
			case <-b.notify:
			case <-tick.C:
			}
			since = time.Now()
		}
		// Linger a moment for company, unless there is plenty already,
		// someone waits, or the last cycle stopped at its own limit.
		if d := b.lingerFor(); d > 0 && !first && !w.atLimit {
			deadline := since.Add(d)
			if wait := time.Until(deadline); wait > 0 {
				linger.Reset(wait)
			wait:
				for {
					select {
					case <-linger.C:
						break wait
					case <-b.notify:
						d := b.lingerFor()
						if d == 0 {
							linger.Stop()
							break wait
						}
						if t := time.Now().Add(d); t.Before(deadline) {
							deadline = t
							linger.Reset(d)
						}
					}
				}
			}
		}
		first = false
		since = time.Now()
		var closing bool
		more, closing = w.cycle()
		if closing && (!more || w.failing != nil) {
			if n := len(w.alerts); n > 0 {
				b.log.Error("alerts not stored: buffer closed while the disk fails", "alerts", n, "err", w.failing)
				b.m.dropped(ferry.LaneAlerts, reasonDiskError, n)
			}
			return
		}
	}
}

// lingerFor returns how long the writer should wait for more before it
// commits (the group commit): not at all when the batch is full, when
// CommitMaxWaiting scans wait for their acknowledgement, when someone
// waits (Flush, a StateStore call) or the buffer closes; Options.Linger
// for alerts; Config.CommitInterval for telemetry; ackLinger when only
// acks (or a maintenance tick) are waiting.
func (b *Buffer) lingerFor() time.Duration {
	b.qmu.Lock()
	defer b.qmu.Unlock()
	switch {
	case b.closing || len(b.flushes) > 0 || len(b.stateOps) > 0 || b.queued >= b.opts.MaxBatch ||
		b.waiting >= b.cfg.CommitMaxWaiting:
		return 0
	case len(b.alertq) > 0:
		return b.opts.Linger
	case b.queued > 0:
		if b.opts.commitInterval > 0 {
			return b.opts.commitInterval
		}
		return max(b.cfg.CommitInterval, b.opts.Linger)
	}
	return ackLinger
}

// cycle commits one batch. It reports whether more work is already waiting
// and whether the buffer is closing.
func (w *writer) cycle() (more, closing bool) {
	b := w.b
	w.atLimit = false
	now := b.now()
	b.qmu.Lock()
	w.scans, b.scans = b.scans, w.scans[:0]
	samples := b.queued
	b.queued = 0
	b.waiting = 0
	b.room.Broadcast()
	w.alerts = append(w.alerts, b.alertq...)
	clear(b.alertq)
	b.alertq = b.alertq[:0]
	w.ops = append(w.ops, b.stateOps...)
	clear(b.stateOps)
	b.stateOps = b.stateOps[:0]
	w.flushes = append(w.flushes, b.flushes...)
	clear(b.flushes)
	b.flushes = b.flushes[:0]
	closing = b.closing
	b.qmu.Unlock()

	// While the disk fails, scans are refused at once and the rest waits
	// for the next attempt.
	if w.failing != nil && now.Before(w.retryAt) && !closing {
		w.refuseScans(w.failing)
		w.failOps(w.failing)
		return false, false
	}

	b.mu.Lock()
	for l := range w.acks {
		w.acks[l] = append(w.acks[l], b.acks[l]...)
		b.acks[l] = b.acks[l][:0]
	}
	b.expireKept(now.UnixNano())
	w.keptOps = append(w.keptOps, b.kept.ops...)
	clear(b.kept.ops)
	b.kept.ops = b.kept.ops[:0]
	w.takeMarks()
	b.mu.Unlock()

	if step := w.checkClock(now); step > 0 {
		w.clockStepped(step)
	}
	nowNs := now.UnixNano()
	w.arena = w.arena[:0]
	w.recs = w.recs[:0]
	w.drops = w.drops[:0]
	dedupeDrops := w.buildTelemetry(nowNs)
	w.buildAlerts(0)
	more = w.planBounds(nowNs)
	w.atLimit = more
	// The buffer's own alerts of this cycle join it; the next cycle's
	// bounds account for them.
	w.episode(now)
	w.own.tick(now)
	n := len(w.alerts)
	w.alerts = append(w.alerts, w.own.out...)
	clear(w.own.out)
	w.own.out = w.own.out[:0]
	w.buildAlerts(n)
	w.dd.planExpiry(nowNs, maxExpirePerCycle)
	w.newChunks = w.newChunks[:0]

	// While failing, every attempt commits (if only to test the disk).
	work := w.failing != nil || len(w.keptOps) > 0 || len(w.recs) > 0 || len(w.drops) > 0 || len(w.ops) > 0 || w.own.dirty || w.dd.expire > 0 || len(w.dd.added) > 0 || len(w.shifts) > 0 || len(w.marks) > 0
	for l := range w.acks {
		work = work || len(w.acks[l]) > 0
	}
	var err error
	var took time.Duration
	if work {
		start := time.Now()
		err = w.commit(nowNs)
		took = time.Since(start)
	}
	if err != nil {
		w.failed(err, now)
		return false, closing
	}
	w.committed(now, samples, dedupeDrops, work, took)
	if !closing && now.Sub(w.lastCompact) >= compactEvery {
		w.maybeCompact(now)
	}
	b.qmu.Lock()
	more = more || len(b.scans) > 0 || len(b.alertq) > 0 || len(b.flushes) > 0 || len(b.stateOps) > 0
	b.qmu.Unlock()
	return more, closing
}

// buildTelemetry groups the scans by device and encodes each group into
// records of at most MaxRecordBytes. It returns how many redelivered scans
// the dedupe dropped.
func (w *writer) buildTelemetry(nowNs int64) (dups int) {
	b := w.b
	if len(w.scans) == 0 {
		return 0
	}
	cfgv := *b.configVersion.Load()
	clear(w.groups)
	w.order = w.order[:0]
	for i := range w.scans {
		s := &w.scans[i]
		if s.Key != "" && w.dd.window > 0 {
			d := digest(s.Key)
			if s.Redelivered && w.dd.known(d, nowNs) {
				dups++
				continue
			}
			w.dd.record(d, nowNs)
		}
		g, ok := w.groups[s.Device]
		if !ok {
			g = len(w.order)
			w.groups[s.Device] = g
			w.order = append(w.order, s.Device)
			if g == len(w.gscans) {
				w.gscans = append(w.gscans, nil)
			}
		}
		w.gscans[g] = append(w.gscans[g], *s)
	}
	limit := b.opts.MaxRecordBytes - valueHeader
	for g, dev := range w.order {
		rest := w.gscans[g]
		for len(rest) > 0 {
			start := len(w.arena)
			w.arena = append(w.arena, make([]byte, valueHeader)...)
			var n int
			w.arena, n = w.enc.AppendTelemetryMax(w.arena, cfgv, dev, rest, limit)
			w.seq[ferry.LaneTelemetry]++
			seq := w.seq[ferry.LaneTelemetry]
			samples := 0
			for i := range rest[:n] {
				samples += len(rest[i].Samples)
			}
			w.recs = append(w.recs, newRecord{lane: ferry.LaneTelemetry, seq: seq, start: start, end: len(w.arena), samples: samples})
			rest = rest[n:]
		}
		clear(w.gscans[g])
		w.gscans[g] = w.gscans[g][:0]
	}
	return dups
}

// buildAlerts encodes w.alerts[from:], each into its own record.
func (w *writer) buildAlerts(from int) {
	cfgv := *w.b.configVersion.Load()
	for i := from; i < len(w.alerts); i++ {
		start := len(w.arena)
		w.arena = append(w.arena, make([]byte, valueHeader)...)
		w.arena = codec.AppendAlert(w.arena, cfgv, &w.alerts[i])
		w.seq[ferry.LaneAlerts]++
		w.recs = append(w.recs, newRecord{lane: ferry.LaneAlerts, seq: w.seq[ferry.LaneAlerts], start: start, end: len(w.arena)})
	}
}

// seal fills in the header of each record's value (time and checksum).
func (w *writer) seal(nowNs int64) {
	for i := range w.recs {
		r := &w.recs[i]
		v := w.arena[r.start:r.end]
		var key [keySize]byte
		binary.BigEndian.PutUint64(key[:], r.seq)
		binary.BigEndian.PutUint64(v, uint64(nowNs))
		crc := crcOf(key[:], v)
		binary.BigEndian.PutUint32(v[8:], crc)
	}
}

// planBounds picks the records to drop for max_age and max_size and marks
// them gone in the index (undone if the commit fails). Drops go oldest
// first, telemetry before alerts, and skip records in flight. It reports
// whether it stopped at its per-cycle limit.
func (w *writer) planBounds(nowNs int64) (more bool) {
	b := w.b
	budget := maxDropsPerCycle
	b.mu.Lock()
	defer b.mu.Unlock()
	tel := &b.lanes[ferry.LaneTelemetry]
	if b.cfg.MaxAge > 0 {
		cutoff := nowNs - int64(b.cfg.MaxAge)
		for i := tel.nextReady(tel.head); i >= 0 && tel.ents[i].time < cutoff; i = tel.nextReady(i + 1) {
			if budget == 0 {
				return true
			}
			w.dropEntry(ferry.LaneTelemetry, i, reasonAge)
			budget--
		}
	}
	incoming := int64(0)
	for _, r := range w.recs {
		incoming += int64(keySize + r.end - r.start + recordOverhead)
	}
	// New alerts count, but are never dropped on arrival.
	// The pages the last commits rewrote are free only once no reader
	// sees them: keep room for two commits' worth.
	limit := int64(float64(b.cfg.dataLimit())/w.ratio) - w.dd.bytes() - 2*w.footprint()
	over := b.lanes[ferry.LaneAlerts].bytes + tel.bytes + incoming - limit
	for i := tel.nextReady(tel.head); over > 0 && i >= 0; i = tel.nextReady(i + 1) {
		if budget == 0 {
			return true
		}
		over -= w.dropEntry(ferry.LaneTelemetry, i, reasonSize)
		budget--
	}
	for i := range w.recs {
		if over <= 0 {
			break
		}
		r := &w.recs[i]
		if r.lane == ferry.LaneTelemetry {
			r.dropped = true
			over -= int64(keySize + r.end - r.start + recordOverhead)
			w.drops = append(w.drops, drop{ferry.LaneTelemetry, r.seq, reasonSize, false, tel.all})
		}
	}
	// Telemetry in flight goes before any alert: the uplink may still
	// deliver it (it is counted as dropped all the same).
	for i := tel.head; over > 0 && i < len(tel.ents); i++ {
		if tel.ents[i].state != inFlight {
			continue
		}
		if budget == 0 {
			return true
		}
		over -= w.dropEntry(ferry.LaneTelemetry, i, reasonSize)
		budget--
	}
	al := &b.lanes[ferry.LaneAlerts]
	for i := al.nextReady(al.head); over > 0 && i >= 0; i = al.nextReady(i + 1) {
		if budget == 0 {
			return true
		}
		over -= w.dropEntry(ferry.LaneAlerts, i, reasonSize)
		budget--
	}
	return false
}

// dropEntry removes entry i of lane from the index (b.mu held) and
// records the drop (undone if the commit fails); it returns the entry's
// size.
func (w *writer) dropEntry(lane ferry.Lane, i int, reason string) int64 {
	l := &w.b.lanes[lane]
	e := l.ents[i]
	l.remove(i)
	w.drops = append(w.drops, drop{lane, e.seq, reason, e.state == inFlight, e.pending})
	return int64(e.size)
}

// episode raises the dropping alert at the first drop and clears it after
// DropQuietPeriod without one.
func (w *writer) episode(now time.Time) {
	b := w.b
	n := uint64(len(w.drops))
	other := b.queueDrops.Load() + b.otherDrops.Load()
	n += other - w.seenDrops
	w.seenDrops = other
	if n > 0 {
		if w.episodeDrops == 0 || !w.own.isActive(RuleDropping) {
			w.episodeDrops = 0
		}
		w.episodeDrops += n
		w.lastDrop = now
		w.own.raise(RuleDropping, ferry.SeverityWarning, fmt.Sprintf("buffer is dropping data (%s); see ferry_buffer_dropped_total", w.dropSummary()), ferry.UintValue(n), now)
		return
	}
	if w.own.isActive(RuleDropping) {
		if w.lastDrop.IsZero() {
			w.lastDrop = now // raised before a restart: wait a full quiet period
		}
		if now.Sub(w.lastDrop) >= DropQuietPeriod {
			w.own.clear(RuleDropping, fmt.Sprintf("buffer stopped dropping: %d dropped in this episode", w.episodeDrops), ferry.UintValue(w.episodeDrops), now)
			w.episodeDrops = 0
		}
	}
}

func (w *writer) dropSummary() string {
	reasons := map[string]int{}
	var order []string
	for _, d := range w.drops {
		k := d.lane.String() + " " + d.reason
		if reasons[k] == 0 {
			order = append(order, k)
		}
		reasons[k]++
	}
	var s strings.Builder
	for i, k := range order {
		if i > 0 {
			s.WriteString(", ")
		}
		fmt.Fprintf(&s, "%d %s", reasons[k], k)
	}
	if s.Len() == 0 {
		s.WriteString("queue full or damaged records")
	}
	return s.String()
}

// commit writes the cycle in one transaction.
func (w *writer) commit(nowNs int64) (err error) {
	b := w.b
	if b.db == nil {
		return errors.New("store is not open")
	}
	if err := w.reserveSeqs(); err != nil {
		return err
	}
	w.seal(nowNs)
	tx, err := b.db.Begin(true)
	if err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			_ = tx.Rollback()
			err = fmt.Errorf("%w: bbolt panicked: %v\n%s", errCorrupt, r, debug.Stack())
		}
	}()
	if err := w.fill(tx, nowNs); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	st := tx.Stats()
	w.allocs[w.allocIdx%len(w.allocs)] = st.GetPageAlloc()
	w.allocIdx++
	return nil
}

// footprint is the most page bytes one of the last commits allocated.
func (w *writer) footprint() int64 {
	if w.b.opts.fixedLimit {
		return 0
	}
	return slices.Max(w.allocs[:])
}

func (w *writer) fill(tx *bolt.Tx, nowNs int64) error {
	var lanes [ferry.NumLanes]*bolt.Bucket
	for l, name := range laneBuckets {
		bk := tx.Bucket(name)
		if bk == nil {
			return fmt.Errorf("%w: bucket %s is missing", errCorrupt, name)
		}
		bk.FillPercent = 1.0
		lanes[l] = bk
	}
	// Retained records are copied before the acks delete them.
	if err := w.fillKept(tx, lanes); err != nil {
		return err
	}
	key := w.keyBuf[:0]
	for l, seqs := range w.acks {
		for _, seq := range seqs {
			key = seqKey(key[:0], seq)
			if err := lanes[l].Delete(key); err != nil {
				return err
			}
		}
	}
	for _, d := range w.drops {
		key = seqKey(key[:0], d.seq)
		if err := lanes[d.lane].Delete(key); err != nil {
			return err
		}
	}
	if err := w.fillMarks(tx); err != nil {
		return err
	}
	for i := range w.recs {
		r := &w.recs[i]
		if r.dropped {
			continue
		}
		key = seqKey(key[:0], r.seq)
		if err := lanes[r.lane].Put(key, w.arena[r.start:r.end]); err != nil {
			return err
		}
	}
	for l := range lanes {
		if w.seq[l] != w.seqSaved[l] {
			if err := lanes[l].SetSequence(w.seq[l]); err != nil {
				return err
			}
		}
	}
	w.keyBuf = key
	if err := w.fillDedupe(tx, nowNs); err != nil {
		return err
	}
	for _, op := range w.ops {
		op.err = op.apply(tx)
	}
	if w.own.dirty {
		if err := w.persistOwn(tx); err != nil {
			return err
		}
	}
	return w.fillShifts(tx)
}

func (w *writer) fillDedupe(tx *bolt.Tx, nowNs int64) error {
	dd := &w.dd
	if dd.expire == 0 && len(dd.added) == 0 {
		return nil
	}
	bk := tx.Bucket(bucketDedupe)
	if bk == nil {
		return fmt.Errorf("%w: bucket %s is missing", errCorrupt, bucketDedupe)
	}
	bk.FillPercent = 1.0
	var key [8]byte
	for i := dd.head; i < dd.head+dd.expire; i++ {
		binary.BigEndian.PutUint64(key[:], dd.chunks[i].seq)
		if err := bk.Delete(key[:]); err != nil {
			return err
		}
	}
	seq := dd.chunkSeq
	for rest := dd.added; len(rest) > 0; {
		n := min(len(rest), digestsPerChunk)
		seq++
		c := dedupeChunk{seq: seq, time: nowNs, digests: append([]uint64(nil), rest[:n]...)}
		binary.BigEndian.PutUint64(key[:], seq)
		if err := bk.Put(key[:], appendChunk(nil, nowNs, c.digests)); err != nil {
			return err
		}
		w.newChunks = append(w.newChunks, c)
		rest = rest[n:]
	}
	if seq != dd.chunkSeq {
		return bk.SetSequence(seq)
	}
	return nil
}

func (w *writer) persistOwn(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return fmt.Errorf("%w: bucket %s is missing", errCorrupt, bucketMeta)
	}
	var stale [][]byte
	c := meta.Cursor()
	for k, _ := c.Seek([]byte(alertPrefix)); k != nil && strings.HasPrefix(string(k), alertPrefix); k, _ = c.Next() {
		stale = append(stale, append([]byte(nil), k...))
	}
	for _, k := range stale {
		if err := meta.Delete(k); err != nil {
			return err
		}
	}
	for rule, a := range w.own.active {
		if err := meta.Put([]byte(alertPrefix+rule), codec.AppendAlert(nil, "", &a)); err != nil {
			return err
		}
	}
	return nil
}

// committed finishes a successful cycle: the index learns the new records,
// callbacks run, waiters wake.
func (w *writer) committed(now time.Time, samples, dups int, wrote bool, took time.Duration) {
	b := w.b
	nowNs := now.UnixNano()
	recovered := w.failing
	w.failing = nil
	w.bo.Reset()
	w.seqSaved = w.seq
	w.own.dirty = false
	w.shifts = w.shifts[:0]
	w.dd.commit(w.newChunks)

	var appended [ferry.NumLanes]int
	var acked [ferry.NumLanes]int
	b.mu.Lock()
	for i := range w.recs {
		r := &w.recs[i]
		if r.dropped {
			continue
		}
		b.lanes[r.lane].add(r.seq, nowNs, keySize+r.end-r.start+recordOverhead)
		appended[r.lane]++
	}
	for l := range w.acks {
		acked[l] = len(w.acks[l])
		w.acks[l] = w.acks[l][:0]
	}
	clear(w.keptOps)
	w.keptOps = w.keptOps[:0]
	w.committedMarks()
	for l := range b.lanes {
		b.lanes[l].pop()
	}
	b.err = nil
	if appended[0]+appended[1] > 0 {
		close(b.avail)
		b.avail = make(chan struct{})
	}
	b.mu.Unlock()

	for _, d := range w.drops {
		b.m.dropped(d.lane, d.reason, 1)
		b.cm.dropped(d.lane, d.reason, d.pending)
	}
	for l := range appended {
		b.m.appended[l].Add(float64(appended[l]))
		b.m.acked[l].Add(float64(acked[l]))
	}
	if wrote {
		b.m.commits.Inc()
		b.m.commitDuration.Observe(took.Seconds())
	}
	if samples > 0 {
		b.m.batchSamples.Observe(float64(samples))
	}
	if dups > 0 {
		b.m.deduplicated.Add(float64(dups))
	}
	if recovered != nil {
		b.log.Info("buffer commits work again", "file", b.path)
		w.own.clear(RuleDiskError, "buffer commits work again", ferry.Value{}, now)
	}
	clear(w.alerts)
	w.alerts = w.alerts[:0]
	for i := range w.scans {
		w.scans[i].Finish(nil)
	}
	clear(w.scans)
	w.scans = w.scans[:0]
	for _, op := range w.ops {
		op.done <- op.err
	}
	clear(w.ops)
	w.ops = w.ops[:0]
	for _, ch := range w.flushes {
		ch <- nil
	}
	clear(w.flushes)
	w.flushes = w.flushes[:0]
	b.m.fileBytes.Set(float64(b.fileSize()))
	if wrote {
		w.measure()
		w.release()
	}
}

// release drops the pages of the file that reads mapped into the process
// (internal/boltmap), at most once per Options.releaseEvery. Every record
// is read through bbolt's mapping at least once (sent by the uplink,
// copied into the retention when acknowledged) and would otherwise stay
// in the process's RSS until bbolt maps the file again, which it stops
// doing once the file has its steady size: the whole file counted as the
// gateway's memory (41 MiB of an 85 MB file after seven minutes at 10k
// samples/s in the system bench).
func (w *writer) release() {
	b := w.b
	if w.releaseErr || time.Since(w.released) < b.opts.releaseEvery {
		return
	}
	w.released = time.Now()
	if err := boltmap.Release(b.db); err != nil {
		// Nothing is lost but memory; say it once.
		w.releaseErr = true
		b.log.Warn("buffer: cannot release the file's mapped pages; they stay in RSS until the file is mapped again", "err", err)
	}
}

// measure updates ratio from the file's pages in use.
func (w *writer) measure() {
	b := w.b
	tx, err := b.db.Begin(false)
	if err != nil {
		return
	}
	hwm := tx.Size()
	tx.Rollback()
	st := b.db.Stats()
	ps := int64(b.db.Info().PageSize)
	inUse := hwm - int64(st.FreePageN+st.PendingPageN)*ps
	b.mu.Lock()
	stored := b.lanes[0].bytes + b.lanes[1].bytes + b.kept.bytes
	b.mu.Unlock()
	stored += w.dd.bytes()
	if stored < b.cfg.dataLimit()/8 || b.opts.fixedLimit {
		w.ratio = 1
		return
	}
	w.ratio = min(max(float64(inUse)/float64(stored), 1), maxRatio)
}

// failed undoes a failed cycle: drops are restored, scans refused, alerts
// and acks kept for the next attempt.
func (w *writer) failed(err error, now time.Time) {
	b := w.b
	err = fmt.Errorf("commit to %s: %w", b.path, err)
	first := w.failing == nil
	w.failing = err
	w.retryAt = now.Add(w.bo.Next())
	w.dd.rollback()
	w.newChunks = w.newChunks[:0]
	b.mu.Lock()
	for _, d := range w.drops {
		if d.lane == ferry.LaneTelemetry && w.isNew(d.seq) {
			continue
		}
		l := &b.lanes[d.lane]
		if i := l.find(d.seq); i >= 0 {
			l.restore(i, d.inFlight)
		}
	}
	b.err = err
	b.mu.Unlock()
	w.drops = w.drops[:0]
	if first {
		b.log.Error("buffer commit failed; scans are refused until the disk works again", "file", b.path, "err", err)
		w.own.raise(RuleDiskError, ferry.SeverityCritical, err.Error(), ferry.Value{}, now)
		w.alerts = append(w.alerts, w.own.out...)
		clear(w.own.out)
		w.own.out = w.own.out[:0]
	}
	// Keep the alerts for the next attempt, within the alert queue's bound.
	if over := len(w.alerts) - b.opts.AlertQueueSize; over > 0 {
		for _, a := range w.alerts[:over] {
			b.log.Error("alert not stored: disk failing and alert queue full", "alert", a.ID, "rule", a.Rule, "state", a.State.String())
		}
		b.m.dropped(ferry.LaneAlerts, reasonQueueFull, over)
		w.alerts = append(w.alerts[:0], w.alerts[over:]...)
	}
	w.refuseScans(err)
	w.failOps(err)
}

func (w *writer) isNew(seq uint64) bool {
	for i := range w.recs {
		if w.recs[i].seq == seq && w.recs[i].lane == ferry.LaneTelemetry {
			return true
		}
	}
	return false
}

func (w *writer) refuseScans(err error) {
	if len(w.scans) > 0 {
		w.b.m.dropped(ferry.LaneTelemetry, reasonDiskError, len(w.scans))
	}
	for i := range w.scans {
		w.scans[i].Finish(err)
	}
	clear(w.scans)
	w.scans = w.scans[:0]
}

func (w *writer) failOps(err error) {
	for _, op := range w.ops {
		op.done <- err
	}
	clear(w.ops)
	w.ops = w.ops[:0]
	for _, ch := range w.flushes {
		ch <- err
	}
	clear(w.flushes)
	w.flushes = w.flushes[:0]
}
