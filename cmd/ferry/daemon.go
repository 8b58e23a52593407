package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
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
	"github.com/ferry-edge/ferry/internal/devstat"
	"github.com/ferry-edge/ferry/internal/httpapi"
	"github.com/ferry-edge/ferry/internal/service"
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
	svc  *service.Metrics

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

	// early holds the buffer's own alerts raised before the sinks exist:
	// buffer_quarantined is raised inside buffer.Open. setSinks sends them.
	earlyMu sync.Mutex
	early   []ferry.Alert

	// mu guards what a reload changes.
	mu       sync.Mutex
	cfg      *config.Config
	groups   map[string]*group
	sinksRun *runner
	up       *uplink.Uplink
	upRun    *runner
	runCtx   context.Context // parent of the drivers and the uplink; set by Run
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
	if err := service.RegisterRuntime(d.reg); err != nil {
		return nil, err
	}
	d.svc = service.NewMetrics(d.reg, opts.Version, opts.Commit)
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
	if !cfg.HTTP.Disabled() {
		srv, err := httpapi.New(cfg.HTTP, httpapi.Options{Logger: d.log.With("part", "http"), Gatherer: d.reg, Registerer: d.reg, Version: opts.Version})
		if err != nil {
			buf.Close()
			return nil, err
		}
		// Bind now: a port in use or a bad certificate stops the start
		// with a clear error instead of a half-running gateway.
		if err := srv.Listen(); err != nil {
			buf.Close()
			return nil, fmt.Errorf("http: %w", err)
		}
		d.http = srv
		d.routes()
	}
	for key, spec := range groupSpecs(cfg) {
		drv, err := d.newDriver(key, spec)
		if err != nil {
			buf.Close()
			return nil, err
		}
		d.groups[key] = &group{key: key, spec: spec, drv: drv}
	}
	if cfg.Uplink.NATS != nil {
		if d.up, err = d.newUplink(cfg); err != nil {
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
	s, err := sinks.New(cfg, sinks.Options{Logger: d.log.With("part", "alerts"), Registerer: d.reg, Gateway: d.cfg.Gateway.ID})
	if err != nil {
		return err
	}
	// The MQTT sink's retained "active alerts" messages start from what
	// the engine restored from the store.
	s.Restore(d.engine.Active())
	h := alertapi.Handler(d.engine, s.Stream())
	d.earlyMu.Lock()
	d.sinks.Store(s)
	early := d.early
	d.early = nil
	d.earlyMu.Unlock()
	for _, a := range early {
		s.Send(a)
	}
	d.alertAPI.Store(&h)
	return nil
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
		k := "modbus " + modbus.GroupKey(&dev)
		s := out[k]
		s.protocol = "modbus"
		s.modbus = append(s.modbus, dev)
		out[k] = s
	}
	for _, dev := range cfg.OPCUA {
		k := "opcua " + opcua.GroupKey(&dev)
		s := out[k]
		s.protocol = "opcua"
		s.opcua = append(s.opcua, dev)
		out[k] = s
	}
	for _, dev := range cfg.MQTT {
		k := "mqtt " + mqtt.GroupKey(&dev)
		s := out[k]
		s.protocol = "mqtt"
		s.mqtt = append(s.mqtt, dev)
		out[k] = s
	}
	return out
}

func (d *daemon) newDriver(key string, spec groupSpec) (ferry.Driver, error) {
	log := d.log.With("driver", spec.protocol)
	switch spec.protocol {
	case "modbus":
		return modbus.New(spec.modbus, modbus.Options{Logger: log, Metrics: d.modbusM, Devices: d.devices})
	case "opcua":
		return opcua.New(spec.opcua, opcua.Options{Logger: log, Metrics: d.opcuaM, Devices: d.devices,
			DataDir: d.cfg.DataDir, Gateway: d.cfg.Gateway.ID})
	case "mqtt":
		return mqtt.New(spec.mqtt, mqtt.Options{Logger: log, Metrics: d.mqttM, Devices: d.devices, Gateway: d.cfg.Gateway.ID})
	}
	return nil, fmt.Errorf("group %s: unknown protocol %q", key, spec.protocol)
}

