package uplink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/codec"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// memSource is the test's stand-in for the buffer: lanes of records served
// oldest first, alerts before telemetry, with in-flight tracking as the
// Source contract describes.
type memSource struct {
	gateway string

	mu       sync.Mutex
	wake     chan struct{} // closed and replaced when records become available
	pending  [ferry.NumLanes][]ferry.Record
	inflight map[string]ferry.Record
	acks     map[string]int
	nextSeq  [ferry.NumLanes]uint64
	all      []ferry.Record // every record ever added, in order
	ackHook  func([]ferry.Record) error
	maxOut   int // most records out (taken, neither acked nor released) at once
	enc      codec.Encoder
}

func newMemSource(gateway string) *memSource {
	return &memSource{gateway: gateway, wake: make(chan struct{}), inflight: map[string]ferry.Record{}, acks: map[string]int{}}
}

func (s *memSource) add(lane ferry.Lane, data []byte) ferry.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextSeq[lane]++
	r := ferry.Record{Lane: lane, Seq: s.nextSeq[lane], ID: ferry.RecordID(s.gateway, lane, s.nextSeq[lane]), Time: time.Now(), Data: data}
	s.pending[lane] = append(s.pending[lane], r)
	s.all = append(s.all, r)
	close(s.wake)
	s.wake = make(chan struct{})
	return r
}

func (s *memSource) addScans(configVersion, device string, scans ...ferry.Scan) ferry.Record {
	s.mu.Lock()
	data := s.enc.AppendTelemetry(nil, configVersion, device, scans)
	s.mu.Unlock()
	return s.add(ferry.LaneTelemetry, data)
}

func (s *memSource) addAlert(configVersion string, a ferry.Alert) ferry.Record {
	return s.add(ferry.LaneAlerts, codec.AppendAlert(nil, configVersion, &a))
}

func (s *memSource) Next(ctx context.Context, limit, maxBytes int) ([]ferry.Record, error) {
	for {
		s.mu.Lock()
		for l := range s.pending {
			if len(s.pending[l]) == 0 {
				continue
			}
			var out []ferry.Record
			size := 0
			for _, r := range s.pending[l] {
				if len(out) == limit || len(out) > 0 && size+len(r.Data) > maxBytes {
					break
				}
				out = append(out, r)
				size += len(r.Data)
				s.inflight[r.ID] = r
			}
			s.pending[l] = s.pending[l][len(out):]
			s.maxOut = max(s.maxOut, len(s.inflight))
			s.mu.Unlock()
			return out, nil
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wake:
		}
	}
}

func (s *memSource) Ack(recs ...ferry.Record) error {
	s.mu.Lock()
	hook := s.ackHook
	s.mu.Unlock()
	if hook != nil {
		if err := hook(recs); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		if _, ok := s.inflight[r.ID]; !ok {
			panic("ack of a record not in flight: " + r.ID)
		}
		delete(s.inflight, r.ID)
		s.acks[r.ID]++
	}
	return nil
}

func (s *memSource) Release(recs ...ferry.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		if _, ok := s.inflight[r.ID]; !ok {
			panic("release of a record not in flight: " + r.ID)
		}
		delete(s.inflight, r.ID)
		s.insert(r)
	}
	close(s.wake)
	s.wake = make(chan struct{})
}

func (s *memSource) insert(r ferry.Record) {
	p := s.pending[r.Lane]
	i, _ := slices.BinarySearchFunc(p, r.Seq, func(x ferry.Record, seq uint64) int {
		switch {
		case x.Seq < seq:
			return -1
		case x.Seq > seq:
			return 1
		}
		return 0
	})
	s.pending[r.Lane] = slices.Insert(p, i, r)
}

// Stored reports whether the record is pending or in flight (the buffer's
// Stored): the uplink deletes seals none of whose records are left.
func (s *memSource) Stored(lane ferry.Lane, seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.pending[lane] {
		if r.Seq == seq {
			return true
		}
	}
	return s.inflight[ferry.RecordID(s.gateway, lane, seq)].Seq == seq && seq != 0
}

// crash is what a restart of the buffer does: records in flight are
// pending again.
func (s *memSource) crash() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.inflight {
		s.insert(r)
	}
	clear(s.inflight)
	close(s.wake)
	s.wake = make(chan struct{})
}

// state returns how many records are pending and in flight.
func (s *memSource) state() (pending, inflight int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pending {
		pending += len(p)
	}
	return pending, len(s.inflight)
}

func (s *memSource) records() []ferry.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.all)
}

// waitEmpty waits until every record has been acknowledged.
func (s *memSource) waitEmpty(t testing.TB, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "source empty", func() bool {
		p, f := s.state()
		return p == 0 && f == 0
	})
}

// waitFor is testutil.WaitFor, by the name this package's tests use.
var waitFor = testutil.WaitFor

