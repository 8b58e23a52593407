package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"reflect"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
	"github.com/ferry-edge/ferry/drivers/modbus"
	"github.com/ferry-edge/ferry/drivers/mqtt"
	"github.com/ferry-edge/ferry/drivers/opcua"
	"github.com/ferry-edge/ferry/internal/alertapi"
	"github.com/ferry-edge/ferry/internal/config"
	systemd "github.com/ferry-edge/ferry/internal/daemon"
	"github.com/ferry-edge/ferry/internal/devstat"
	"github.com/ferry-edge/ferry/internal/httpapi"
	"github.com/ferry-edge/ferry/internal/sinks"
	"github.com/ferry-edge/ferry/rules"
	"github.com/ferry-edge/ferry/uplink"
)

// pipelineSize is how many scans may wait between the drivers and the
// buffer's own queue.
const pipelineSize = 4096

type daemonOptions struct {
	Logger *slog.Logger
	// Level is the logger's level; a reload sets it from log.level.
	Level           *slog.LevelVar
	Version, Commit string
	// ShutdownTimeout bounds each shutdown stage that waits on the network
	// (the uplink's flush, the alert sinks).
	ShutdownTimeout time.Duration
}

// daemon is a running gateway: every part, wired. It is the only place
// that knows all of them. Reload swaps what changed and keeps the rest.
type daemon struct {
	opts daemonOptions
	log  *slog.Logger
	reg  *prometheus.Registry
	svc  *systemd.Metrics

	devices *devstat.Metrics
	modbusM *modbus.Metrics
	opcuaM  *opcua.Metrics
	mqttM   *mqtt.Metrics

	buf    *buffer.Buffer
	engine *rules.Engine
	pipe   *pipeline
	http   *httpapi.Server

	sinks    atomic.Pointer[sinks.Sinks]
	alertAPI atomic.Pointer[http.Handler]
	con      consoleWiring // the web console; see console.go
	// early holds the buffer's own alerts raised before the sinks exist
	// (a damaged file quarantined by Open); setSinks delivers them.
	earlyMu sync.Mutex
	early   []ferry.Alert

	// What the HTTP handlers and readiness checks read: published by Run
	// and Reload, read without d.mu, so that a reload or a shutdown that
	// waits for a driver to stop never holds up /readyz, /metrics or the
	// API.
	curCfg     atomic.Pointer[config.Config]
	curUp      atomic.Pointer[uplink.Uplink]
	curDrivers atomic.Pointer[[]ferry.Driver]

	// mu serialises Run's start and shutdown with Reload, and guards what
	// a reload changes.
	mu       sync.Mutex
	cfg      *config.Config
	groups   map[string]*group
	sinksRun *runner
	up       *uplink.Uplink
	upRun    *runner
	// runCtx is the parent of the drivers, the sinks and the uplink: set
	// by Run once they start, nil again when its shutdown begins (a
	// reload then does nothing).
	runCtx context.Context
}

// group is one running Driver: the devices that share a link (Modbus), a
// connection (MQTT) or a session (OPC UA).
type group struct {
	key  string
	spec groupSpec
	drv  ferry.Driver
	run  *runner
}

// groupSpec is the configuration of a group; a reload restarts the group
// when it changes.
type groupSpec struct {
	protocol string
	modbus   []modbus.Device
	opcua    []opcua.Device
	mqtt     []mqtt.Device
}

