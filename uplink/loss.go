package uplink

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry"
)

// Surviving an upstream that loses what it acknowledged (issue 28).
//
// nats-server answers a publish before its store is synced to disk
// (sync_interval, 2 minutes by default): a power cut of the server, or of
// a cluster's majority, takes back what it acknowledged since its last
// sync. When the Source retains acknowledged records (the buffer's
// retain_acked), the uplink hands it, with every acknowledged record, a
// mark: the stream sequence of the message that carried it and how that
// message was built (one record, a batch, or a record in parts). After
// every (re)connect, after every recovery from a failed publish, and every
// loss_check, it reads the Nats-Msg-Id headers of this gateway's messages
// in the stream from the oldest retained sequence on (one ordered
// consumer, headers only, on this gateway's subjects: messages of other
// gateways are not read, and the check assumes nothing about the stream's
// last sequence being this gateway's). A retained message whose id is not
// there, at or above the stream's first sequence, was lost: it is sent
// again, in record order, with its original id and the same bytes (a
// batch is built again from its records, which gives the same body), and
// its records are retained again with their new sequence. A loss is
// counted, logged once and raised as a local alert; a loss that reaches
// past the retention (the oldest retained message is lost, and so are
// records that left the retention before it) is counted and alerted with
// the range of ids that cannot be sent again.

// keeper is implemented by a Source that retains acknowledged records
// (*buffer.Buffer).
type keeper interface {
	// AckKeep is Ack that keeps each record with its mark (0: not kept).
	AckKeep(recs []ferry.Record, marks []uint64) error
	// EachKept lists the retained records, lane by lane in sequence order.
	EachKept(fn func(lane ferry.Lane, seq, mark uint64))
	// EachExpired lists the records that left the retention last.
	EachExpired(fn func(lane ferry.Lane, seq, mark uint64))
	// ReadKept returns retained records with their data.
	ReadKept(lane ferry.Lane, seqs []uint64) ([]ferry.Record, error)
	// RetainWindow is retain_acked in nanoseconds; 0 when off.
	RetainWindow() int64
	// KeptChecked says a check that started at t found the upstream
	// holding every retained record (records expire only after one).
	KeptChecked(t time.Time)
}

// A mark is the stream sequence of a record's message, shifted left by 8,
// and the message's kind in the low 7 bits; bit 7 is set on the first
// record of a message (after a rollback another message may be given the
// sequence of one the server lost: two batches in a row can have the same
// sequence).
const (
	markSingle = 1 // the record alone, id = record id
	markBatch  = 2 // a batch, id = first record's id + "-b"
	// 3 and up: the record in kind-1 parts, ids "-p1"…; the sequence is
	// the first part's.
	maxParts   = 126
	markFirst  = 0x80
	kindMask   = 0x7f
	maxMarkSeq = 1<<56 - 1
)

// marksFor appends the marks of a message's n records: mark, the first
// one flagged.
func marksFor(dst []uint64, n int, mark uint64) []uint64 {
	for i := range n {
		if i == 0 && mark != 0 {
			dst = append(dst, mark|markFirst)
			continue
		}
		dst = append(dst, mark)
	}
	return dst
}

// RuleUpstreamLoss is the local alert raised when the upstream lost
// messages it had acknowledged.
const RuleUpstreamLoss = "upstream_lost_acknowledged"

// lossAlertHold is how long the alert stays raised after the last loss.
const lossAlertHold = time.Hour

func markOf(e *entry) uint64 {
	if e.streamSeq == 0 || e.streamSeq > maxMarkSeq {
		return 0
	}
	kind := uint64(markSingle)
	switch {
	case e.seal != nil:
		kind = markBatch
	case e.total > 1:
		kind = uint64(min(e.total, maxParts) + 1)
	}
	return e.streamSeq<<8 | kind
}

// ack hands acknowledged records to the Source: with their marks when it
// retains them.
func (u *Uplink) ack(recs []ferry.Record, marks []uint64) error {
	if u.keep != nil && len(marks) == len(recs) {
		return u.keep.AckKeep(recs, marks)
	}
	return u.src.Ack(recs...)
}

// keptMsg is one retained message: records of one lane sent together.
type keptMsg struct {
	lane      ferry.Lane
	kind      uint8
	streamSeq uint64
	seqs      []uint64
}

