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
		if e.total <= 1 {
			ids[e.id] = e
			continue
		}
		for i := 1; i <= e.total; i++ {
			ids[e.id+"-p"+strconv.Itoa(i)] = e
		}
	}
	window := d.currentPlan().duplicates
	if len(ids) == 0 || time.Since(oldest) < window/2 {
		return nil, failed
	}
	found, err := d.storedIDs(ctx, from, ids)
	if err != nil {
		d.u.log.Warn("could not check which records reached the stream before the outage; sending them again (the stream may store some twice)",
			"records", len(ids), "outage", time.Since(oldest).Round(time.Second), "duplicate_window", window, "err", err)
		return nil, failed
	}
	for _, e := range failed {
		if e.uncertain && found[e] == e.total {
			delivered = append(delivered, e)
		} else {
			rest = append(rest, e)
		}
	}
	n := 0
	for _, e := range delivered {
		n += len(e.recs)
	}
	d.u.m.reconciled.Add(float64(n))
	d.u.log.Info("records already in the stream after an outage longer than its duplicate window; not sent again",
		"found", n, "checked", len(ids), "outage", time.Since(oldest).Round(time.Second), "duplicate_window", window)
	return delivered, rest
}

// storedIDs reads the Nats-Msg-Id of this gateway's messages in the main
// stream from sequence from to the current end, and counts the parts found
// per entry.
func (d *drain) storedIDs(ctx context.Context, from uint64, ids map[string]*entry) (map[*entry]int, error) {
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
			if e, ok := ids[m.Headers().Get(nats.MsgIdHdr)]; ok {
				found[e]++
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
