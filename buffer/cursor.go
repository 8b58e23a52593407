package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/setting"
)

// Several consumers (issue 25). A buffer serves one consumer per upstream,
// each with its own durable cursor: Options.Consumers names them, fixed at
// Open, and Cursor(name) returns each one's Next/Ack/Release. A record is
// offered to every consumer, alerts first, and deleted once every consumer
// has acknowledged it (or a bound drops it: counted per consumer that had
// not acknowledged it, ferry_buffer_consumer_dropped_total). A consumer that
// is down blocks no other: the buffer fills, and the bounds drop its oldest
// records.
//
// The names are fixed at Open rather than registered on the fly because
// the set decides when a record may go: a consumer registered late would
// miss whatever the others had acknowledged (and the buffer deleted)
// before it came.
//
// An acknowledgement that leaves a record pending for another consumer is
// written as a mark, in the same commit as the rest of the cycle:
//
//	state/buffer-cursors   lane:u8 seq:u64be consumer → 0x01
//
// The commit that deletes a record deletes its marks. At Open, marks are
// read back into the index: each consumer is offered again exactly what it
// had not acknowledged, with the same ids. A mark of a consumer no longer
// in Options.Consumers is dropped (the consumer is forgotten), and a record
// that every remaining consumer has acknowledged is deleted then, so that
// removing an upstream from the configuration leaves nothing stuck. A
// consumer added to the list starts with everything the buffer holds.
//
// Without Options.Consumers the buffer has one consumer, DefaultConsumer,
// which is the Buffer's own Next/Ack/Release; no mark is ever written. With
// Options.Consumers the Buffer's own methods are the first consumer's.

// DefaultConsumer is the name of the single consumer of a buffer opened
// without Options.Consumers.
const DefaultConsumer = "default"

// maxConsumers is how many consumers a buffer serves: the bits of the
// index's masks.
const maxConsumers = 8

const cursorBucket = "buffer-cursors"

// markValue is the value of every mark (bbolt's empty values are kept
// apart from nested buckets only by flags: one byte is plain).
var markValue = []byte{1}

// ErrUnknownConsumer is returned by Cursor for a name that is not one of
// Options.Consumers.
var ErrUnknownConsumer = errors.New("unknown buffer consumer")

// checkConsumers validates Options.Consumers.
func checkConsumers(names []string) error {
	if len(names) > maxConsumers {
		return fmt.Errorf("Options.Consumers: %d consumers, at most %d", len(names), maxConsumers)
	}
	for i, n := range names {
		if !setting.ValidName(n) {
			return fmt.Errorf("Options.Consumers[%d]: %q is not a valid name (1 to 64 letters, digits, '_' or '-')", i, n)
		}
		if slices.Index(names, n) < i {
			return fmt.Errorf("Options.Consumers[%d]: %q is listed twice", i, n)
		}
	}
	return nil
}

// initConsumers sets up the consumers before the index is built.
func (b *Buffer) initConsumers() {
	b.consumers = slices.Clone(b.opts.Consumers)
	if len(b.consumers) == 0 {
		b.consumers = []string{DefaultConsumer}
	}
	all := uint8(1)<<len(b.consumers) - 1
	for l := range b.lanes {
		b.lanes[l].all = all
	}
	b.cursors = make([]*Cursor, len(b.consumers))
	for i, n := range b.consumers {
		b.cursors[i] = &Cursor{b: b, c: i, name: n}
	}
	b.cm = newConsumerMetrics(b)
	b.m.collectors = append(b.m.collectors, b.cm.collectors...)
}

// Consumers returns the names of the buffer's consumers.
func (b *Buffer) Consumers() []string { return slices.Clone(b.consumers) }

// Cursor returns the consumer called name.
func (b *Buffer) Cursor(name string) (*Cursor, error) {
	i := slices.Index(b.consumers, name)
	if i < 0 {
		return nil, fmt.Errorf("buffer: %w %q (the buffer has %q)", ErrUnknownConsumer, name, b.consumers)
	}
	return b.cursors[i], nil
}

