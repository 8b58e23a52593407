package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry/internal/backoff"
)

// Hooks is what the agent asks of the gateway it runs in.
type Hooks struct {
	// Prepare loads and validates the configuration of the bundle staged
	// in dir ("" means the local file alone) with the loader of `ferry
	// validate`, and returns the function that applies it through the
	// live-reload path. A reload that cannot be applied changes nothing
	// and returns its error.
	Prepare func(dir string) (apply func() error, err error)
	// Gate is called just before an apply; the check it returns must
	// pass within the readiness window after the apply (nil: ready), else
	// the bundle is rolled back.
	Gate func() (check func() error)
	// Health describes the gateway for its status key.
	Health func() Health
}

// Options is what the agent takes besides its Config.
type Options struct {
	Site, Gateway   string
	Version, Commit string
	// Connect opens the agent's own NATS connection (the uplink's
	// settings of the local file); the agent closes it.
	Connect func() (*nats.Conn, error)
	// Store is where bundles are staged (OpenStore(data_dir)).
	Store *Store
	// State is the store's state as the gateway booted on it, so that
	// Result is right before Run has started (nil: none yet; Run reads
	// the store).
	State  *State
	Hooks  Hooks
	Logger *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Agent is a gateway's fleet agent: it watches the gateway's config key
// and the site-wide key, and takes every new bundle through validate,
// stage, apply, readiness gate and keep-or-roll-back; it writes the
// gateway's status key on every change and every heartbeat.
type Agent struct {
	cfg     Config
	opts    Options
	log     *slog.Logger
	started time.Time

	mu      sync.Mutex
	state   State
	result  Applied // the last result reported
	changed chan struct{}
}

// New returns the agent of cfg; it does no I/O.
func New(cfg Config, opts Options) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	if err := CheckIdentity(opts.Site, opts.Gateway); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	if opts.Connect == nil || opts.Store == nil || opts.Hooks.Prepare == nil || opts.Hooks.Gate == nil || opts.Hooks.Health == nil {
		return nil, errors.New("fleet: Connect, Store and every hook are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	a := &Agent{cfg: cfg, opts: opts, log: opts.Logger, changed: make(chan struct{}, 1), started: opts.Now()}
	a.result.State = StateLocal // until Run reads the store
	if opts.State != nil {
		a.state = *opts.State
		if a.state.Last != nil {
			a.result = *a.state.Last
		}
	}
	return a, nil
}

// Key is the gateway's key in both buckets.
func (a *Agent) Key() string { return Key(a.opts.Site, a.opts.Gateway) }

// Run connects, watches and reports until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if a.opts.State == nil {
		st, err := a.opts.Store.State()
		if err != nil {
			a.log.Error("fleet state unreadable; starting from none", "err", err)
		}
		a.mu.Lock()
		a.state = st
		if st.Last != nil {
			a.result = *st.Last
		}
		a.mu.Unlock()
	}
	var err error

	var nc *nats.Conn
	bo := &backoff.Backoff{Max: 30 * time.Second}
	for {
		if nc, err = a.opts.Connect(); err == nil {
			break
		}
		a.log.Debug("fleet connect", "err", err)
		if !bo.Wait(ctx) {
			return nil
		}
	}
	defer nc.Close()
	js, err := a.cfg.JetStream(nc)
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.publish(ctx, js) }()
	a.watch(ctx, js)
	wg.Wait()
	return nil
}

// bucket waits for a bucket to exist.
func (a *Agent) bucket(ctx context.Context, js jetstream.JetStream, name string) jetstream.KeyValue {
	bo := &backoff.Backoff{Max: 30 * time.Second}
	for {
		kv, err := js.KeyValue(ctx, name)
		if err == nil {
			return kv
		}
		if bo.Attempt() == 0 {
			a.log.Warn("fleet bucket not reachable, retrying", "bucket", name, "err", err)
		}
		if !bo.Wait(ctx) {
			return nil
		}
	}
}

