package uplink

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// reconcile splits failed records into those the stream already holds and
// those to send again.
//
// A record whose publish went unanswered (PubAck timeout, disconnect) may
// have been stored. Sent again within the stream's duplicate window, the
// stream drops the copy. After a longer outage the window no longer
// protects it, so the uplink looks the records up: it reads the headers of
// this gateway's messages stored since the record was published (from the
// stream sequence acknowledged just before) and takes those it finds as
// delivered. The scan reads at most what this gateway published since
// (on nats-server before 2.10, which filters a consumer on one subject
// only, everything the stream stored since).
func (d *drain) reconcile(ctx context.Context, failed []*entry) (delivered, rest []*entry) {
	var oldest time.Time
	var from uint64
	ids := map[string]*entry{}
	for _, e := range failed {
		if !e.uncertain {
			continue
		}
		if oldest.IsZero() || e.sent.Before(oldest) {
			oldest = e.sent
		}
		if from == 0 || e.after+1 < from {
			from = e.after + 1
		}
		for _, id := range e.ids() {
			ids[id] = e
		}
	}
	window := d.currentPlan().duplicates
	if len(ids) == 0 || time.Since(oldest) < window/2 {
		return nil, failed
	}
	found, hit, err := d.storedIDs(ctx, from, ids)
	if err != nil {
		d.u.log.Warn("could not check which records reached the stream before the outage; sending them again (the stream may store some twice)",
			"records", len(ids), "outage", time.Since(oldest).Round(time.Second), "duplicate_window", window, "err", err)
		return nil, failed
	}
	partial := 0
	for _, e := range failed {
		switch {
		case e.uncertain && found[e] == e.total:
			delivered = append(delivered, e)
		case e.uncertain && found[e] > 0 && len(e.recs) == 1:
			// Some parts of the record are stored: it is sent again
			// without them.
			d.rememberStored(e, hit)
			partial++
			rest = append(rest, e)
		default:
			rest = append(rest, e)
		}
	}
	n := 0
	for _, e := range delivered {
		n += len(e.recs)
	}
	d.u.m.reconciled.Add(float64(n))
	d.u.log.Info("records already in the stream after an outage longer than its duplicate window; not sent again",
		"found", n, "partly_found", partial, "checked", len(ids), "outage", time.Since(oldest).Round(time.Second), "duplicate_window", window)
	return delivered, rest
}

// storedIDs reads the Nats-Msg-Id of this gateway's messages in the main
// stream from sequence from to the current end, and counts the parts found
// per entry; hit holds the ids found.
func (d *drain) storedIDs(ctx context.Context, from uint64, ids map[string]*entry) (found map[*entry]int, hit map[string]bool, err error) {
	hit = map[string]bool{}
	found, err = d.scanIDs(ctx, from, ids, hit)
	return found, hit, err
}

func (d *drain) scanIDs(ctx context.Context, from uint64, ids map[string]*entry, hit map[string]bool) (map[*entry]int, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*d.u.cfg.ConnectTimeout)
	defer cancel()
	s, err := d.js.Stream(ctx, d.u.cfg.Stream)
	if err != nil {
		return nil, err
	}
	last := s.CachedInfo().State.LastSeq
	found := map[*entry]int{}
	if last < from {
		return found, nil
	}
	cc := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{d.u.subj.Telemetry, d.u.subj.Alerts},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
		HeadersOnly:    true,
	}
	cons, err := s.OrderedConsumer(ctx, cc)
	if errors.Is(err, jetstream.ErrConsumerMultipleFilterSubjectsNotSupported) {
		// nats-server before 2.10 takes one filter subject per consumer:
		// read every subject instead. The ids are this gateway's, so other
		// messages match none; the scan reads more, the answer is the same.
		d.u.log.Debug("server takes one filter subject per consumer (nats-server < 2.10); reading every subject of the stream", "stream", d.u.cfg.Stream, "from", from)
		cc.FilterSubjects = nil
		cons, err = s.OrderedConsumer(ctx, cc)
	}
	if err != nil {
		return nil, err
	}
	for ctx.Err() == nil {
		batch, err := cons.FetchNoWait(1024)
		if err != nil {
			return nil, err
		}
		n := 0
		var seq uint64
		for m := range batch.Messages() {
			n++
			if md, err := m.Metadata(); err == nil {
				seq = md.Sequence.Stream
			}
			if id := m.Headers().Get(nats.MsgIdHdr); ids[id] != nil && !hit[id] {
				hit[id] = true
				found[ids[id]]++
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, err
		}
		if seq >= last {
			return found, nil
		}
		if n == 0 {
			// Nothing more on our subjects up to the end seen at the start.
			info, err := cons.Info(ctx)
			if err != nil {
				return nil, err
			}
			if info.NumPending == 0 {
				return found, nil
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil, fmt.Errorf("scan of stream %s from sequence %d: %w", d.u.cfg.Stream, from, ctx.Err())
}

// maxStoredParts bounds drain.stored: past it, the oldest knowledge goes
// and such a record is sent whole again (its stored parts then twice).
const maxStoredParts = 4096

// rememberStored notes which parts of e's record the stream holds, so that
// publish sends only the others when the record comes back. The parts are
// built again from the same record by the same builder (same max_payload),
// so part n holds the same samples as before.
func (d *drain) rememberStored(e *entry, hit map[string]bool) {
	if d.stored == nil || len(d.stored) >= maxStoredParts {
		d.stored = map[string]map[string]bool{}
	}
	parts := map[string]bool{}
	for _, id := range e.skipped { // found by an earlier reconcile
		parts[id] = true
	}
	for _, id := range e.ids() {
		if hit[id] {
			parts[id] = true
		}
	}
	d.stored[e.id] = parts
}

// ids returns the Nats-Msg-Id of each message published for e.
func (e *entry) ids() []string {
	switch {
	case e.partIDs != nil:
		return e.partIDs
	case e.total <= 1:
		return []string{e.id}
	}
	ids := make([]string, e.total)
	for i := range ids {
		ids[i] = e.id + "-p" + strconv.Itoa(i+1)
	}
	return ids
}

// skipStored drops from msgs, the parts of the record id, those reconcile
// found in the stream. It returns the messages to send, their ids and
// the ids skipped (both nil when none is skipped), and forgets the
// record: if the rest fails again, reconcile learns it anew from the
// entry (see rememberStored).
func (d *drain) skipStored(id string, msgs []outMsg) (send []outMsg, ids, skipped []string) {
	parts, ok := d.stored[id]
	if !ok {
		return msgs, nil, nil
	}
	delete(d.stored, id)
	for _, m := range msgs {
		if pid := m.msg.Header.Get(nats.MsgIdHdr); parts[pid] {
			skipped = append(skipped, pid)
		} else {
			send = append(send, m)
			ids = append(ids, pid)
		}
	}
	if len(send) == 0 || len(skipped) == 0 {
		// Nothing to skip after all (or nothing left to send, which
		// reconcile would have taken as delivered): send it whole.
		return msgs, nil, nil
	}
	d.u.log.Debug("record partly in the stream; sending its missing parts only", "record", id, "parts", len(msgs), "sending", len(send))
	return send, ids, skipped
}
