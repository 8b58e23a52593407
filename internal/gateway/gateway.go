package gateway

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/daemon"
	"github.com/ferry-edge/ferry/internal/history"
	"github.com/ferry-edge/ferry/internal/reduce"
	"github.com/ferry-edge/ferry/internal/sinks"
	"github.com/ferry-edge/ferry/internal/web"
	"github.com/ferry-edge/ferry/rules"
	"github.com/ferry-edge/ferry/uplink"
)

// pipelineSize is how many scans may wait between the drivers and the
// buffer's own queue.
const pipelineSize = 4096

// Options is what the gateway takes besides its configuration.
type Options struct {
	Logger *slog.Logger
	// Level is the logger's level; a reload sets it from log.level.
	Level           *slog.LevelVar
	Version, Commit string
	// ShutdownTimeout bounds each shutdown stage that waits on the network
	// (the uplink's flush, the alert sinks).
	ShutdownTimeout time.Duration
}

// Gateway is a running gateway: every part, wired. It is the only place
// that knows all of them. Reload swaps what changed and keeps the rest.
type Gateway struct {
	opts Options
	log  *slog.Logger
	reg  *prometheus.Registry
	svc  *daemon.Metrics

	drvM driverMetrics

	buf    *buffer.Buffer
	engine *rules.Engine
	// alarms are the machines' own alarms (OPC UA conditions); alarms.go.
	alarms *machineAlarms
	red    *reduce.Reducer
	pipe   *pipeline
	http   *web.Server // nil when the listener is off
	// hist is the local history, nil when it is off (history.go): set
	// by New after the buffer opened, read by sendLocal from the
	// buffer's writer goroutine, hence atomic.
	hist    atomic.Pointer[history.Store]
	histRun *runner

	sinks atomic.Pointer[sinks.Sinks]
	con   webWiring // what the HTTP server shows that no part owns; see web.go
	// cmds is the command path; see commands.go.
	cmds commandWiring
	// early holds the buffer's own alerts raised before the sinks exist
	// (a damaged file quarantined by Open); setSinks delivers them.
	earlyMu sync.Mutex
	early   []ferry.Alert

	// fleet is fleet mode's wiring (nil agent when off); see fleet.go.
	fleet fleetWiring

	// What the HTTP handlers and readiness checks read: published by Run
	// and Reload, read without d.mu, so that a reload or a shutdown that
	// waits for a driver to stop never holds up /readyz, /metrics or the
	// API.
	curCfg     atomic.Pointer[config.Config]
	curUp      atomic.Pointer[uplink.Uplink]
	curUps     atomic.Pointer[[]*upstream]
	curDrivers atomic.Pointer[[]ferry.Driver]

	// mu serialises Run's start and shutdown with Reload, and guards what
	// a reload changes.
	mu       sync.Mutex
	cfg      *config.Config
	groups   map[string]*group
	sinksRun *runner
	up       *uplink.Uplink // the first of ups
	upRun    *runner
	ups      []*upstream // upstreams.go
	// runCtx is the parent of the drivers, the sinks and the uplink: set
	// by Run once they start, nil again when its shutdown begins (a
	// reload then does nothing).
	runCtx context.Context
}

