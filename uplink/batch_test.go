package uplink

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// memState is the test's StateStore: what the buffer keeps under state/,
// which survives a crash (the memSource's in-flight marks do not).
type memState struct {
	mu      sync.Mutex
	m       map[string]map[string][]byte
	putHook func(bucket string, key []byte) error // called after a Put is stored; its error is Put's
}

func newMemState() *memState { return &memState{m: map[string]map[string][]byte{}} }

func (s *memState) Put(bucket string, key, value []byte) error {
	s.mu.Lock()
	if s.m[bucket] == nil {
		s.m[bucket] = map[string][]byte{}
	}
	s.m[bucket][string(key)] = slices.Clone(value)
	hook := s.putHook
	s.mu.Unlock()
	if hook != nil {
		return hook(bucket, key)
	}
	return nil
}

func (s *memState) Delete(bucket string, key []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m[bucket], string(key))
	return nil
}

func (s *memState) ForEach(bucket string, fn func(key, value []byte) error) error {
	s.mu.Lock()
	var keys []string
	for k := range s.m[bucket] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	vals := make([][]byte, len(keys))
	for i, k := range keys {
		vals[i] = slices.Clone(s.m[bucket][k])
	}
	s.mu.Unlock()
	for i, k := range keys {
		if err := fn([]byte(k), vals[i]); err != nil {
			return err
		}
	}
	return nil
}