// watch follows the two config keys and considers every change. Each key
// has its own watcher (a consumer filtered on that one key), so that a
// gateway's permissions can allow consumers on its own keys only (see
// docs/fleet.md).
func (a *Agent) watch(ctx context.Context, js jetstream.JetStream) {
	kv := a.bucket(ctx, js, a.cfg.ConfigBucket)
	if kv == nil {
		return
	}
	key, siteKey := a.Key(), SiteKey(a.opts.Site)
	bo := &backoff.Backoff{Max: 30 * time.Second}
	for ctx.Err() == nil {
		wg, err := kv.Watch(ctx, key)
		if err != nil {
			a.log.Warn("fleet watch", "key", key, "err", err)
			if !bo.Wait(ctx) {
				return
			}
			continue
		}
		ws, err := kv.Watch(ctx, siteKey)
		if err != nil {
			wg.Stop()
			a.log.Warn("fleet watch", "key", siteKey, "err", err)
			if !bo.Wait(ctx) {
				return
			}
			continue
		}
		bo.Reset()
		a.log.Info("fleet watching", "bucket", a.cfg.ConfigBucket, "key", key, "site_key", siteKey)
		a.follow(ctx, wg.Updates(), ws.Updates())
		wg.Stop()
		ws.Stop()
	}
}

// follow considers the values of the two watchers, once both have
// delivered their initial value, until one closes or ctx ends.
func (a *Agent) follow(ctx context.Context, gwUp, siteUp <-chan jetstream.KeyValueEntry) {
	var gw, site jetstream.KeyValueEntry
	gwInit, siteInit := true, true
	value := func(e jetstream.KeyValueEntry) jetstream.KeyValueEntry {
		if e.Operation() != jetstream.KeyValuePut {
			return nil // deleted or purged: nothing to apply
		}
		return e
	}
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-gwUp:
			if !ok {
				return
			}
			if e == nil {
				gwInit = false
			} else {
				gw = value(e)
			}
		case e, ok := <-siteUp:
			if !ok {
				return
			}
			if e == nil {
				siteInit = false
			} else {
				site = value(e)
			}
		}
		if !gwInit && !siteInit {
			a.consider(ctx, gw, site)
		}
	}
}

// consider takes the current values of the two keys through the apply
// sequence, unless they are what runs or what was already refused.
func (a *Agent) consider(ctx context.Context, gwE, siteE jetstream.KeyValueEntry) {
	limit := int64(a.cfg.MaxBundleBytes)
	var gw, site *Bundle
	var err error
	if gwE != nil {
		if gw, err = DecodeBundle(gwE.Value(), limit); err != nil {
			a.finish(Applied{Hash: "kv-" + fmt.Sprint(gwE.Revision()), State: StateRefused, Reason: "key " + gwE.Key() + ": " + err.Error()})
			return
		}
	}
	if siteE != nil {
		if site, err = DecodeBundle(siteE.Value(), limit); err != nil {
			a.finish(Applied{Hash: "kv-" + fmt.Sprint(siteE.Revision()), State: StateRefused, Reason: "site key " + siteE.Key() + ": " + err.Error()})
			return
		}
	}
	m, err := Merge(gw, site)
	if m == nil && err == nil {
		return // no bundle: the local file runs
	}
	if err != nil {
		a.finish(Applied{State: StateRefused, Reason: err.Error()})
		return
	}
	try := Applied{Hash: m.Hash, Revision: m.Revision, SiteRevision: m.SiteRevision}
	a.mu.Lock()
	st := a.state
	a.mu.Unlock()
	if st.LKG != nil && st.LKG.Hash == m.Hash {
		if st.Last == nil || st.Last.Hash != m.Hash {
			try.State = StateApplied
			a.finish(try)
		}
		return
	}
	if st.Last != nil && st.Last.Hash == m.Hash && st.Last.State != StateApplying {
		return // refused or rolled back before: not tried again
	}
	if lkg := st.LKG; lkg != nil {
		if gw != nil && gw.Revision < lkg.Revision {
			try.State, try.Reason = StateRefused, fmt.Sprintf("revision %d is older than the applied revision %d (a replay?)", gw.Revision, lkg.Revision)
			a.finish(try)
			return
		}
		if site != nil && site.Revision < lkg.SiteRevision {
			try.State, try.Reason = StateRefused, fmt.Sprintf("site revision %d is older than the applied site revision %d (a replay?)", site.Revision, lkg.SiteRevision)
			a.finish(try)
			return
		}
	}
	a.apply(ctx, m, try)
}

