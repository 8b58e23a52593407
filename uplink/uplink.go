package uplink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/backoff"
)

// Source is where the uplink takes records from: the buffer. It is
// implemented by *buffer.Buffer.
type Source interface {
	// Next blocks until records are available (or ctx ends) and returns up
	// to max records (at most maxBytes of Data, but at least one): every
	// pending alert before any telemetry. Returned records are in flight:
	// Next does not return them again until Release or a restart.
	Next(ctx context.Context, max, maxBytes int) ([]ferry.Record, error)
	// Ack deletes records the upstream has acknowledged.
	Ack(recs ...ferry.Record) error
	// Release puts unacknowledged records back to be offered again.
	Release(recs ...ferry.Record)
}

// BatchDeviceToken stands for {device} in the subject of batch messages
// (ferry.{site}.{gateway}.telemetry._batch by default).
const BatchDeviceToken = "_batch"

// Options are what the uplink needs besides its configuration.
type Options struct {
	// Gateway and Site fill the subject templates and every message body.
	Gateway string
	Site    string
	// Version is ferry's version, sent in the Ferry-Version header.
	Version    string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now gives the time of catalog messages and of the lag metric.
	Now func() time.Time
	// Alert receives the uplink's own alerts (RuleUpstreamLoss); it must
	// not block. Nil: none are sent (the log and LossStatus still tell).
	Alert func(ferry.Alert)
}

// Catalog is what the gateway's configuration says about its points.
type Catalog struct {
	ConfigVersion string
	Points        []ferry.PointInfo
}

// ErrNotConnected is returned by Err when the uplink has not connected yet, or has stopped.
var ErrNotConnected = errors.New("not connected")

// Uplink forwards the records of a Source to NATS JetStream.
type Uplink struct {
	cfg     NATSConfig
	src     Source
	opts    Options
	log     *slog.Logger
	m       *metrics
	subj    Subjects // this gateway's subjects (telemetry with * for the device)
	filters Subjects // every gateway's subjects, for created streams
	tel     *telemetrySubjects
	perDev  bool
	// batchSubject carries batch messages: the telemetry subject with
	// BatchDeviceToken for {device}, so that every stream and consumer
	// that takes telemetry takes batches too.
	batchSubject string
	// seals is nil when batching is off (batch.max_bytes 0, or a Source
	// that is not a ferry.StateStore).
	seals *sealSet
	// keep is the Source's retention of acknowledged records (loss.go);
	// nil when it has none or it is off.
	keep keeper

	running atomic.Bool

	lossMu        sync.Mutex
	loss          LossStatus
	lossAlert     *ferry.Alert // the active loss alert
	lossAlertLast time.Time    // when the last loss was found
	reported      map[ferry.Lane]map[uint64]bool
	lossOnce      sync.Once

	mu      sync.Mutex
	err     error
	reason  string // err's metric reason
	lastLog string // logKey of the last state logged, so that each change logs once
	ready   bool   // ready at least once

	catMu   sync.Mutex
	catalog *Catalog
	catGen  uint64
	catCh   chan struct{}
}

// New returns an uplink for cfg that drains src. It validates cfg and does
// no I/O; Run connects.
func New(cfg NATSConfig, src Source, opts Options) (*Uplink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("uplink: %w: %w", ferry.ErrInvalidConfig, err)
	}
	if src == nil {
		return nil, errors.New("uplink: no source")
	}
	if !validToken(opts.Gateway) {
		return nil, fmt.Errorf("uplink: gateway id %q is not a valid subject token", opts.Gateway)
	}
	subj, err := cfg.SubjectsFor(opts.Site, opts.Gateway)
	if err != nil {
		return nil, fmt.Errorf("uplink: %w", err)
	}
	tt, _ := parseTemplate(cfg.TelemetrySubject, "site", "gateway", "device")
	at, _ := parseTemplate(cfg.AlertSubject, "site", "gateway")
	ct, _ := parseTemplate(cfg.CatalogSubject, "site", "gateway")
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("uplink: metrics: %w", err)
	}
	u := &Uplink{
		cfg:     cfg,
		src:     src,
		opts:    opts,
		log:     opts.Logger,
		m:       m,
		subj:    subj,
		filters: Subjects{Telemetry: tt.filter(), Alerts: at.filter(), Catalog: ct.filter()},
		perDev:  tt.has("device"),
		err:     ErrNotConnected,
		catCh:   make(chan struct{}, 1),
	}
	u.tel = newTelemetrySubjects(subj.Telemetry, u.perDev)
	u.batchSubject, _ = u.tel.subject(BatchDeviceToken)
	if store, ok := src.(ferry.StateStore); ok && cfg.Batch.MaxBytes > 0 {
		held, _ := src.(recordHolder)
		u.seals = newSealSet(store, held)
	}
	if k, ok := src.(keeper); ok && k.RetainWindow() > 0 {
		u.keep = k
	}
	return u, nil
}