// Cursor is one consumer of a buffer: its Next, Ack and Release have the
// Buffer's semantics for that consumer alone. It is also a ferry.StateStore
// whose buckets are the consumer's own (an uplink keeps its batch seals
// there), and implements Stored for the consumer.
type Cursor struct {
	b    *Buffer
	c    int
	name string
}

var _ ferry.StateStore = (*Cursor)(nil)

// Name returns the consumer's name.
func (c *Cursor) Name() string { return c.name }

// Next is Buffer.Next for this consumer: the records it has not
// acknowledged, alerts first, each lane in sequence order.
func (c *Cursor) Next(ctx context.Context, max, maxBytes int) ([]ferry.Record, error) {
	return c.b.next(ctx, c.c, max, maxBytes)
}

// Ack records that this consumer's upstream acknowledged recs. A record is
// deleted once every consumer has; until then this consumer's mark is
// committed with the next commit, and a restart does not offer it to this
// consumer again (unless it dies before that commit: then it is offered
// again with the same id).
func (c *Cursor) Ack(recs ...ferry.Record) error { return c.b.ack(c.c, recs) }

// Release puts records this consumer got from Next back.
func (c *Cursor) Release(recs ...ferry.Record) { c.b.release(c.c, recs) }

// Stored reports whether the record is still stored and pending for this
// consumer (not acknowledged by it, not dropped).
func (c *Cursor) Stored(lane ferry.Lane, seq uint64) bool {
	b := c.b
	if int(lane) >= len(b.lanes) {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	li := &b.lanes[lane]
	i := li.find(seq)
	return i >= 0 && li.ents[i].state != gone && li.ents[i].pending&(1<<c.c) != 0
}

// bucket is the state bucket name of this consumer: the first consumer
// shares the Buffer's (so that a single upstream keeps its state when it
// becomes the first of a list), the others have "<bucket>@<consumer>".
func (c *Cursor) bucket(name string) string {
	if c.c == 0 {
		return name
	}
	return name + "@" + c.name
}

// Put is Buffer.Put in this consumer's bucket.
func (c *Cursor) Put(bucket string, key, value []byte) error {
	return c.b.Put(c.bucket(bucket), key, value)
}

// Delete is Buffer.Delete in this consumer's bucket.
func (c *Cursor) Delete(bucket string, key []byte) error {
	return c.b.Delete(c.bucket(bucket), key)
}

// ForEach is Buffer.ForEach over this consumer's bucket.
func (c *Cursor) ForEach(bucket string, fn func(key, value []byte) error) error {
	return c.b.ForEach(c.bucket(bucket), fn)
}

// CursorStats is what one consumer has pending.
type CursorStats struct {
	Name  string                          `json:"name"`
	Lanes [ferry.NumLanes]CursorLaneStats `json:"lanes"`
}

// CursorLaneStats is what one consumer has pending in one lane.
type CursorLaneStats struct {
	// Records and Bytes are stored and not yet acknowledged by the
	// consumer; InFlight of them are out with it now.
	Records  int   `json:"records"`
	Bytes    int64 `json:"bytes"`
	InFlight int   `json:"in_flight"`
	// Oldest is the commit time of the oldest of them (zero when none).
	Oldest time.Time `json:"oldest,omitzero"`
}

// Pending is the records of every lane the consumer has not acknowledged.
func (s CursorStats) Pending() int {
	n := 0
	for _, l := range s.Lanes {
		n += l.Records
	}
	return n
}

// Stats returns what the consumer has pending now.
func (c *Cursor) Stats() CursorStats {
	s := CursorStats{Name: c.name}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	for l := range b.lanes {
		li := &b.lanes[l]
		p := li.per[c.c]
		s.Lanes[l] = CursorLaneStats{Records: p.records, Bytes: p.bytes, InFlight: p.inFlight}
		if t := li.oldestFor(c.c); t != 0 {
			s.Lanes[l].Oldest = time.Unix(0, t)
		}
	}
	return s
}

// markOp is a mark to write (a consumer acknowledged a record others still
// have pending) or to delete (Open found it stale).
type markOp struct {
	lane ferry.Lane
	seq  uint64
	name string
	del  bool
}

func markKey(dst []byte, lane ferry.Lane, seq uint64, name string) []byte {
	dst = keptKey(dst, lane, seq)
	return append(dst, name...)
}

// parseMarkKey splits a mark's key; ok is false for a key that is not a
// mark (left alone).
func parseMarkKey(k []byte) (lane ferry.Lane, seq uint64, name string, ok bool) {
	if len(k) < keptKeySize+1 || int(k[0]) >= ferry.NumLanes {
		return 0, 0, "", false
	}
	return ferry.Lane(k[0]), binary.BigEndian.Uint64(k[1:keptKeySize]), string(k[keptKeySize:]), true
}

func cursorBucketOf(tx *bolt.Tx) *bolt.Bucket {
	root := tx.Bucket(bucketState)
	if root == nil {
		return nil
	}
	return root.Bucket([]byte(cursorBucket))
}

// loadMarks applies the stored marks to the index (Open, before the writer
// starts): each consumer's acknowledged records are no longer pending for
// it. Marks of forgotten consumers, or of records no longer stored, are
// deleted; a record no consumer has pending any more is deleted.
func (b *Buffer) loadMarks() error {
	var found []markOp
	if err := b.viewDB(func(tx *bolt.Tx) error {
		bk := cursorBucketOf(tx)
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, _ []byte) error {
			if lane, seq, name, ok := parseMarkKey(k); ok {
				found = append(found, markOp{lane: lane, seq: seq, name: name})
			}
			return nil
		})
	}); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range found {
		li := &b.lanes[m.lane]
		c, i := slices.Index(b.consumers, m.name), li.find(m.seq)
		if c >= 0 && i >= 0 {
			acked, last := li.ack(i, c)
			if acked && !last {
				continue // the consumer acknowledged it, another has not
			}
			if last {
				b.acks[m.lane] = append(b.acks[m.lane], m.seq)
			}
		}
		m.del = true
		b.marks = append(b.marks, m)
	}
	if n := len(b.marks); n > 0 {
		b.log.Info("buffer cursors: stale marks dropped", "marks", n, "consumers", b.consumers)
	}
	return nil
}