// New builds the gateway of cfg: it opens the buffer (taking its file
// lock), builds every part and binds the HTTP listener, so that a bad
// setting or a port in use stops the start with a clear error. It starts
// nothing: Run does. The gateway keeps cfg, and drops the points from its
// devices' specs once their drivers are built (config.Config.DropPointSpecs):
// do not build drivers from cfg afterwards.
func New(cfg *config.Config, opts Options) (*Gateway, error) {
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 20 * time.Second
	}
	d := &Gateway{opts: opts, log: opts.Logger, cfg: cfg, reg: prometheus.NewRegistry(), groups: map[string]*group{}}
	if cfg.Fleet != nil {
		booted, err := d.fleetBoot(cfg)
		if err != nil {
			return nil, err
		}
		cfg, d.cfg = booted, booted
	}
	if err := daemon.RegisterRuntime(d.reg); err != nil {
		return nil, err
	}
	d.svc = daemon.NewMetrics(d.reg, opts.Version, opts.Commit)
	d.drvM = newDriverMetrics(d.reg)

	buf, err := buffer.Open(cfg.DataDir, cfg.Buffer, buffer.Options{
		Gateway:       cfg.Gateway.ID,
		ConfigVersion: cfg.Version,
		Logger:        d.log.With("part", "buffer"),
		Registerer:    d.reg,
		Alert:         d.sendLocal,
		Consumers:     bufferConsumers(cfg),
	})
	if err != nil {
		return nil, err
	}
	d.buf = buf
	engine, err := rules.New(cfg.Rules, rules.Options{
		Logger:     d.log.With("part", "rules"),
		Registerer: d.reg,
		State:      buf,
		Emit:       d.alert,
	})
	if err != nil {
		buf.Close()
		return nil, err
	}
	d.engine = engine
	if d.alarms, err = newMachineAlarms(d.log.With("part", "alarms"), buf, d.sendLocal, d.runningDrivers); err != nil {
		buf.Close()
		return nil, err
	}
	// Built even with no reduce section (it then reduces nothing), so
	// that its metrics exist and a reload can turn reduction on.
	red, err := reduce.New(cfg.Reduce, reduce.Options{Registerer: d.reg})
	if err != nil {
		buf.Close()
		return nil, err
	}
	d.red = red
	d.pipe = newPipeline(pipelineSize, engine.Process, buf.AppendScanWait, d.reg)
	d.pipe.reduce = red

	if err := d.setSinks(cfg.Alerts); err != nil {
		buf.Close()
		return nil, err
	}
	for key, spec := range groupSpecs(cfg) {
		drv, err := d.newDriver(key, spec)
		if err != nil {
			buf.Close()
			return nil, err
		}
		d.groups[key] = newGroup(key, spec, drv)
	}
	// The drivers hold what they need of the points: the configuration
	// the gateway keeps drops them (a reload compares digests).
	cfg.DropPointSpecs()
	d.publishDrivers()
	ups, err := d.newUpstreams(cfg)
	if err != nil {
		buf.Close()
		return nil, err
	}
	d.setUpstreams(ups)
	if err := d.openHistory(cfg); err != nil {
		buf.Close()
		return nil, err
	}
	d.curCfg.Store(cfg)
	if err := d.newCommands(cfg); err != nil {
		buf.Close()
		return nil, err
	}
	if !cfg.HTTP.Disabled() {
		srv, err := d.newWeb(cfg)
		if err != nil {
			d.stopHistory(0)
			buf.Close()
			return nil, err
		}
		d.http = srv
		// Bind now, last (nothing after it can fail and leave the socket
		// open): a port in use or a bad certificate stops the start with
		// a clear error instead of a half-running gateway.
		if err := srv.Listen(); err != nil {
			d.stopHistory(0)
			buf.Close()
			return nil, err
		}
	}
	d.observeForCommands()
	return d, nil
}