// Err returns nil when the uplink is connected and its stream usable,
// else why not. It backs /readyz.
func (u *Uplink) Err() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

// SetCatalog sets the catalog; it is published now (when connected) and
// again after every reconnect. The uplink keeps c.Points, it does not copy
// them (136 bytes a point, 1.4 MB at 10k points: issue 20): the caller
// must not change them afterwards (the gateway hands over the loaded
// configuration's points, which nothing changes).
func (u *Uplink) SetCatalog(c Catalog) {
	u.catMu.Lock()
	u.catalog = &c
	u.catGen++
	u.catMu.Unlock()
	select {
	case u.catCh <- struct{}{}:
	default:
	}
}

// fail counts a failure under reason and records it as the uplink's
// state.
func (u *Uplink) fail(err error, reason string) {
	u.m.err(reason)
	u.setState(err, reason)
}

// setState records the uplink's health. A change is logged once: a
// problem at Warn, recovery at Info.
func (u *Uplink) setState(err error, reason string) { u.setStateIf("", err, reason) }

// setStateIf is setState, but only when the current state's reason is
// only (any state when only is empty).
func (u *Uplink) setStateIf(only string, err error, reason string) {
	u.mu.Lock()
	if only != "" && (u.err == nil || u.reason != only) {
		u.mu.Unlock()
		return
	}
	first := err == nil && !u.ready
	if err == nil {
		u.ready = true
	}
	u.err = err
	u.reason = reason
	key := logKey(err, reason)
	changed := key != u.lastLog
	u.lastLog = key
	u.mu.Unlock()
	if err == nil {
		u.m.connected.Set(1)
	} else {
		u.m.connected.Set(0)
	}
	if !changed {
		if err != nil {
			u.log.Debug("uplink still failing", "err", err)
		}
		return
	}
	switch {
	case err != nil:
		u.log.Warn("uplink not ready", "err", err, "reason", reason)
	case first:
		u.log.Info("uplink ready", "stream", u.cfg.Stream)
	default:
		u.log.Info("uplink back", "stream", u.cfg.Stream)
	}
}

// Run connects, makes sure the stream is usable and drains the Source
// until ctx ends. Connection and stream problems are retried forever with
// backoff (Err says what is wrong meanwhile); records stay in the Source.
// When ctx ends, outstanding publishes get flush_timeout to be
// acknowledged; the rest is released to the Source. Run returns nil then.
func (u *Uplink) Run(ctx context.Context) error {
	if !u.running.CompareAndSwap(false, true) {
		return errors.New("uplink: Run is already running")
	}
	defer u.running.Store(false)
	defer u.m.connected.Set(0)
	bo := &backoff.Backoff{Max: u.cfg.ReconnectMax}
	first := true
	for ctx.Err() == nil {
		ev := &connEvents{changed: make(chan struct{}, 1), closed: make(chan struct{}), lossKick: make(chan struct{}, 1)}
		nc, err := u.dial(ev)
		if err != nil {
			u.fail(err, errorReason(err))
			if !bo.Wait(ctx) {
				break
			}
			continue
		}
		if !first {
			u.m.reconnects.Inc()
		}
		first = false
		if err := u.session(ctx, nc, ev, bo); err != nil {
			u.fail(err, errorReason(err))
		}
		nc.Close()
		if ctx.Err() != nil || !bo.Wait(ctx) {
			break
		}
	}
	u.mu.Lock()
	u.err = ErrNotConnected
	u.mu.Unlock()
	return nil
}

// connEvents carries the connection's state changes from nats.go's
// callbacks to the session.
type connEvents struct {
	changed   chan struct{} // disconnected, reconnected or closed
	closed    chan struct{}
	once      sync.Once
	republish atomic.Bool           // reconnected: publish the catalog again
	cause     atomic.Pointer[error] // why ferry closed the connection itself
	// lossKick asks for a loss check (reconnected, recovered).
	lossKick chan struct{}
}

func (e *connEvents) notify() { signal(e.changed) }