// takeMarks moves the queued marks to the writer (b.mu held).
func (w *writer) takeMarks() {
	b := w.b
	w.marks = append(w.marks, b.marks...)
	clear(b.marks)
	b.marks = b.marks[:0]
}

// fillMarks writes this cycle's marks, and, with several consumers,
// deletes the marks of the records this cycle deletes.
func (w *writer) fillMarks(tx *bolt.Tx) error {
	b := w.b
	multi := len(b.consumers) > 1
	if len(w.marks) == 0 && !multi {
		return nil
	}
	root := tx.Bucket(bucketState)
	if root == nil {
		return fmt.Errorf("%w: bucket %s is missing", errCorrupt, bucketState)
	}
	bk := root.Bucket([]byte(cursorBucket))
	if bk == nil {
		if len(w.marks) == 0 {
			return nil
		}
		var err error
		if bk, err = root.CreateBucket([]byte(cursorBucket)); err != nil {
			return err
		}
	}
	key := w.markBuf[:0]
	for _, m := range w.marks {
		key = markKey(key[:0], m.lane, m.seq, m.name)
		var err error
		if m.del {
			err = bk.Delete(key)
		} else {
			err = bk.Put(bytes.Clone(key), markValue)
		}
		if err != nil {
			return err
		}
	}
	w.markBuf = key
	if !multi {
		return nil
	}
	c := bk.Cursor()
	var doomed [][]byte
	del := func(lane ferry.Lane, seq uint64) error {
		var prefix [keptKeySize]byte
		keptKey(prefix[:0], lane, seq)
		doomed = doomed[:0]
		for k, _ := c.Seek(prefix[:]); k != nil && bytes.HasPrefix(k, prefix[:]); k, _ = c.Next() {
			doomed = append(doomed, bytes.Clone(k))
		}
		for _, k := range doomed {
			if err := bk.Delete(k); err != nil {
				return err
			}
		}
		return nil
	}
	for l, seqs := range w.acks {
		for _, seq := range seqs {
			if err := del(ferry.Lane(l), seq); err != nil {
				return err
			}
		}
	}
	for _, d := range w.drops {
		if err := del(d.lane, d.seq); err != nil {
			return err
		}
	}
	return nil
}