func newDaemon(cfg *config.Config, opts daemonOptions) (*daemon, error) {
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 20 * time.Second
	}
	d := &daemon{opts: opts, log: opts.Logger, cfg: cfg, reg: prometheus.NewRegistry(), groups: map[string]*group{}}
	if err := systemd.RegisterRuntime(d.reg); err != nil {
		return nil, err
	}
	d.svc = systemd.NewMetrics(d.reg, opts.Version, opts.Commit)
	d.devices = devstat.NewMetrics(d.reg)
	d.modbusM = modbus.NewMetrics(d.reg)
	d.opcuaM = opcua.NewMetrics(d.reg)
	d.mqttM = mqtt.NewMetrics(d.reg)

	buf, err := buffer.Open(cfg.DataDir, cfg.Buffer, buffer.Options{
		Gateway:       cfg.Gateway.ID,
		ConfigVersion: cfg.Version,
		Logger:        d.log.With("part", "buffer"),
		Registerer:    d.reg,
		Alert:         d.sendLocal,
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
	d.pipe = newPipeline(pipelineSize, engine.Process, buf.AppendScan, d.reg)

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
		d.groups[key] = &group{key: key, spec: spec, drv: drv}
	}
	d.publishDrivers()
	if cfg.Uplink.NATS != nil {
		if d.up, err = d.newUplink(cfg); err != nil {
			buf.Close()
			return nil, err
		}
		d.curUp.Store(d.up)
	}
	d.curCfg.Store(cfg)
	if !cfg.HTTP.Disabled() {
		srv, err := httpapi.New(cfg.HTTP, httpapi.Options{Logger: d.log.With("part", "http"), Gatherer: d.reg, Registerer: d.reg, Version: opts.Version})
		if err != nil {
			buf.Close()
			return nil, err
		}
		d.http = srv
		d.setupConsole()
		d.routes()
		// Bind now, last (nothing after it can fail and leave the socket
		// open): a port in use or a bad certificate stops the start with
		// a clear error instead of a half-running gateway.
		if err := srv.Listen(); err != nil {
			buf.Close()
			return nil, err
		}
	}
	return d, nil
}

// alert is the rule engine's Emit: every transition goes to the buffer's
// alerts lane (upstream, ahead of telemetry) and to the local sinks.
func (d *daemon) alert(a ferry.Alert) {
	d.buf.AppendAlert(a)
	d.sendLocal(a)
}

// sendLocal hands an alert to the local sinks (the buffer's own alerts come
// here directly: it has stored them already).
func (d *daemon) sendLocal(a ferry.Alert) {
	d.con.alert(a)
	if s := d.sinks.Load(); s != nil {
		s.Send(a)
		return
	}
	d.earlyMu.Lock()
	s := d.sinks.Load()
	if s == nil {
		d.early = append(d.early, a)
	}
	d.earlyMu.Unlock()
	if s != nil {
		s.Send(a)
	}
}

func (d *daemon) setSinks(cfg sinks.Config) error {
	s, err := d.buildSinks(cfg)
	if err != nil {
		return err
	}
	d.installSinks(s)
	return nil
}

// buildSinks builds the local alert sinks of cfg without starting them.
func (d *daemon) buildSinks(cfg sinks.Config) (*sinks.Sinks, error) {
	return sinks.New(cfg, sinks.Options{Logger: d.log.With("part", "alerts"), Registerer: d.reg, Gateway: d.cfg.Gateway.ID})
}

// installSinks makes s the sinks every alert goes to, and hands it the
// alerts raised before any sinks existed.
func (d *daemon) installSinks(s *sinks.Sinks) {
	// The MQTT sink's retained "active alerts" messages start from what
	// the engine restored from the store.
	s.Restore(d.engine.Active())
	h := alertapi.Handler(d.engine, s.Stream())
	d.alertAPI.Store(&h)
	d.earlyMu.Lock()
	d.sinks.Store(s)
	early := d.early
	d.early = nil
	d.earlyMu.Unlock()
	for _, a := range early {
		s.Send(a)
	}
}

func (d *daemon) newUplink(cfg *config.Config) (*uplink.Uplink, error) {
	up, err := uplink.New(*cfg.Uplink.NATS, d.buf, uplink.Options{
		Gateway:    cfg.Gateway.ID,
		Site:       cfg.Gateway.Site,
		Version:    d.opts.Version,
		Logger:     d.log.With("part", "uplink"),
		Registerer: d.reg,
	})
	if err != nil {
		return nil, err
	}
	up.SetCatalog(uplink.Catalog{ConfigVersion: cfg.Version, Points: cfg.Points})
	return up, nil
}

// groupSpecs groups the configured devices by the drivers' GroupKey.
func groupSpecs(cfg *config.Config) map[string]groupSpec {
	out := map[string]groupSpec{}
	for _, dev := range cfg.Modbus {
		k := groupKey("modbus", modbus.GroupKey(&dev))
		s := out[k]
		s.protocol = "modbus"
		s.modbus = append(s.modbus, dev)
		out[k] = s
	}
	for _, dev := range cfg.OPCUA {
		k := groupKey("opcua", opcua.GroupKey(&dev))
		s := out[k]
		s.protocol = "opcua"
		s.opcua = append(s.opcua, dev)
		out[k] = s
	}
	for _, dev := range cfg.MQTT {
		k := groupKey("mqtt", mqtt.GroupKey(&dev))
		s := out[k]
		s.protocol = "mqtt"
		s.mqtt = append(s.mqtt, dev)
		out[k] = s
	}
	return out
}