func (s *memState) seals(t testing.TB) []*seal {
	t.Helper()
	var out []*seal
	if err := s.ForEach(sealBucket, func(k, v []byte) error {
		sl, err := decodeSeal(k, v)
		if err != nil {
			return err
		}
		out = append(out, sl)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// stateSource is a memSource with a StateStore: batching is on.
type stateSource struct {
	*memSource
	*memState
}

func batchConfig(url string) NATSConfig {
	c := testConfig(url)
	c.Batch.MaxBytes = 16 << 10
	c.Batch.MaxDelay = 200 * time.Millisecond
	return c
}

// recordsIn decodes every message with DecodeAll and checks that each
// record is in the stream exactly once; it returns the batch id of each
// record ("" when sent alone) and the number of messages.
func recordsIn(t testing.TB, msgs []jetstream.Msg, recs []ferry.Record) (batchOf map[string]string) {
	t.Helper()
	batchOf = map[string]string{}
	seen := map[string]int{}
	for _, m := range msgs {
		if m.Headers().Get(HeaderKind) == KindCatalog {
			continue
		}
		if m.Headers().Get(HeaderKind) == KindBatch {
			validateWire(t, KindBatch, mustDecompress(t, m.Headers().Get(HeaderCompression), m.Data()))
		}
		all, err := DecodeAll(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			t.Fatal(err)
		}
		for _, dm := range all {
			seen[dm.ID]++
			batchOf[dm.ID] = dm.BatchID
			if dm.Telemetry == nil && dm.Alert == nil {
				t.Errorf("record %s decodes as %s", dm.ID, dm.Kind)
			}
		}
	}
	for _, r := range recs {
		if seen[r.ID] != 1 {
			t.Errorf("record %s is %d times in the stream, want once", r.ID, seen[r.ID])
		}
	}
	if len(seen) != len(recs) {
		t.Errorf("stream holds %d records, %d were accepted", len(seen), len(recs))
	}
	return batchOf
}

func mustDecompress(t testing.TB, algo string, data []byte) []byte {
	t.Helper()
	out, err := decompress(algo, data)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBatch: telemetry goes in few batch messages, alerts alone; every
// record arrives once, decodes with its own id and values, and the seals
// are gone once acknowledged. For each compression.
func TestBatch(t *testing.T) {
	for _, comp := range []string{CompressionNone, CompressionS2, CompressionZstd} {
		t.Run(comp, func(t *testing.T) {
			srv := testpeer.NATS(t)
			src := &stateSource{newMemSource("gw1"), newMemState()}
			t0 := time.Unix(1772352000, 123)
			var recs []ferry.Record
			for i := range 200 {
				recs = append(recs, src.addScans("v1", []string{"press3", "env"}[i%2], scan([]string{"press3", "env"}[i%2], t0.Add(time.Duration(i)*time.Second), 10, float64(i))))
			}
			al := src.addAlert("v1", alert(1))
			recs = append(recs, al)
			cfg := batchConfig(srv.URL())
			cfg.Compression = comp
			reg := prometheus.NewRegistry()
			u := newTestUplink(t, cfg, src, reg)
			runUplink(t, u, src.memSource)
			src.waitEmpty(t, 10*time.Second)
			waitFor(t, 5*time.Second, "seals deleted", func() bool { return len(src.seals(t)) == 0 })

			_, js := testpeer.Connect(t, srv.URL())
			msgs := streamMsgs(t, js, "FERRY")
			batchOf := recordsIn(t, msgs, recs)
			if batchOf[al.ID] != "" {
				t.Errorf("alert sent in batch %s", batchOf[al.ID])
			}
			batches := map[string]bool{}
			for _, r := range recs[:200] {
				if batchOf[r.ID] == "" {
					t.Fatalf("record %s sent alone", r.ID)
				}
				batches[batchOf[r.ID]] = true
			}
			if len(batches) < 2 || len(batches) > 40 {
				t.Errorf("%d batches for 200 records of ~1 KiB in 16 KiB batches", len(batches))
			}
			if len(msgs) != len(batches)+1 {
				t.Errorf("%d messages, want %d batches and 1 alert", len(msgs), len(batches))
			}
			// The values come back: record 7's first point.
			for _, m := range msgs {
				all, _ := DecodeAll(m.Subject(), m.Headers(), m.Data())
				for _, dm := range all {
					if dm.ID == recs[7].ID {
						p := dm.Telemetry.Scans[0].Points[0]
						if dm.Telemetry.Device != "env" || p.Value.Float64() != 7 || !dm.Telemetry.Scans[0].Time.Equal(t0.Add(7*time.Second)) || dm.ConfigVersion != "v1" {
							t.Errorf("record 7 decodes as %s %+v at %v", dm.Telemetry.Device, p, dm.Telemetry.Scans[0].Time)
						}
					}
				}
				if m.Headers().Get(HeaderKind) == KindBatch {
					if m.Subject() != "ferry.lyon.gw1.telemetry._batch" {
						t.Errorf("batch on %s", m.Subject())
					}
					want := comp
					if comp == CompressionNone {
						want = ""
					}
					if got := m.Headers().Get(HeaderCompression); got != want {
						t.Errorf("Ferry-Compression %q with compression %s", got, comp)
					}
				}
			}
			if got := metric(t, reg, "ferry_uplink_samples_total"); got != 2000 {
				t.Errorf("samples_total %v, want 2000", got)
			}
		})
	}
}

// TestBatchCrash kills the uplink (as kill -9 would: the Source's
// in-flight marks are lost, its StateStore is kept) between sealing a
// batch and publishing it, and between publishing it and handing the
// PubAck to the Source. After the restart, more records have arrived — a
// batch built afresh would hold others — yet each sealed batch is sent
// again with its id and its records, and no record is lost or twice in
// the stream.
func TestBatchCrash(t *testing.T) {
	for _, when := range []string{"sealed, not published", "published, not acknowledged"} {
		t.Run(when, func(t *testing.T) {
			srv := testpeer.NATS(t)
			st := newMemState()
			src := &stateSource{newMemSource("gw1"), st}
			t0 := time.Unix(1772352000, 0)
			var recs []ferry.Record
			add := func(n int) {
				for range n {
					i := len(recs)
					recs = append(recs, src.addScans("v1", "press3", scan("press3", t0.Add(time.Duration(i)*time.Second), 10, float64(i))))
				}
			}
			add(30)
			cfg := batchConfig(srv.URL())
			cfg.Batch.MaxDelay = 50 * time.Millisecond
			u := newTestUplink(t, cfg, src, prometheus.NewRegistry())
			ctx, cancel := context.WithCancel(context.Background())
			sealed := make(chan struct{})
			var once sync.Once
			switch when {
			case "sealed, not published":
				// The crash comes right after the first seal is committed:
				// the pump never gets to publish (the seal is stored, the
				// uplink hears of an error and publishes nothing).
				st.putHook = func(string, []byte) error {
					once.Do(func() { close(sealed) })
					return context.Canceled
				}
			case "published, not acknowledged":
				// The stream stores the batches; ferry dies before the
				// buffer deletes a record.
				src.ackHook = func([]ferry.Record) error {
					once.Do(func() { close(sealed) })
					<-ctx.Done()
					return context.Canceled
				}
			}
			done := make(chan error, 1)
			go func() { done <- u.Run(ctx) }()
			select {
			case <-sealed:
			case <-time.After(10 * time.Second):
				t.Fatal("no seal / no PubAck within 10s")
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			// kill -9: the in-flight marks go, the seals stay.
			src.crash()
			st.putHook = nil
			src.ackHook = nil
			before := st.seals(t)
			if len(before) == 0 {
				t.Fatal("no seal stored before the crash")
			}
			_, js := testpeer.Connect(t, srv.URL())
			var firstIDs []string
			if when == "published, not acknowledged" {
				for _, m := range streamMsgs(t, js, "FERRY") {
					firstIDs = append(firstIDs, m.Headers().Get(nats.MsgIdHdr))
				}
				if len(firstIDs) == 0 {
					t.Fatal("nothing published before the crash")
				}
			}
			add(30)

			// Larger batches now: built afresh, the first batches would
			// hold other records under the same ids.
			cfg.Batch.MaxBytes = 64 << 10
			reg := prometheus.NewRegistry()
			u2 := newTestUplink(t, cfg, src, reg)
			runUplink(t, u2, src.memSource)
			src.waitEmpty(t, 10*time.Second)
			waitFor(t, 5*time.Second, "seals deleted", func() bool { return len(st.seals(t)) == 0 })

			msgs := streamMsgs(t, js, "FERRY")
			batchOf := recordsIn(t, msgs, recs)
			for _, s := range before {
				for _, q := range s.seqs {
					id := ferry.RecordID("gw1", ferry.LaneTelemetry, q)
					if batchOf[id] != s.id {
						t.Errorf("record %s arrived in batch %q, sealed in %s", id, batchOf[id], s.id)
					}
				}
			}
			if when == "published, not acknowledged" {
				if got := metric(t, reg, "ferry_uplink_duplicates_total"); got < float64(len(firstIDs)) {
					t.Errorf("%v duplicates after the restart, want the %d batches sent before it", got, len(firstIDs))
				}
			}
		})
	}
}

// TestStaleSeal: a seal whose records are all gone (acknowledged before a
// crash kept the seal) is deleted at start; one with a record left is kept
// and that record goes in its batch, under its id.
func TestStaleSeal(t *testing.T) {
	srv := testpeer.NATS(t)
	st := newMemState()
	src := &stateSource{newMemSource("gw1"), st}
	t0 := time.Unix(1772352000, 0)
	var recs []ferry.Record
	for i := range 6 {
		recs = append(recs, src.addScans("v1", "press3", scan("press3", t0.Add(time.Duration(i)*time.Second), 5, float64(i))))
	}
	// Records 1 and 2 were delivered and deleted; their seal was not.
	gone, err := src.Next(context.Background(), 2, 1<<20)
	if err != nil || len(gone) != 2 {
		t.Fatal(gone, err)
	}
	if err := src.Ack(gone...); err != nil {
		t.Fatal(err)
	}
	stale := &seal{id: gone[0].ID + "-b", key: []byte{0, 0, 0, 0, 0, 0, 0, 1}, seqs: []uint64{1, 2}}
	// Records 3..5 were sealed; 3 was dropped by the buffer's bounds since.
	kept := &seal{id: recs[2].ID + "-b", key: []byte{0, 0, 0, 0, 0, 0, 0, 3}, seqs: []uint64{3, 4, 5}}
	for _, s := range []*seal{stale, kept} {
		if err := st.Put(sealBucket, s.key, encodeSeal(s)); err != nil {
			t.Fatal(err)
		}
	}
	dropped, err := src.Next(context.Background(), 1, 1<<20)
	if err != nil || len(dropped) != 1 || dropped[0].Seq != 3 {
		t.Fatal(dropped, err)
	}
	if err := src.Ack(dropped...); err != nil {
		t.Fatal(err)
	}
	u := newTestUplink(t, batchConfig(srv.URL()), src, prometheus.NewRegistry())
	runUplink(t, u, src.memSource)
	src.waitEmpty(t, 10*time.Second)
	waitFor(t, 5*time.Second, "seals deleted", func() bool { return len(st.seals(t)) == 0 })
	_, js := testpeer.Connect(t, srv.URL())
	batchOf := recordsIn(t, streamMsgs(t, js, "FERRY"), recs[3:])
	for _, r := range recs[3:5] {
		if batchOf[r.ID] != kept.id {
			t.Errorf("record %s in batch %q, sealed in %s", r.ID, batchOf[r.ID], kept.id)
		}
	}
	if batchOf[recs[5].ID] == kept.id {
		t.Errorf("record %s, not in any seal, joined %s", recs[5].ID, kept.id)
	}
}

// TestSealEncoding: a seal reads back as it was written; damaged ones are
// refused.
func TestSealEncoding(t *testing.T) {
	s := &seal{id: "gw1-telemetry-1772352000000123-b", key: []byte{1}, seqs: []uint64{1772352000000123, 1772352000000124, 1772352000000200}}
	got, err := decodeSeal(s.key, encodeSeal(s))
	if err != nil || got.id != s.id || !slices.Equal(got.seqs, s.seqs) {
		t.Fatalf("decodeSeal = %+v, %v", got, err)
	}
	v := encodeSeal(s)
	for _, bad := range [][]byte{nil, v[:len(v)-1], append(slices.Clone(v), 0), {0}} {
		if _, err := decodeSeal(s.key, bad); err == nil {
			t.Errorf("decodeSeal(%x) accepted", bad)
		}
	}
}