// Run starts every part, serves until ctx ends, then shuts down in
// pipeline order: drivers, pipeline (rules see the last scans), buffer
// commit, uplink flush, sinks, buffer close, HTTP.
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
	d.runCtx = partsCtx
	d.sinksRun = start(partsCtx, d.sinks.Load().Run)
	if d.up != nil {
		d.upRun = start(partsCtx, d.up.Run)
	}
	for _, g := range d.groups {
		d.startGroup(partsCtx, g)
	}
	d.mu.Unlock()

	service.Ready()
	service.Status("running: " + d.cfg.Summary())
	d.svc.ConfigLoaded(d.cfg.Version, time.Now())
	d.log.Info("ferry running", "version", d.opts.Version, "gateway", d.cfg.Gateway.ID, "config", d.cfg.Summary())
	wdCtx, stopWD := context.WithCancel(partsCtx)
	wdDone := start(wdCtx, func(ctx context.Context) error { return service.Watchdog(ctx, d.healthy, d.log) })

	var fatal error
	select {
	case <-ctx.Done():
	case err := <-httpRun.doneChan():
		// The listener failed (port taken): not a gateway to keep running.
		fatal = fmt.Errorf("http: %w", err)
		httpRun = nil
	}

	service.Stopping()
	stopWD()
	wdDone.wait()
	t := d.opts.ShutdownTimeout

	d.mu.Lock()
	defer d.mu.Unlock()
	// 1. Drivers stop emitting.
	var wg sync.WaitGroup
	for _, g := range d.groups {
		wg.Add(1)
		go func() { defer wg.Done(); d.stopGroup(g, t) }()
	}
	wg.Wait()
	// 2. The pipeline drains into the rules and the buffer.
	d.pipe.Close()
	<-pipeDone
	rulesRun.stop(t)
	// 3. The buffer commits what it holds, so every accepted scan is on
	// disk before the network parts get their bounded time.
	fctx, cancel := context.WithTimeout(context.Background(), t)
	if err := d.buf.Flush(fctx); err != nil {
		d.log.Error("buffer flush at shutdown", "err", err)
	}
	cancel()
	// 4. The uplink flushes what is in flight (or releases it).
	if d.upRun != nil {
		d.upRun.stop(t)
	}
	// 5. Local sinks deliver what they hold, within the timeout.
	if d.sinksRun != nil {
		d.sinksRun.stop(t)
	}
	err := d.buf.Close()
	if httpRun != nil {
		httpRun.stop(t)
	}
	if err != nil {
		d.log.Error("buffer close", "err", err)
	}
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
// progress and the rule engine's ticker is alive.
func (d *daemon) healthy() error {
	return d.pipe.Err()
}