// groupKey prefixes a driver's group key with its protocol, unless the
// driver already did ("mqtt tcp://…").
func groupKey(protocol, key string) string {
	if strings.HasPrefix(key, protocol+" ") {
		return key
	}
	return protocol + " " + key
}

func (d *daemon) newDriver(key string, spec groupSpec) (ferry.Driver, error) {
	return newGroupDriver(d.cfg, key, spec, driverDeps{
		log: d.log.With("driver", spec.protocol), devices: d.devices,
		modbus: d.modbusM, opcua: d.opcuaM, mqtt: d.mqttM,
	})
}

// driverDeps is what a driver shares with the rest of the daemon; the zero
// value builds a driver for checking only (ferry validate).
type driverDeps struct {
	log     *slog.Logger
	devices *devstat.Metrics
	modbus  *modbus.Metrics
	opcua   *opcua.Metrics
	mqtt    *mqtt.Metrics
}

// newGroupDriver builds the Driver of one device group: the explicit
// switch over protocols (no registry).
func newGroupDriver(cfg *config.Config, key string, spec groupSpec, deps driverDeps) (ferry.Driver, error) {
	switch spec.protocol {
	case "modbus":
		return modbus.New(spec.modbus, modbus.Options{Logger: deps.log, Metrics: deps.modbus, Devices: deps.devices})
	case "opcua":
		return opcua.New(spec.opcua, opcua.Options{Logger: deps.log, Metrics: deps.opcua, Devices: deps.devices,
			DataDir: cfg.DataDir, Gateway: cfg.Gateway.ID})
	case "mqtt":
		return mqtt.New(spec.mqtt, mqtt.Options{Logger: deps.log, Metrics: deps.mqtt, Devices: deps.devices, Gateway: cfg.Gateway.ID})
	}
	return nil, fmt.Errorf("group %s: unknown protocol %q", key, spec.protocol)
}

// Run starts every part, serves until ctx ends, then shuts down in
// pipeline order: drivers, pipeline (rules see the last scans), buffer
// commit, uplink flush, sinks, buffer close, HTTP. The shutdown waits at
// most opts.ShutdownTimeout in all for the parts that can hang (drivers,
// the uplink's flush, the sinks); the buffer is always committed and
// closed.
func (d *daemon) Run(ctx context.Context) error {
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

	d.mu.Lock()
	cfg := d.cfg
	d.sinksRun = start(partsCtx, d.sinks.Load().Run)
	if d.up != nil {
		d.upRun = start(partsCtx, d.up.Run)
	}
	for _, g := range d.groups {
		d.startGroup(partsCtx, g)
	}
	d.runCtx = partsCtx
	d.mu.Unlock()

	d.svc.ConfigLoaded(cfg.Version, time.Now())
	systemd.Ready()
	systemd.Status("running: " + cfg.Summary())
	d.log.Info("ferry running", "version", d.opts.Version, "gateway", cfg.Gateway.ID, "config", cfg.Summary())
	// Loading a large device map allocates far more than the running
	// gateway keeps; hand that back to the OS now rather than at the
	// scavenger's pace (RSS is what a gateway's operator watches).
	debug.FreeOSMemory()
	wdCtx, stopWD := context.WithCancel(partsCtx)
	wdDone := start(wdCtx, func(ctx context.Context) error { return systemd.Watchdog(ctx, d.healthy, d.log) })

	var fatal error
	select {
	case <-ctx.Done():
	case err := <-httpRun.doneChan():
		// The listener failed (port taken): not a gateway to keep running.
		fatal = err
		httpRun = nil
	}

	systemd.Stopping()
	stopWD()
	wdDone.wait()
	deadline := time.Now().Add(d.opts.ShutdownTimeout)
	// left is the time the shutdown may still wait; a stage that finds it
	// spent still gets a moment, so that a part with nothing to do is not
	// reported as hanging.
	left := func() time.Duration { return max(time.Until(deadline), 100*time.Millisecond) }

	d.mu.Lock()
	defer d.mu.Unlock()
	d.runCtx = nil // a reload from now on does nothing
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
	// 4. The uplink flushes what is in flight (or releases it).
	if !d.upRun.stop(left()) {
		d.log.Error("uplink did not stop in time; its records in flight are sent again at the next start")
	}
	// 5. Local sinks deliver what they hold, within the timeout.
	if !d.sinksRun.stop(left()) {
		d.log.Error("alert sinks did not stop in time")
	}
	err := d.buf.Close()
	httpRun.stop(left())
	d.log.Info("ferry stopped")
	return errors.Join(fatal, err)
}