// Run starts every part, serves until ctx ends, then shuts down in
// pipeline order: drivers, pipeline (rules see the last scans), buffer
// commit, uplink flush, sinks, buffer close, HTTP. The shutdown waits at
// most opts.ShutdownTimeout in all for the parts that can hang (drivers,
// the uplink's flush, the sinks); the buffer is always committed and
// closed.
func (d *Gateway) Run(ctx context.Context) error {
	// Parts that must outlive the drivers during shutdown get their own
	// context, cancelled in order below.
	partsCtx, cancelParts := context.WithCancel(context.Background())
	defer cancelParts()

	var httpRun *runner
	if d.http != nil {
		httpRun = start(partsCtx, d.http.Run)
	}
	pipeDone := make(chan struct{})
	go func() { defer close(pipeDone); d.pipe.Run() }()
	rulesRun := start(partsCtx, d.engine.Run)
	d.startHistory(partsCtx)

	d.mu.Lock()
	cfg := d.cfg
	d.sinksRun = start(partsCtx, d.sinks.Load().Run)
	d.startUpstreams(partsCtx)
	for _, g := range d.groups {
		d.startGroup(partsCtx, g)
	}
	cmdRun := start(partsCtx, d.runCommands)
	d.runCtx = partsCtx
	d.mu.Unlock()
	fleetRun := d.startFleet(partsCtx)

	d.svc.ConfigLoaded(cfg.Version, time.Now())
	daemon.Ready()
	daemon.Status("running: " + cfg.Summary())
	d.log.Info("ferry running", "version", d.opts.Version, "gateway", cfg.Gateway.ID, "config", cfg.Summary())
	// Loading a large device map allocates far more than the running
	// gateway keeps; hand that back to the OS now rather than at the
	// scavenger's pace (RSS is what a gateway's operator watches).
	debug.FreeOSMemory()
	wdCtx, stopWD := context.WithCancel(partsCtx)
	wdDone := start(wdCtx, func(ctx context.Context) error { return daemon.Watchdog(ctx, d.healthy, d.log) })

	var fatal error
	select {
	case <-ctx.Done():
	case <-httpRun.done():
		// The listener failed (port taken): not a gateway to keep running.
		fatal = httpRun.wait()
		httpRun = nil
	}

	daemon.Stopping()
	stopWD()
	_ = wdDone.wait()
	deadline := time.Now().Add(d.opts.ShutdownTimeout)
	// left is the time the shutdown may still wait; a stage that finds it
	// spent still gets a moment, so that a part with nothing to do is not
	// reported as hanging.
	left := func() time.Duration { return max(time.Until(deadline), 100*time.Millisecond) }

	fleetRun.stop(left()) // before d.mu: an apply in progress holds it
	d.mu.Lock()
	defer d.mu.Unlock()
	d.runCtx = nil // a reload from now on does nothing
	// 0. No new commands; those in flight finish while the drivers run.
	if !cmdRun.stop(min(left(), commandStopTimeout(d.cfg))) {
		d.log.Error("commands in flight did not finish in time")
	}
	// 1. Drivers stop emitting.
	var wg sync.WaitGroup
	t := left()
	for _, g := range d.groups {
		wg.Add(1)
		go func() { defer wg.Done(); d.stopGroup(g, t) }()
	}
	wg.Wait()
	// 2. The pipeline drains into the rules and the buffer. A driver that
	// did not stop in time finds it closed: its late scans are finished
	// with ErrClosed.
	d.pipe.Close()
	select {
	case <-pipeDone:
	case <-time.After(left()):
		// The rule engine or the buffer hangs; what it holds is lost
		// with the process, as in a crash (the buffer is crash-safe).
		d.log.Error("pipeline did not drain in time", "waiting", len(d.pipe.in))
	}
	rulesRun.stop(left())
	// 3. The buffer commits what it holds, so every accepted scan is on
	// disk before the network parts get their bounded time.
	fctx, cancel := context.WithTimeout(context.Background(), left())
	if err := d.buf.Flush(fctx); err != nil {
		d.log.Error("buffer flush at shutdown", "err", err)
	}
	cancel()
	// 4. The upstreams flush what is in flight (or release it).
	d.stopUpstreams(left())
	// 5. Local sinks deliver what they hold, within the timeout.
	if !d.sinksRun.stop(left()) {
		d.log.Error("alert sinks did not stop in time")
	}
	d.stopHistory(left())
	err := d.buf.Close()
	httpRun.stop(left())
	d.log.Info("ferry stopped")
	return errors.Join(fatal, err)
}

// healthy is what the systemd watchdog checks: the pipeline makes
// progress (a hung buffer or rule engine leaves scans waiting).
func (d *Gateway) healthy() error {
	return d.pipe.Err()
}
