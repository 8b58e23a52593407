package rules

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
)

var t0 = time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)

// memStore is an in-memory ferry.StateStore.
type memStore struct {
	mu   sync.Mutex
	data map[string]map[string][]byte
	fail error // returned by Put and Delete when set
}

func newMemStore() *memStore { return &memStore{data: map[string]map[string][]byte{}} }

func (m *memStore) Put(bucket string, key, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	b := m.data[bucket]
	if b == nil {
		b = map[string][]byte{}
		m.data[bucket] = b
	}
	b[string(key)] = bytes.Clone(value)
	return nil
}

func (m *memStore) Delete(bucket string, key []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	delete(m.data[bucket], string(key))
	return nil
}

func (m *memStore) ForEach(bucket string, fn func(key, value []byte) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	keys := make([]string, 0, len(m.data[bucket]))
	for k := range m.data[bucket] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := fn([]byte(k), m.data[bucket][k]); err != nil {
			return err
		}
	}
	return nil
}

func (m *memStore) keys(bucket string) []string {
	var out []string
	_ = m.ForEach(bucket, func(k, _ []byte) error { out = append(out, string(k)); return nil })
	return out
}

// boltStore is a ferry.StateStore in a bbolt file, as the buffer keeps it.
type boltStore struct{ db *bolt.DB }

func openBolt(t *testing.T, path string) *boltStore {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return &boltStore{db: db}
}

func (s *boltStore) Put(bucket string, key, value []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return err
		}
		return b.Put(key, value)
	})
}

func (s *boltStore) Delete(bucket string, key []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(bucket)); b != nil {
			return b.Delete(key)
		}
		return nil
	})
}

func (s *boltStore) ForEach(bucket string, fn func(key, value []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		return b.ForEach(fn)
	})
}

// harness runs an engine on a fake clock and records what it emits.
type harness struct {
	t   *testing.T
	now time.Time
	e   *Engine
	mu  sync.Mutex
	got []ferry.Alert
}

func newHarness(t *testing.T, rules []Rule, store ferry.StateStore) *harness {
	t.Helper()
	h := &harness{t: t, now: t0}
	e, err := New(rules, Options{
		Now:   func() time.Time { return h.now },
		State: store,
		Emit: func(a ferry.Alert) {
			h.mu.Lock()
			h.got = append(h.got, a)
			h.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.e = e
	return h
}

func (h *harness) at(d time.Duration) { h.now = t0.Add(d) }

// take returns and forgets what was emitted so far.
func (h *harness) take() []ferry.Alert {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.got
	h.got = nil
	return out
}

func (h *harness) send(ref string, v ferry.Value, q ferry.Quality) {
	dev, pt, ok := splitRef(ref)
	if !ok {
		h.t.Fatalf("bad ref %q", ref)
	}
	h.e.Process(&ferry.Scan{Device: dev, Time: h.now, Samples: []ferry.Sample{{Device: dev, Point: pt, Value: v, Quality: q, Time: h.now}}})
}

// value turns a test value into a ferry.Value.
func value(v any) ferry.Value {
	switch v := v.(type) {
	case float64:
		return ferry.FloatValue(v)
	case int:
		return ferry.IntValue(int64(v))
	case bool:
		return ferry.BoolValue(v)
	case string:
		return ferry.StringValue(v)
	case ferry.Value:
		return v
	}
	panic(fmt.Sprintf("value %T", v))
}

func states(as []ferry.Alert) string {
	s := ""
	for i, a := range as {
		if i > 0 {
			s += ","
		}
		s += a.State.String()
	}
	return s
}

func f64(f float64) *float64 { return &f }

func mustErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}

func boltPath(t *testing.T) string { return filepath.Join(t.TempDir(), "state.db") }