func (d *daemon) startGroup(ctx context.Context, g *group) {
	log := d.log.With("group", g.key)
	g.run = start(ctx, func(ctx context.Context) error {
		err := g.drv.Run(ctx, d.pipe.Emit)
		if err != nil && ctx.Err() == nil {
			// Run returns an error only when the driver cannot run at
			// all; the other groups carry on.
			log.Error("driver stopped", "err", err)
		}
		return err
	})
}

func (d *daemon) stopGroup(g *group, timeout time.Duration) {
	if g.run == nil {
		return
	}
	if !g.run.stop(timeout) {
		d.log.Error("driver did not stop in time", "group", g.key, "timeout", timeout)
	}
}

// healthy is what the systemd watchdog checks: the pipeline makes
// progress (a hung buffer or rule engine leaves scans waiting).
func (d *daemon) healthy() error {
	return d.pipe.Err()
}

// Reload loads the configuration at path again. When it is not valid the
// running one stays and the errors are logged. Otherwise only what changed
// is restarted: device groups whose devices changed, the uplink when its
// section changed, the sinks when theirs did; rules are swapped keeping the
// state of unchanged rules. The buffer stays open throughout, so nothing
// accepted is lost. Reload does nothing before Run has started every part
// or once its shutdown has begun.
func (d *daemon) Reload(path string) {
	systemd.Reloading()
	defer systemd.Ready()
	d.log.Info("reloading", "file", path)
	cfg, err := config.Load(path)
	if err != nil {
		d.log.Error("reload refused, the running configuration stays", "file", path, "errors", strings.ReplaceAll(err.Error(), "\n", "; "))
		d.svc.ReloadFailed()
		d.con.reloaded(nil, err)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.runCtx == nil {
		d.log.Warn("reload ignored: ferry is not running (starting or stopping)")
		return
	}
	old := d.cfg
	refuse := func(err error) {
		d.log.Error("reload refused, the running configuration stays", "file", path, "errors", err)
		d.svc.ReloadFailed()
		d.con.reloaded(nil, err)
	}
	if fields := restartOnly(old, cfg); len(fields) > 0 {
		d.log.Warn("these settings take effect at the next restart", "fields", strings.Join(fields, ", "))
		keepRunning(old, cfg)
	}
	// Build every part the new configuration changes before touching the
	// running ones (constructors validate and do no I/O): one that cannot
	// be built refuses the whole reload, instead of leaving the gateway
	// half changed, or without an uplink.
	var newSinks *sinks.Sinks
	if !reflect.DeepEqual(old.Alerts, cfg.Alerts) {
		if newSinks, err = d.buildSinks(cfg.Alerts); err != nil {
			refuse(fmt.Errorf("alerts: %w", err))
			return
		}
	}
	upChanged := !reflect.DeepEqual(old.Uplink, cfg.Uplink)
	var newUp *uplink.Uplink
	if upChanged && cfg.Uplink.NATS != nil {
		if newUp, err = d.newUplink(cfg); err != nil {
			refuse(fmt.Errorf("uplink: %w", err))
			return
		}
	}
	built, err := d.buildChangedGroups(cfg)
	if err != nil {
		refuse(err)
		return
	}
	if err := d.engine.Update(cfg.Rules); err != nil {
		refuse(err)
		return
	}
	if lv, err := systemd.ParseLevel(cfg.Log.Level); err == nil && d.opts.Level != nil {
		d.opts.Level.Set(lv)
	}
	t := d.opts.ShutdownTimeout
	if newSinks != nil {
		prevRun := d.sinksRun
		d.installSinks(newSinks)
		d.sinksRun = start(d.runCtx, newSinks.Run)
		prevRun.stop(t)
		d.log.Info("alert sinks restarted")
	}
	d.buf.SetConfigVersion(cfg.Version)
	d.cfg = cfg
	d.curCfg.Store(cfg)
	d.syncGroups(old, cfg, built, t)
	if upChanged {
		if d.upRun != nil {
			d.upRun.stop(t)
			d.up, d.upRun = nil, nil
			d.curUp.Store(nil)
		}
		if newUp != nil {
			d.up, d.upRun = newUp, start(d.runCtx, newUp.Run)
			d.curUp.Store(newUp)
			d.log.Info("uplink restarted")
		}
	} else if d.up != nil {
		d.up.SetCatalog(uplink.Catalog{ConfigVersion: cfg.Version, Points: cfg.Points})
	}
	d.svc.Reloaded(cfg.Version, time.Now())
	systemd.Status("running: " + cfg.Summary())
	d.con.reloaded(cfg, nil)
	debug.FreeOSMemory()
	d.log.Info("configuration reloaded", "version", cfg.Version, "config", cfg.Summary())
}

// buildChangedGroups builds the drivers of the groups that are new or
// changed in cfg, without starting them.
func (d *daemon) buildChangedGroups(cfg *config.Config) (map[string]ferry.Driver, error) {
	built := map[string]ferry.Driver{}
	for key, spec := range groupSpecs(cfg) {
		if g, ok := d.groups[key]; ok && reflect.DeepEqual(spec, g.spec) {
			continue
		}
		drv, err := d.newDriver(key, spec)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		built[key] = drv
	}
	return built, nil
}

// syncGroups stops the groups that are gone or changed and starts the new
// and changed ones (built by buildChangedGroups); unchanged groups keep running (and connected). The
// series of devices that are gone are removed from /metrics.
func (d *daemon) syncGroups(old, cfg *config.Config, built map[string]ferry.Driver, timeout time.Duration) {
	specs := groupSpecs(cfg)
	var stopped, started []string
	for key, g := range d.groups {
		if spec, ok := specs[key]; ok && reflect.DeepEqual(spec, g.spec) {
			continue
		}
		d.stopGroup(g, timeout)
		// A link that is gone takes its Modbus series with it (a changed
		// link keeps them: its new driver goes on counting in them).
		if md, ok := g.drv.(*modbus.Driver); ok {
			if _, still := specs[key]; !still {
				md.Forget()
			}
		}
		delete(d.groups, key)
		stopped = append(stopped, key)
	}
	// Before the new drivers create their series: a device that moved to
	// another group keeps its name and gets them back.
	d.forgetRemoved(old, cfg)
	for key, spec := range specs {
		if _, ok := d.groups[key]; ok {
			continue
		}
		drv := built[key]
		g := &group{key: key, spec: spec, drv: drv}
		d.groups[key] = g
		d.startGroup(d.runCtx, g)
		started = append(started, key)
	}
	d.publishDrivers()
	if len(stopped)+len(started) > 0 {
		sort.Strings(stopped)
		sort.Strings(started)
		d.log.Info("device groups changed", "stopped", stopped, "started", started)
	}
}

// forgetRemoved removes the device series of the devices old has and cfg
// has not, so that a decommissioned PLC does not stay on /metrics (and in
// a FerryDeviceDown alert) forever.
func (d *daemon) forgetRemoved(old, cfg *config.Config) {
	now := map[string]bool{}
	for _, dev := range cfg.Devices {
		now[dev.Name] = true
	}
	for _, dev := range old.Devices {
		if !now[dev.Name] {
			d.devices.Forget(dev.Protocol, dev.Name)
			if dev.Protocol == "opcua" {
				d.opcuaM.Forget(dev.Name)
			}
		}
	}
}

// publishDrivers publishes the running drivers for deviceStatus. Call it
// with d.mu held after d.groups changed.
func (d *daemon) publishDrivers() {
	keys := make([]string, 0, len(d.groups))
	for k := range d.groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	drivers := make([]ferry.Driver, 0, len(keys))
	for _, k := range keys {
		drivers = append(drivers, d.groups[k].drv)
	}
	d.curDrivers.Store(&drivers)
}

// keepRunning sets the settings of cfg that cannot change while running
// to those of old, so that cfg says what runs: the uplink, the sinks and
// the drivers keep the gateway id and site the buffer's record ids carry.
func keepRunning(old, cfg *config.Config) {
	cfg.Gateway = old.Gateway
	cfg.DataDir = old.DataDir
	cfg.Log.Format = old.Log.Format
	cfg.Buffer = old.Buffer
	cfg.HTTP = old.HTTP
}

// restartOnly lists the settings that differ and cannot change while
// running.
func restartOnly(a, b *config.Config) []string {
	var out []string
	if a.Gateway != b.Gateway {
		out = append(out, "gateway")
	}
	if a.DataDir != b.DataDir {
		out = append(out, "data_dir")
	}
	if a.Log.Format != b.Log.Format {
		out = append(out, "log.format")
	}
	if !reflect.DeepEqual(a.Buffer, b.Buffer) {
		out = append(out, "buffer")
	}
	if !reflect.DeepEqual(a.HTTP, b.HTTP) {
		out = append(out, "http")
	}
	return out
}

// deviceStatus lists every device's status, sorted by name.
func (d *daemon) deviceStatus() []ferry.DeviceStatus {
	var out []ferry.DeviceStatus
	if drivers := d.curDrivers.Load(); drivers != nil {
		for _, drv := range *drivers {
			if r, ok := drv.(ferry.StatusReporter); ok {
				out = append(out, r.DeviceStatus()...)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}

// uplinkErr is the uplink's readiness check.
func (d *daemon) uplinkErr() error {
	up := d.curUp.Load()
	if up == nil {
		if d.curCfg.Load().Uplink.NATS != nil {
			return errors.New("not running (see the log: the uplink could not be started)")
		}
		return nil
	}
	return up.Err()
}

// routes mounts the API on the HTTP listener.
func (d *daemon) routes() {
	d.http.AddCheck("pipeline", d.pipe.Err)
	d.http.AddCheck("buffer", d.buf.Err)
	d.http.AddCheck("uplink", d.uplinkErr)
	alerts := d.mountConsole(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*d.alertAPI.Load()).ServeHTTP(w, r)
	}))
	d.http.Handle("/api/alerts", alerts)
	d.http.Handle("/api/alerts/", alerts)
	// Go's profiles, for a gateway that uses more memory or CPU than it
	// should (go tool pprof http://127.0.0.1:9440/debug/pprof/heap). Same
	// listener, same authentication as the rest.
	d.http.Handle("/debug/pprof/", http.HandlerFunc(pprof.Index))
	d.http.Handle("/debug/pprof/cmdline", http.HandlerFunc(pprof.Cmdline))
	d.http.Handle("/debug/pprof/profile", http.HandlerFunc(pprof.Profile))
	d.http.Handle("/debug/pprof/symbol", http.HandlerFunc(pprof.Symbol))
	d.http.Handle("/debug/pprof/trace", http.HandlerFunc(pprof.Trace))
	d.http.Handle("GET /api/status", jsonHandler(func() any {
		cfg := d.curCfg.Load()
		st := struct {
			Version       string       `json:"version"`
			Gateway       string       `json:"gateway"`
			Site          string       `json:"site"`
			ConfigFile    string       `json:"config_file"`
			ConfigVersion string       `json:"config_version"`
			Buffer        buffer.Stats `json:"buffer"`
			Uplink        string       `json:"uplink"`
		}{d.opts.Version, cfg.Gateway.ID, cfg.Gateway.Site, cfg.Path, cfg.Version, d.buf.Stats(), "connected"}
		if cfg.Uplink.NATS == nil {
			st.Uplink = "not configured"
		} else if err := d.uplinkErr(); err != nil {
			st.Uplink = err.Error()
		}
		return st
	}))
}

func jsonHandler(f func() any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(f())
	})
}

// runner runs one part's Run on its own goroutine and can stop it.
type runner struct {
	cancel context.CancelFunc
	done   chan error
	err    error
	once   sync.Once
}

func start(ctx context.Context, run func(context.Context) error) *runner {
	ctx, cancel := context.WithCancel(ctx)
	r := &runner{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx) }()
	return r
}

// doneChan is closed… or rather receives once when the part returns; nil
// for a nil runner, so that a select on it blocks.
func (r *runner) doneChan() <-chan error {
	if r == nil {
		return nil
	}
	return r.done
}

// stop cancels the part and waits up to timeout for it to return; it
// reports whether it did.
func (r *runner) stop(timeout time.Duration) bool {
	if r == nil {
		return true
	}
	r.cancel()
	ok := true
	r.once.Do(func() {
		select {
		case r.err = <-r.done:
		case <-time.After(timeout):
			ok = false
		}
	})
	return ok
}

func (r *runner) wait() {
	if r == nil {
		return
	}
	r.once.Do(func() { r.err = <-r.done })
}