// dial connects, with the callbacks that feed ev installed before the
// first connection attempt, so that no state change is missed.
func (u *Uplink) dial(ev *connEvents) (*nats.Conn, error) {
	return Connect(u.cfg, "ferry "+u.opts.Gateway,
		nats.CustomInboxPrefix(InboxPrefix(u.opts.Site, u.opts.Gateway)),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if err == nil {
				err = nats.ErrConnectionClosed
			}
			if cerr := credsErr(&u.cfg); cerr != nil {
				// The creds file cannot work (its JWT expired): the
				// client must not reconnect with it. The session ends
				// with this error, and the dials after it give it again
				// until the file is renewed: one state, logged once.
				ev.cause.Store(&cerr)
				c.Close()
			} else if !c.IsClosed() {
				u.fail(fmt.Errorf("disconnected from %s: %w", serverList(u.cfg.URLs), err), reasonConnect)
			}
			ev.notify()
		}),
		// While the client reconnects on its own, each failed attempt
		// says why the server cannot be reached (refused, timeout, DNS):
		// that is the state /readyz shows, not the publishes the client
		// refuses meanwhile.
		nats.ReconnectErrHandler(func(c *nats.Conn, err error) {
			if !c.IsClosed() {
				u.fail(fmt.Errorf("reconnecting to %s: %w", serverList(u.cfg.URLs), err), reasonConnect)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			u.m.reconnects.Inc()
			u.log.Info("uplink reconnected", "server", c.ConnectedUrlRedacted())
			// The connection is back: clear what the handlers above
			// set. A stream or publish problem stays until the drain
			// clears it (an idle drain has nothing to clear it with).
			u.setStateIf(reasonConnect, nil, "")
			ev.republish.Store(true)
			ev.notify()
			signal(ev.lossKick)
			signal(u.catCh)
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			ev.once.Do(func() { close(ev.closed) })
			ev.notify()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			u.log.Debug("nats async error", "err", err)
		}),
	)
}

// session runs one connection until it is closed (error) or ctx ends
// (nil).
func (u *Uplink) session(ctx context.Context, nc *nats.Conn, ev *connEvents, bo *backoff.Backoff) error {
	u.log.Info("uplink connected", "server", nc.ConnectedUrlRedacted())

	d := newDrain(u, nc)
	js, err := NewJetStream(nc, u.cfg,
		jetstream.WithPublishAsyncMaxPending(u.cfg.MaxInflight+1),
		jetstream.WithPublishAsyncTimeout(u.cfg.AckTimeout),
		jetstream.WithPublishAsyncAckHandler(d.onAck),
		jetstream.WithPublishAsyncErrHandler(d.onErr),
		jetstream.WithDefaultTimeout(u.cfg.ConnectTimeout),
	)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	d.js = js

	// The stream must be usable before anything is published.
	var plan streamPlan
	for {
		sctx, cancel := context.WithTimeout(ctx, 2*u.cfg.ConnectTimeout)
		plan, err = u.ensureStreams(sctx, js)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		u.fail(err, streamReason(err))
		if !waitOrClosed(ctx, ev.closed, bo) {
			if ctx.Err() != nil {
				return nil
			}
			return closedErr(nc, ev)
		}
	}
	for _, w := range plan.warnings {
		u.log.Warn(w)
	}
	bo.Reset()
	d.plan = plan
	d.lastSeq = plan.lastSeq
	u.setState(nil, "")
	published := u.publishCatalogNow(ctx, js, plan.rollup)

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(4)
	go func() {
		defer wg.Done()
		u.catalogLoop(sctx, js, d.currentPlan, &ev.republish, published)
	}()
	go func() {
		defer wg.Done()
		d.lossLoop(sctx, ev.lossKick)
	}()
	go func() {
		defer wg.Done()
		d.ackLoop()
	}()
	pumpDone := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(pumpDone)
		d.pump(sctx, ev, bo)
	}()
	select {
	case <-ctx.Done():
	case <-ev.closed:
	}
	cancel()
	<-pumpDone
	d.shutdown(u.cfg.FlushTimeout)
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return closedErr(nc, ev)
}

func closedErr(nc *nats.Conn, ev *connEvents) error {
	if err := ev.cause.Load(); err != nil {
		return *err
	}
	if err := nc.LastError(); err != nil {
		return fmt.Errorf("connection closed: %w", err)
	}
	return errors.New("connection closed")
}

// waitOrClosed waits one backoff step; false when ctx ended or the
// connection closed first.
func waitOrClosed(ctx context.Context, closed <-chan struct{}, bo *backoff.Backoff) bool {
	t := time.NewTimer(bo.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-closed:
		return false
	case <-t.C:
		return true
	}
}
