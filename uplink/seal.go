package uplink

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/ferry-edge/ferry"
)

// sealBucket is the StateStore bucket of sealed batches.
const sealBucket = "uplink-batches"

// A seal fixes a batch before its first publish: its id and the records
// it holds. It is stored (committed) before the batch is published and
// deleted after its records were acknowledged to the Source, so a batch
// sent again — after a failure, a reconnect or a restart — holds the same
// records under the same id, and JetStream's duplicate window drops the
// copy.
type seal struct {
	id   string
	key  []byte   // first seq, big-endian
	seqs []uint64 // telemetry sequences, ascending
}

func (s *seal) last() uint64 { return s.seqs[len(s.seqs)-1] }

// encodeSeal is the stored value: uvarint(len id) id uvarint(n) then the
// sequences, the first as is and each next as its distance to the one
// before.
func encodeSeal(s *seal) []byte {
	b := binary.AppendUvarint(nil, uint64(len(s.id)))
	b = append(b, s.id...)
	b = binary.AppendUvarint(b, uint64(len(s.seqs)))
	prev := uint64(0)
	for _, q := range s.seqs {
		b = binary.AppendUvarint(b, q-prev)
		prev = q
	}
	return b
}

var errBadSeal = errors.New("malformed batch seal")

func decodeSeal(key, v []byte) (*seal, error) {
	n, k := binary.Uvarint(v)
	if k <= 0 || n == 0 || uint64(len(v)-k) < n {
		return nil, errBadSeal
	}
	s := &seal{id: string(v[k : k+int(n)]), key: append([]byte(nil), key...)}
	v = v[k+int(n):]
	cnt, k := binary.Uvarint(v)
	if k <= 0 || cnt == 0 || cnt > uint64(len(v)) {
		return nil, errBadSeal
	}
	v = v[k:]
	prev := uint64(0)
	for range cnt {
		d, k := binary.Uvarint(v)
		if k <= 0 || (prev > 0 && d == 0) {
			return nil, errBadSeal
		}
		v = v[k:]
		prev += d
		s.seqs = append(s.seqs, prev)
	}
	if len(v) != 0 {
		return nil, errBadSeal
	}
	return s, nil
}

// sealSet holds the seals of batches not yet acknowledged: in the Source's
// StateStore, and by member sequence in memory.
type sealSet struct {
	store ferry.StateStore
	held  recordHolder // nil when the Source cannot tell

	mu     sync.Mutex
	loaded bool
	bySeq  map[uint64]*seal
}

// recordHolder is implemented by a Source that can tell whether it still
// holds a record (*buffer.Buffer does): a seal none of whose records it
// holds is stale.
type recordHolder interface {
	Stored(lane ferry.Lane, seq uint64) bool
}

func newSealSet(store ferry.StateStore, held recordHolder) *sealSet {
	return &sealSet{store: store, held: held, bySeq: map[uint64]*seal{}}
}

// load reads the stored seals, once per Uplink. A seal none of whose
// records the Source still holds is deleted: its records were
// acknowledged before a crash kept the seal, or dropped by the buffer's
// bounds. (A Source that cannot tell keeps such seals; they match no
// record.)
func (ss *sealSet) load() (int, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.loaded {
		return 0, nil
	}
	var bad [][]byte
	n := 0
	err := ss.store.ForEach(sealBucket, func(k, v []byte) error {
		s, err := decodeSeal(k, v)
		if err != nil || ss.stale(s) {
			bad = append(bad, append([]byte(nil), k...))
			return nil
		}
		n++
		for _, q := range s.seqs {
			ss.bySeq[q] = s
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("batch seals: %w", err)
	}
	for _, k := range bad {
		if err := ss.store.Delete(sealBucket, k); err != nil {
			return 0, fmt.Errorf("batch seals: %w", err)
		}
	}
	ss.loaded = true
	return n, nil
}

// of returns the seal that holds telemetry record seq, if any.
func (ss *sealSet) of(seq uint64) *seal {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.bySeq[seq]
}

// put stores a new seal; it returns once the seal is committed.
func (ss *sealSet) put(s *seal) error {
	if err := ss.store.Put(sealBucket, s.key, encodeSeal(s)); err != nil {
		return err
	}
	ss.mu.Lock()
	for _, q := range s.seqs {
		ss.bySeq[q] = s
	}
	ss.mu.Unlock()
	return nil
}

// done forgets seals whose records were acknowledged to the Source, and
// deletes them from the store. The Source deletes acknowledged records no
// later than the commit that deletes the seal; a seal that outlives its
// records (a crash in between) is deleted by the next load.
func (ss *sealSet) done(seals []*seal) error {
	ss.mu.Lock()
	for _, s := range seals {
		for _, q := range s.seqs {
			if ss.bySeq[q] == s {
				delete(ss.bySeq, q)
			}
		}
	}
	ss.mu.Unlock()
	var errs []error
	for _, s := range seals {
		if err := ss.store.Delete(sealBucket, s.key); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stale reports whether the Source holds none of s's records.
func (ss *sealSet) stale(s *seal) bool {
	if ss.held == nil {
		return false
	}
	for _, q := range s.seqs {
		if ss.held.Stored(ferry.LaneTelemetry, q) {
			return false
		}
	}
	return true
}