// streamMsgs reads every message of a stream, in stream order, up to the
// stream's last sequence.
//
// A cluster that has just lost a node answers "JetStream system
// temporarily unavailable" while it elects its leaders, and a consumer
// just created may not be reachable yet ("no responders") until its
// interest has crossed the routes. Each attempt is bounded and the read
// starts over, against whichever server the client is on, until it
// succeeds or a minute has passed.
func streamMsgs(t testing.TB, js jetstream.JetStream, stream string) []jetstream.Msg {
	t.Helper()
	var msgs []jetstream.Msg
	attempts := 0
	err := testutil.Poll(time.Minute, func() error {
		attempts++
		var err error
		msgs, err = readStream(js, stream)
		return err
	})
	if err != nil {
		t.Fatalf("read stream %s: %v (attempt %d)", stream, err, attempts)
	}
	return msgs
}

// readStream makes one attempt of streamMsgs: it waits for nothing and
// gives up on the first error.
func readStream(js jetstream.JetStream, stream string) ([]jetstream.Msg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	}
	info := s.CachedInfo()
	if info.Cluster != nil && info.Cluster.Leader == "" {
		return nil, errors.New("the stream has no leader")
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil, nil
	}
	// A plain consumer, not an ordered one: an ordered consumer is
	// recreated on every Fetch and retries that forever, so that a
	// cluster in trouble would hang the test instead of failing it.
	cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("create consumer: %w", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.DeleteConsumer(ctx, cons.CachedInfo().Name) // else it expires
	}()
	var out []jetstream.Msg
	var seq uint64 // stream sequence of the last message read
	for seq < last {
		// Ask for no more than the stream holds: Fetch waits its whole
		// MaxWait for a batch it cannot fill.
		want := min(4096, max(1, int(info.State.Msgs)-len(out)))
		batch, err := cons.Fetch(want, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			if md.Sequence.Stream <= seq {
				return nil, fmt.Errorf("stream seq %d delivered after %d", md.Sequence.Stream, seq)
			}
			seq = md.Sequence.Stream
			if seq <= last {
				out = append(out, m)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("fetch after seq %d of %d: %w", seq, last, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("read %d messages up to seq %d of %d, then none for 5s", len(out), seq, last)
		}
	}
	return out, nil
}

// checkExactlyOnce asserts that the stream holds every record of src
// exactly once, and returns the stream sequence of each record id.
func checkExactlyOnce(t testing.TB, msgs []jetstream.Msg, recs []ferry.Record) map[string]uint64 {
	t.Helper()
	seqs := map[string]uint64{}
	for _, m := range msgs {
		id := m.Headers().Get(nats.MsgIdHdr)
		if id == "" {
			continue // the catalog
		}
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		if prev, dup := seqs[id]; dup {
			t.Errorf("record %s stored twice: stream seq %d and %d", id, prev, md.Sequence.Stream)
		}
		seqs[id] = md.Sequence.Stream
	}
	for _, r := range recs {
		if _, ok := seqs[r.ID]; !ok {
			t.Errorf("record %s is not in the stream", r.ID)
		}
	}
	if len(seqs) != len(recs) {
		t.Errorf("stream holds %d records, %d were accepted", len(seqs), len(recs))
	}
	return seqs
}

// runUplink runs u until the test ends (or stop is called) and checks
// that Run returned nil and left nothing in flight.
func runUplink(t testing.TB, u *Uplink, src *memSource) (stop func()) {
	t.Helper()
	run := testutil.Run(t, "Run", 30*time.Second, u.Run)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			run()
			if _, f := src.state(); f != 0 {
				t.Errorf("%d records still in flight after Run returned", f)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func testConfig(url string) NATSConfig {
	c := DefaultNATSConfig(url)
	c.CreateStream = true
	c.ConnectTimeout = 2 * time.Second
	c.ReconnectMax = 200 * time.Millisecond
	c.AckTimeout = 2 * time.Second
	return c
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() || os.Getenv("FERRY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newTestUplink(t testing.TB, cfg NATSConfig, src Source, reg *prometheus.Registry) *Uplink {
	t.Helper()
	u, err := New(cfg, src, Options{Gateway: "gw1", Site: "lyon", Version: "1.2.3", Logger: testLogger(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// metric returns the value of a counter or gauge series (the sum over
// series matching labels, given as name, value pairs); for a histogram,
// its count.
func metric(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}
				if !found {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

// scan builds a scan of n points with float values.
func scan(device string, t time.Time, n int, base float64) ferry.Scan {
	sc := ferry.Scan{Device: device, Time: t, Samples: make([]ferry.Sample, n)}
	for i := range sc.Samples {
		sc.Samples[i] = ferry.Sample{Device: device, Point: "p" + strconv.Itoa(i), Value: ferry.FloatValue(base + float64(i)/4), Time: t}
	}
	return sc
}

func alert(i int) ferry.Alert {
	now := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)
	return ferry.Alert{
		ID: fmt.Sprintf("a%d", i), Rule: "oil_hot", Device: "press3", Point: "oil_temp",
		Severity: ferry.SeverityCritical, State: ferry.AlertRaised, Value: ferry.FloatValue(81.5),
		Message: "oil_temp 81.5 > 80", Labels: map[string]string{"line": "3"}, Since: now, Time: now,
	}
}
