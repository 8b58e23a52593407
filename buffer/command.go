package buffer

import (
	"fmt"

	"github.com/ferry-edge/ferry"
)

// PutWithAlerts is Put, with alerts queued for the alerts lane in the same
// bbolt transaction as the state change: when it returns nil, both are
// committed (fsync'd) together, and a crash leaves both or neither. The
// command path (internal/command) stores a command's state and its audit
// event this way, so that the audit goes upstream exactly once.
//
// When the commit fails, the state change is not made (the error says
// why), but the alerts stay queued and are retried with the buffer's other
// alerts, as AppendAlert's are.
func (b *Buffer) PutWithAlerts(bucket string, key, value []byte, alerts ...ferry.Alert) error {
	op := &stateOp{bucket: bucket, key: clone(key), value: clone(value)}
	if err := op.check(); err != nil {
		return err
	}
	op.done = make(chan error, 1)
	b.qmu.Lock()
	if b.closing {
		b.qmu.Unlock()
		return ferry.ErrClosed
	}
	if len(b.alertq)+len(alerts) > b.opts.AlertQueueSize {
		b.qmu.Unlock()
		return fmt.Errorf("buffer: state %s: alert queue full", bucket)
	}
	// Under one hold of qmu: the writer's next cycle takes both the
	// alerts and the op, and commits them in one transaction.
	b.alertq = append(b.alertq, alerts...)
	b.stateOps = append(b.stateOps, op)
	b.qmu.Unlock()
	b.signal()
	if err := <-op.done; err != nil {
		return fmt.Errorf("buffer: state %s: %w", bucket, err)
	}
	return nil
}
