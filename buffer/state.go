package buffer

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
)

// The buffer is a ferry.StateStore: small durable state (the rule engine's
// active alerts) lives in the same file, under the state bucket, one
// bucket per name. Put and Delete ride on the writer's next commit (no
// linger) and return once it is fsync'd.

var _ ferry.StateStore = (*Buffer)(nil)

// errBadState is returned for a StateStore call bbolt would refuse.
var errBadState = errors.New("invalid state key")

type stateOp struct {
	bucket     string
	key, value []byte
	del        bool
	done       chan error
	err        error
}

func (op *stateOp) apply(tx *bolt.Tx) error {
	root := tx.Bucket(bucketState)
	if root == nil {
		return fmt.Errorf("%w: bucket %s is missing", errCorrupt, bucketState)
	}
	if op.del {
		bk := root.Bucket([]byte(op.bucket))
		if bk == nil {
			return nil
		}
		return bk.Delete(op.key)
	}
	bk, err := root.CreateBucketIfNotExists([]byte(op.bucket))
	if err != nil {
		return err
	}
	return bk.Put(op.key, op.value)
}

// check refuses a state operation bbolt or the buffer's bounds would.
func (op *stateOp) check() error {
	switch {
	case op.bucket == "" || len(op.bucket) > bolt.MaxKeySize:
		return fmt.Errorf("buffer: state bucket %q: %w", op.bucket, errBadState)
	case len(op.key) == 0 || len(op.key) > bolt.MaxKeySize:
		return fmt.Errorf("buffer: state key of %d bytes in %q: %w", len(op.key), op.bucket, errBadState)
	case len(op.value) > 1<<20:
		return fmt.Errorf("buffer: state value of %d bytes in %q: over 1 MiB", len(op.value), op.bucket)
	}
	return nil
}

func (b *Buffer) stateOp(op *stateOp) error {
	if err := op.check(); err != nil {
		return err
	}
	op.done = make(chan error, 1)
	b.qmu.Lock()
	if b.closing {
		b.qmu.Unlock()
		return ferry.ErrClosed
	}
	b.stateOps = append(b.stateOps, op)
	b.qmu.Unlock()
	b.signal()
	if err := <-op.done; err != nil {
		return fmt.Errorf("buffer: state %s: %w", op.bucket, err)
	}
	return nil
}

// Put stores value under key in the named state bucket and returns once it
// is committed.
func (b *Buffer) Put(bucket string, key, value []byte) error {
	return b.stateOp(&stateOp{bucket: bucket, key: clone(key), value: clone(value)})
}

// Delete removes key from the named state bucket and returns once that is
// committed. Deleting a missing key is not an error.
func (b *Buffer) Delete(bucket string, key []byte) error {
	return b.stateOp(&stateOp{bucket: bucket, key: clone(key), del: true})
}

// ForEach calls fn for every key of the named state bucket, in key order.
// The entries are copied out first, so fn may call Put and Delete; the
// slices are only valid during the call.
func (b *Buffer) ForEach(bucket string, fn func(key, value []byte) error) error {
	var kvs [][2][]byte
	err := b.viewDB(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketState)
		if root == nil {
			return nil
		}
		bk := root.Bucket([]byte(bucket))
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, v []byte) error {
			if v != nil {
				kvs = append(kvs, [2][]byte{clone(k), clone(v)})
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("buffer: state %s: %w", bucket, err)
	}
	for _, kv := range kvs {
		if err := fn(kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

func clone(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return append([]byte(nil), b...)
}