// apply runs validate, stage, apply, gate and keep-or-roll-back for m.
func (a *Agent) apply(ctx context.Context, m *Merged, try Applied) {
	log := a.log.With("hash", m.Hash, "revision", m.Revision, "site_revision", m.SiteRevision)
	dir, err := a.opts.Store.Stage(m)
	if err != nil {
		try.State, try.Reason = StateRefused, err.Error()
		a.finish(try)
		return
	}
	applyFn, err := a.opts.Hooks.Prepare(dir)
	if err != nil {
		try.State, try.Reason = StateRefused, "invalid: "+oneLine(err)
		log.Warn("fleet bundle refused", "reason", try.Reason)
		a.finish(try)
		return
	}
	try.State = StateApplying
	a.save(func(st *State) { st.Last = &try })
	check := a.opts.Hooks.Gate()
	if err := applyFn(); err != nil {
		try.State, try.Reason = StateRefused, "reload: "+oneLine(err)
		log.Warn("fleet bundle refused", "reason", try.Reason)
		a.finish(try)
		return
	}
	log.Info("fleet bundle applied, waiting for readiness", "window", a.cfg.ReadinessWindow)
	if err := a.gate(ctx, check); err != nil {
		if ctx.Err() != nil {
			return // stopping: the next start runs the last-known-good and tries again
		}
		try.State, try.Reason = StateRolledBack, "not ready within "+a.cfg.ReadinessWindow.String()+": "+oneLine(err)
		if rerr := a.rollback(); rerr != nil {
			try.Reason += "; rollback: " + oneLine(rerr)
		}
		log.Warn("fleet bundle rolled back", "reason", try.Reason)
		a.finish(try)
		return
	}
	try.State = StateApplied
	log.Info("fleet bundle kept as last-known-good")
	a.finish(try)
}

// gate polls check until it passes or the readiness window ends.
func (a *Agent) gate(ctx context.Context, check func() error) error {
	deadline := time.Now().Add(a.cfg.ReadinessWindow)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// rollback applies the last-known-good bundle, or the local file when
// there is none.
func (a *Agent) rollback() error {
	a.mu.Lock()
	lkg := a.state.LKG
	a.mu.Unlock()
	dir := ""
	if lkg != nil {
		dir = a.opts.Store.Dir(lkg.Hash)
	}
	applyFn, err := a.opts.Hooks.Prepare(dir)
	if err != nil {
		return err
	}
	return applyFn()
}

// finish records a result: in the state (an applied bundle becomes the
// last-known-good) and in the status.
func (a *Agent) finish(r Applied) {
	r.Time = a.opts.Now()
	a.save(func(st *State) {
		st.Last = &r
		if r.State == StateApplied {
			lkg := r
			st.LKG = &lkg
		}
	})
	a.mu.Lock()
	a.result = r
	a.mu.Unlock()
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

func (a *Agent) save(change func(*State)) {
	a.mu.Lock()
	st := a.state
	change(&st)
	a.state = st
	a.mu.Unlock()
	if err := a.opts.Store.SaveState(st); err != nil {
		a.log.Error("fleet state not saved", "err", err)
	}
}

// Result is the last apply result and the bundle that runs (nil: the
// local file).
func (a *Agent) Result() (last Applied, running *Applied) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state.LKG != nil {
		r := *a.state.LKG
		running = &r
	}
	return a.result, running
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// marshal is json.Marshal for values that cannot fail to encode.
func marshal(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