// ids returns the Nats-Msg-Ids the stream holds the message under.
func (m *keptMsg) ids(gateway string) []string {
	first := ferry.RecordID(gateway, m.lane, m.seqs[0])
	switch {
	case m.kind == markBatch:
		return []string{first + "-b"}
	case m.kind > markBatch:
		ids := make([]string, int(m.kind)-1)
		for i := range ids {
			ids[i] = first + "-p" + strconv.Itoa(i+1)
		}
		return ids
	}
	return []string{first}
}

// groupKept turns the retained records into messages: consecutive records
// of a lane with the same mark were one message.
func groupKept(each func(func(ferry.Lane, uint64, uint64))) []*keptMsg {
	var out []*keptMsg
	var cur *keptMsg
	var curMark uint64
	each(func(lane ferry.Lane, seq, mark uint64) {
		if mark == 0 {
			return
		}
		if cur != nil && cur.lane == lane && curMark == mark && cur.kind == markBatch {
			cur.seqs = append(cur.seqs, seq)
			return
		}
		mark &^= markFirst
		cur = &keptMsg{lane: lane, kind: uint8(mark) & kindMask, streamSeq: mark >> 8, seqs: []uint64{seq}}
		curMark = mark
		out = append(out, cur)
	})
	return out
}

// LossStatus is what the loss check has seen, for the console's health
// page and /api/status.
type LossStatus struct {
	// Enabled: the Source retains acknowledged records and the uplink
	// checks the stream.
	Enabled bool
	// Window is the retention (retain_acked).
	Window time.Duration
	Checks uint64
	// LastCheck is when the stream was last checked; LastError why the
	// last check failed ("" when it worked).
	LastCheck time.Time
	LastError string
	// Lost and Resent count messages; Unrecoverable counts records lost
	// past the retention.
	Lost, Resent, Unrecoverable uint64
	// LastLoss is when a loss was last found; LastLossMessage says what.
	LastLoss        time.Time
	LastLossMessage string
}

// LossStatus returns what the loss check has seen so far.
func (u *Uplink) LossStatus() LossStatus {
	u.lossMu.Lock()
	defer u.lossMu.Unlock()
	st := u.loss
	st.Enabled = u.keep != nil
	if u.keep != nil {
		st.Window = time.Duration(u.keep.RetainWindow())
	}
	return st
}

// lossChecker runs the checks of one session.
type lossChecker struct {
	d    *drain
	msgs *msgBuilder
	// reported holds the expired records already reported as lost for
	// good, so that each is counted once.
	reported map[ferry.Lane]map[uint64]bool
}