// Reload loads the configuration at path again. When it is not valid the
// running one stays and the errors are logged. Otherwise only what changed
// is restarted: device groups whose devices changed, the uplink when its
// section changed, the sinks when theirs did; rules are swapped keeping the
// state of unchanged rules. The buffer stays open throughout, so nothing
// accepted is lost.
func (d *daemon) Reload(path string) {
	service.Reloading()
	defer service.Ready()
	d.log.Info("reloading", "file", path)
	cfg, err := config.Load(path)
	if err != nil {
		d.log.Error("reload refused, the running configuration stays", "file", path, "errors", strings.ReplaceAll(err.Error(), "\n", "; "))
		d.svc.ReloadFailed()
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.runCtx == nil || d.runCtx.Err() != nil {
		return
	}
	old := d.cfg
	if lv, err := service.ParseLevel(cfg.Log.Level); err == nil && d.opts.Level != nil {
		d.opts.Level.Set(lv)
	}
	if fields := restartOnly(old, cfg); len(fields) > 0 {
		d.log.Warn("these settings take effect at the next restart", "fields", strings.Join(fields, ", "))
	}
	if err := d.engine.Update(cfg.Rules); err != nil {
		d.log.Error("reload refused: rules", "err", err)
		d.svc.ReloadFailed()
		return
	}
	t := d.opts.ShutdownTimeout
	if !reflect.DeepEqual(old.Alerts, cfg.Alerts) {
		prev, prevRun := d.sinks.Load(), d.sinksRun
		if err := d.setSinks(cfg.Alerts); err != nil {
			d.log.Error("alert sinks not changed", "err", err)
		} else {
			d.sinksRun = start(d.runCtx, d.sinks.Load().Run)
			_ = prev
			prevRun.stop(t)
			d.log.Info("alert sinks restarted")
		}
	}
	d.buf.SetConfigVersion(cfg.Version)
	d.cfg = cfg
	d.syncGroups(cfg, t)
	if !reflect.DeepEqual(old.Uplink, cfg.Uplink) || old.Gateway != cfg.Gateway {
		if d.upRun != nil {
			d.upRun.stop(t)
			d.up, d.upRun = nil, nil
		}
		if cfg.Uplink.NATS != nil {
			up, err := d.newUplink(cfg)
			if err != nil {
				d.log.Error("uplink not started", "err", err)
			} else {
				d.up, d.upRun = up, start(d.runCtx, up.Run)
				d.log.Info("uplink restarted")
			}
		}
	} else if d.up != nil {
		d.up.SetCatalog(uplink.Catalog{ConfigVersion: cfg.Version, Points: cfg.Points})
	}
	d.svc.Reloaded(cfg.Version, time.Now())
	d.log.Info("configuration reloaded", "version", cfg.Version, "config", cfg.Summary())
}

// syncGroups stops the groups that are gone or changed and starts the new
// and changed ones; unchanged groups keep running (and connected).
func (d *daemon) syncGroups(cfg *config.Config, timeout time.Duration) {
	specs := groupSpecs(cfg)
	var stopped, started []string
	for key, g := range d.groups {
		if spec, ok := specs[key]; ok && reflect.DeepEqual(spec, g.spec) {
			continue
		}
		d.stopGroup(g, timeout)
		delete(d.groups, key)
		stopped = append(stopped, key)
	}
	for key, spec := range specs {
		if _, ok := d.groups[key]; ok {
			continue
		}
		drv, err := d.newDriver(key, spec)
		if err != nil {
			d.log.Error("group not started", "group", key, "err", err)
			continue
		}
		g := &group{key: key, spec: spec, drv: drv}
		d.groups[key] = g
		d.startGroup(d.runCtx, g)
		started = append(started, key)
	}
	if len(stopped)+len(started) > 0 {
		sort.Strings(stopped)
		sort.Strings(started)
		d.log.Info("device groups changed", "stopped", stopped, "started", started)
	}
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
	d.mu.Lock()
	var out []ferry.DeviceStatus
	for _, g := range d.groups {
		if r, ok := g.drv.(ferry.StatusReporter); ok {
			out = append(out, r.DeviceStatus()...)
		}
	}
	d.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}

func (d *daemon) uplinkErr() error {
	d.mu.Lock()
	up := d.up
	d.mu.Unlock()
	if up == nil {
		return nil
	}
	return up.Err()
}

// routes mounts the API on the HTTP listener.
func (d *daemon) routes() {
	d.http.AddCheck("pipeline", d.pipe.Err)
	d.http.AddCheck("buffer", d.buf.Err)
	d.http.AddCheck("uplink", d.uplinkErr)
	alerts := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*d.alertAPI.Load()).ServeHTTP(w, r)
	})
	d.http.Handle("/api/alerts", alerts)
	d.http.Handle("/api/alerts/", alerts)
	d.http.Handle("GET /api/devices", jsonHandler(func() any { return d.deviceStatus() }))
	d.http.Handle("GET /api/status", jsonHandler(func() any {
		d.mu.Lock()
		cfg := d.cfg
		d.mu.Unlock()
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