// committedMarks finishes the marks of a committed cycle.
func (w *writer) committedMarks() {
	clear(w.marks)
	w.marks = w.marks[:0]
}

// consumerMetrics are the per-consumer metrics.
type consumerMetrics struct {
	b       *Buffer
	acked   [maxConsumers][ferry.NumLanes]prometheus.Counter
	dropVec *prometheus.CounterVec
	records *prometheus.Desc
	oldest  *prometheus.Desc

	collectors []prometheus.Collector
}

func newConsumerMetrics(b *Buffer) *consumerMetrics {
	m := &consumerMetrics{b: b}
	acked := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ferry_buffer_consumer_acked_total",
		Help: "Records a buffer consumer (an upstream) acknowledged, by consumer and lane.",
	}, []string{"consumer", "lane"})
	m.dropVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ferry_buffer_consumer_dropped_total",
		Help: "Records a bound dropped before this consumer (an upstream) acknowledged them, by consumer, lane and reason (size, age).",
	}, []string{"consumer", "lane", "reason"})
	for c, name := range b.consumers {
		for l := ferry.Lane(0); l < ferry.NumLanes; l++ {
			m.acked[c][l] = acked.WithLabelValues(name, l.String())
			for _, r := range []string{reasonSize, reasonAge} {
				m.dropVec.WithLabelValues(name, l.String(), r)
			}
		}
	}
	m.records = prometheus.NewDesc("ferry_buffer_consumer_records", "Records stored that a consumer (an upstream) has not acknowledged yet, by consumer and lane.", []string{"consumer", "lane"}, nil)
	m.oldest = prometheus.NewDesc("ferry_buffer_consumer_oldest_age_seconds", "Age of the oldest record a consumer has not acknowledged, by consumer and lane (0 when none).", []string{"consumer", "lane"}, nil)
	m.collectors = []prometheus.Collector{acked, m.dropVec, m}
	return m
}

func (m *consumerMetrics) ackedN(c int, n [ferry.NumLanes]int) {
	for l, k := range n {
		if k > 0 {
			m.acked[c][l].Add(float64(k))
		}
	}
}

// dropped counts a record a bound dropped for each consumer in pending.
func (m *consumerMetrics) dropped(lane ferry.Lane, reason string, pending uint8) {
	eachBit(pending, func(c int) {
		m.dropVec.WithLabelValues(m.b.consumers[c], lane.String(), reason).Inc()
	})
}

func (m *consumerMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.records
	ch <- m.oldest
}

func (m *consumerMetrics) Collect(ch chan<- prometheus.Metric) {
	now := m.b.now()
	for _, cur := range m.b.cursors {
		s := cur.Stats()
		for l, ls := range s.Lanes {
			lane := ferry.Lane(l).String()
			age := 0.0
			if !ls.Oldest.IsZero() {
				age = max(0, now.Sub(ls.Oldest).Seconds())
			}
			ch <- prometheus.MustNewConstMetric(m.records, prometheus.GaugeValue, float64(ls.Records), cur.name, lane)
			ch <- prometheus.MustNewConstMetric(m.oldest, prometheus.GaugeValue, age, cur.name, lane)
		}
	}
}