// lossLoop checks the stream at once, when kick is signalled (a reconnect,
// a recovery) and every loss_check, until ctx ends.
func (d *drain) lossLoop(ctx context.Context, kick <-chan struct{}) {
	u := d.u
	if u.keep == nil {
		return
	}
	lc := &lossChecker{d: d, msgs: newMsgBuilder(u, d.nc.MaxPayload()), reported: u.lossReported()}
	var tick <-chan time.Time
	if u.cfg.LossCheck > 0 {
		t := time.NewTicker(u.cfg.LossCheck)
		defer t.Stop()
		tick = t.C
	}
	var retry <-chan time.Time
	for {
		retry = nil
		if d.nc.IsConnected() {
			cctx, cancel := context.WithTimeout(ctx, 4*u.cfg.ConnectTimeout+u.cfg.AckTimeout)
			started := u.opts.Now()
			err := lc.check(cctx)
			cancel()
			if err == nil {
				u.keep.KeptChecked(started)
			}
			if ctx.Err() != nil {
				return
			}
			u.lossMu.Lock()
			u.loss.Checks++
			u.loss.LastCheck = u.opts.Now()
			u.loss.LastError = ""
			if err != nil {
				u.loss.LastError = err.Error()
			}
			u.lossMu.Unlock()
			if err != nil {
				// A server just restarted may not serve its streams yet.
				u.m.err(reasonLossCheck)
				u.log.Debug("upstream loss check failed; tried again", "err", err)
				retry = time.After(time.Second)
			} else {
				u.m.lossChecks.Inc()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-tick:
		case <-retry:
		}
	}
}

// lossReported returns the Uplink's record of expired records reported
// lost for good (it outlives sessions).
func (u *Uplink) lossReported() map[ferry.Lane]map[uint64]bool {
	u.lossMu.Lock()
	defer u.lossMu.Unlock()
	if u.reported == nil {
		u.reported = map[ferry.Lane]map[uint64]bool{}
	}
	return u.reported
}

// check reads the stream's ids from the oldest retained message on and
// sends again what is missing.
func (lc *lossChecker) check(ctx context.Context) error {
	u := lc.d.u
	msgs := groupKept(u.keep.EachKept)
	if len(msgs) == 0 {
		lc.maybeClear()
		return nil
	}
	s, err := lc.d.js.Stream(ctx, u.cfg.Stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", u.cfg.Stream, err)
	}
	info := s.CachedInfo()
	if info.Config.Retention != jetstream.LimitsPolicy {
		// Consumers delete messages from interest and work-queue streams:
		// a missing message is no sign of a loss there.
		u.lossOnce.Do(func() {
			u.log.Warn("stream does not keep messages by limits (interest or work-queue retention): acknowledged messages the server loses cannot be told from consumed ones, and are not sent again", "stream", u.cfg.Stream)
		})
		return nil
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	from := msgs[0].streamSeq
	for _, m := range msgs {
		from = min(from, m.streamSeq)
	}
	found, err := lc.scan(ctx, s, max(from, first), last)
	if err != nil {
		return err
	}
	var lost []*keptMsg
	oldestLost := false
	for i, m := range msgs {
		if m.streamSeq < first && m.streamSeq <= last {
			continue // removed by the stream's limits (max_age, max_msgs …), not lost
		}
		for _, id := range m.ids(u.opts.Gateway) {
			if _, ok := found[id]; !ok {
				lost = append(lost, m)
				oldestLost = oldestLost || i == 0 || m.streamSeq == from
				break
			}
		}
	}
	if len(lost) == 0 {
		lc.maybeClear()
		return nil
	}
	var gone []ferry.Record
	if oldestLost {
		gone = lc.lostPastRetention(ctx, s, first, last)
	}
	return lc.resend(ctx, lost, gone)
}

// lostPastRetention returns the records that left the retention and whose
// messages the stream no longer holds (each reported once).
func (lc *lossChecker) lostPastRetention(ctx context.Context, s jetstream.Stream, first, last uint64) []ferry.Record {
	u := lc.d.u
	msgs := groupKept(u.keep.EachExpired)
	if len(msgs) == 0 {
		return nil
	}
	from := msgs[0].streamSeq
	for _, m := range msgs {
		from = min(from, m.streamSeq)
	}
	found, err := lc.scan(ctx, s, max(from, first), last)
	if err != nil {
		u.log.Warn("could not check the records that left the retention", "err", err)
		return nil
	}
	var out []ferry.Record
	for _, m := range msgs {
		if m.streamSeq < first && m.streamSeq <= last {
			continue
		}
		missing := false
		for _, id := range m.ids(u.opts.Gateway) {
			if _, ok := found[id]; !ok {
				missing = true
			}
		}
		if !missing {
			continue
		}
		rep := lc.reported[m.lane]
		if rep == nil {
			rep = map[uint64]bool{}
			lc.reported[m.lane] = rep
		}
		for _, q := range m.seqs {
			if !rep[q] {
				rep[q] = true
				out = append(out, ferry.Record{Lane: m.lane, Seq: q, ID: ferry.RecordID(u.opts.Gateway, m.lane, q)})
			}
		}
	}
	// The record of what was reported stays bounded by what can expire.
	for l, rep := range lc.reported {
		if len(rep) > 2*(1<<16) {
			lc.reported[l] = map[uint64]bool{}
		}
	}
	return out
}

// scan returns the Nats-Msg-Id of this gateway's messages in the stream
// from sequence from to last, with their sequences.
func (lc *lossChecker) scan(ctx context.Context, s jetstream.Stream, from, last uint64) (map[string]uint64, error) {
	u := lc.d.u
	found := map[string]uint64{}
	if from == 0 {
		from = 1
	}
	if last < from {
		return found, nil
	}
	cc := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{u.subj.Telemetry, u.subj.Alerts},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
		HeadersOnly:    true,
	}
	cons, err := s.OrderedConsumer(ctx, cc)
	if errors.Is(err, jetstream.ErrConsumerMultipleFilterSubjectsNotSupported) {
		cc.FilterSubjects = nil
		cons, err = s.OrderedConsumer(ctx, cc)
	}
	if err != nil {
		return nil, fmt.Errorf("read ids of stream %s: %w", u.cfg.Stream, err)
	}
	for ctx.Err() == nil {
		batch, err := cons.FetchNoWait(1024)
		if err != nil {
			return nil, fmt.Errorf("read ids of stream %s: %w", u.cfg.Stream, err)
		}
		n := 0
		var seq uint64
		for m := range batch.Messages() {
			n++
			if md, err := m.Metadata(); err == nil {
				seq = md.Sequence.Stream
			}
			if id := m.Headers().Get(nats.MsgIdHdr); id != "" {
				found[id] = seq
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("read ids of stream %s: %w", u.cfg.Stream, err)
		}
		if seq >= last {
			return found, nil
		}
		if n == 0 {
			info, err := cons.Info(ctx)
			if err != nil {
				return nil, fmt.Errorf("read ids of stream %s: %w", u.cfg.Stream, err)
			}
			if info.NumPending == 0 {
				return found, nil
			}
			// The consumer has not caught up with what it holds yet.
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil, fmt.Errorf("read ids of stream %s from %d: %w", u.cfg.Stream, from, ctx.Err())
}

// resend publishes the lost messages again, in record order, and retains
// their records with their new sequences; gone are the records lost past
// the retention.
func (lc *lossChecker) resend(ctx context.Context, lost []*keptMsg, gone []ferry.Record) error {
	u := lc.d.u
	slices.SortFunc(lost, func(a, b *keptMsg) int {
		if a.lane != b.lane {
			return int(a.lane) - int(b.lane)
		}
		return compareU64(a.seqs[0], b.seqs[0])
	})
	nrec := 0
	for _, m := range lost {
		nrec += len(m.seqs)
	}
	resent, resentRecs := 0, 0
	var firstErr error
	for _, m := range lost {
		n, err := lc.resendOne(ctx, m)
		if err != nil {
			firstErr = err
			break
		}
		if n > 0 {
			resent++
			resentRecs += n
		}
	}
	u.m.lost.Add(float64(nrec))
	u.m.resent.Add(float64(resentRecs))
	u.m.unrecoverable.Add(float64(len(gone)))
	msg := fmt.Sprintf("upstream lost %d acknowledged messages (%d records) of stream %s; resent %d", len(lost), nrec, u.cfg.Stream, resent)
	attrs := []any{"stream", u.cfg.Stream, "lost_messages", len(lost), "lost_records", nrec, "resent_messages", resent, "resent_records", resentRecs,
		"first_id", lost[0].ids(u.opts.Gateway)[0], "last_id", lost[len(lost)-1].ids(u.opts.Gateway)[0]}
	if len(gone) > 0 {
		slices.SortFunc(gone, func(a, b ferry.Record) int {
			if a.Lane != b.Lane {
				return int(a.Lane) - int(b.Lane)
			}
			return compareU64(a.Seq, b.Seq)
		})
		msg += fmt.Sprintf("; %d records lost past the retention cannot be sent again: %s … %s", len(gone), gone[0].ID, gone[len(gone)-1].ID)
		attrs = append(attrs, "unrecoverable_records", len(gone), "unrecoverable_first", gone[0].ID, "unrecoverable_last", gone[len(gone)-1].ID)
	}
	if firstErr != nil {
		msg += fmt.Sprintf("; the rest is sent at the next check (%v)", firstErr)
	}
	u.log.Warn("upstream lost acknowledged messages; sent again from the retention", attrs...)
	now := u.opts.Now()
	u.lossMu.Lock()
	u.loss.Lost += uint64(len(lost))
	u.loss.Resent += uint64(resent)
	u.loss.Unrecoverable += uint64(len(gone))
	u.loss.LastLoss = now
	u.loss.LastLossMessage = msg
	u.lossMu.Unlock()
	lc.raise(msg, len(gone) > 0, now)
	return firstErr
}

func compareU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// resendOne publishes one lost message again and retains its records with
// the new mark; it returns the records sent.
func (lc *lossChecker) resendOne(ctx context.Context, m *keptMsg) (int, error) {
	u := lc.d.u
	recs, err := u.keep.ReadKept(m.lane, m.seqs)
	if err != nil {
		return 0, err
	}
	if len(recs) == 0 {
		return 0, nil // left the retention meanwhile
	}
	var outs []outMsg
	kind := uint64(m.kind)
	if m.kind == markBatch {
		body := lc.msgs.batchHead(nil)
		samples := 0
		kept := recs[:0]
		for _, r := range recs {
			start := len(body)
			if len(kept) > 0 {
				body = append(body, ',')
			}
			b, n, err := lc.msgs.element(body, r)
			if err != nil {
				body = body[:start]
				continue
			}
			body = b
			samples += n
			kept = append(kept, r)
		}
		recs = kept
		if len(recs) == 0 {
			return 0, nil
		}
		out, err := lc.msgs.batch(m.ids(u.opts.Gateway)[0], body, samples)
		if err != nil {
			return 0, err
		}
		outs = []outMsg{out}
	} else {
		built, err := lc.msgs.build(recs[0])
		if err != nil {
			return 0, nil // cannot be decoded: it could not have been sent either
		}
		outs = append(outs, built...)
		kind = markSingle
		if len(outs) > 1 {
			kind = uint64(min(len(outs), maxParts) + 1)
		}
	}
	var seq uint64
	for i, o := range outs {
		pa, err := lc.d.js.PublishMsg(ctx, o.msg)
		if err != nil {
			return 0, fmt.Errorf("send %s again: %w", o.msg.Header.Get(nats.MsgIdHdr), err)
		}
		u.m.pub[laneIndex(m.lane)].Inc()
		u.m.bytes.Add(float64(o.size))
		if i == 0 {
			seq = pa.Sequence
		}
	}
	var mark uint64
	if seq > 0 && seq <= maxMarkSeq {
		mark = seq<<8 | kind
	}
	marks := marksFor(make([]uint64, 0, len(recs)), len(recs), mark)
	if err := u.keep.AckKeep(recs, marks); err != nil {
		return len(recs), fmt.Errorf("retain records sent again: %w", err)
	}
	return len(recs), nil
}

// raise sends the loss alert: once per episode (an active alert is not
// raised again; its message is in the log and LossStatus).
func (lc *lossChecker) raise(msg string, unrecoverable bool, now time.Time) {
	u := lc.d.u
	u.lossMu.Lock()
	active := u.lossAlert != nil
	if !active {
		sev := ferry.SeverityWarning
		if unrecoverable {
			sev = ferry.SeverityCritical
		}
		u.lossAlert = &ferry.Alert{
			ID:       RuleUpstreamLoss + "/" + strconv.FormatInt(now.UnixMilli(), 10),
			Rule:     RuleUpstreamLoss,
			Severity: sev,
			State:    ferry.AlertRaised,
			Message:  msg,
			Labels:   map[string]string{"source": "uplink", "gateway": u.opts.Gateway, "stream": u.cfg.Stream},
			Since:    now,
			Time:     now,
		}
	}
	a := *u.lossAlert
	u.lossAlertLast = now
	u.lossMu.Unlock()
	if !active && u.opts.Alert != nil {
		u.opts.Alert(a)
	}
}

// maybeClear clears the loss alert after lossAlertHold without a loss.
func (lc *lossChecker) maybeClear() {
	u := lc.d.u
	now := u.opts.Now()
	u.lossMu.Lock()
	if u.lossAlert == nil || now.Sub(u.lossAlertLast) < lossAlertHold {
		u.lossMu.Unlock()
		return
	}
	a := *u.lossAlert
	last := u.lossAlertLast
	u.lossAlert = nil
	u.lossMu.Unlock()
	a.State = ferry.AlertCleared
	a.Time = now
	a.Message = "no loss of acknowledged messages since " + last.UTC().Format(time.RFC3339)
	if u.opts.Alert != nil {
		u.opts.Alert(a)
	}
}
