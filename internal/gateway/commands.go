package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/command"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/uplink"
)

// This file wires the command path (internal/command, issue 19): which
// driver holds a device, the latest value of every point an interlock
// reads, audit events into the buffer's alerts lane and the local sinks,
// and the NATS request subject. The HTTP endpoint is web.Options.Command.

// commandWorkers bounds the NATS requests handled at once (each may wait
// for a device's write and read back).
const commandWorkers = 16

// commandWiring is the gateway's part of the command path.
type commandWiring struct {
	svc *command.Service
	// writers maps a device to the driver that holds it; published with
	// the running drivers (publishDeviceDrivers).
	writers atomic.Pointer[map[string]ferry.Driver]
	vals    lastValues
	// changed tells runCommands that a reload changed its NATS
	// connection settings or its subject (prepareCommands).
	changed chan struct{}
}

// newCommands builds the command service and loads its stored ids (a
// command cut short by a crash is answered "unknown" now). It does no
// network I/O.
func (d *Gateway) newCommands(cfg *config.Config) error {
	svc, err := command.New(command.Options{
		Logger:     d.log.With("part", "commands"),
		Store:      d.buf,
		Gateway:    cfg.Gateway.ID,
		Config:     func() command.Config { return d.curCfg.Load().Commands },
		Point:      d.pointInfo,
		Method:     func(device, name string) bool { return deviceMethod(d.curCfg.Load(), device, name) },
		Writer:     d.writerFor,
		Value:      d.cmds.vals.get,
		Audit:      d.sendLocal,
		Registerer: d.reg,
	})
	if err != nil {
		return err
	}
	if err := svc.Recover(); err != nil {
		return fmt.Errorf("commands: %w", err)
	}
	d.cmds.svc = svc
	d.cmds.changed = make(chan struct{}, 1)
	return nil
}

// observeForCommands lets the pipeline keep the latest value of each
// point an interlock reads: one map look-up per scan while any interlock
// exists. Call it after newWeb (which sets the console's observer).
func (d *Gateway) observeForCommands() {
	prev := d.pipe.observe
	d.pipe.observe = func(s *ferry.Scan) {
		if prev != nil {
			prev(s)
		}
		d.cmds.vals.observe(d.curCfg.Load(), s)
	}
}

// pointInfo finds a configured point (with its write: block).
func (d *Gateway) pointInfo(device, point string) (ferry.PointInfo, bool) {
	cfg := d.curCfg.Load()
	if cfg == nil {
		return ferry.PointInfo{}, false
	}
	for _, p := range cfg.Points {
		if p.Device == device && p.Point == point {
			return p, true
		}
	}
	return ferry.PointInfo{}, false
}

// writerFor returns the driver that holds device, when it can write.
func (d *Gateway) writerFor(device string) (ferry.Writer, error) {
	m := d.cmds.writers.Load()
	if m == nil {
		return nil, fmt.Errorf("device %q: %w", device, ferry.ErrUnknownDevice)
	}
	drv, ok := (*m)[device]
	if !ok {
		return nil, fmt.Errorf("device %q: %w", device, ferry.ErrUnknownDevice)
	}
	w, ok := drv.(ferry.Writer)
	if !ok {
		return nil, fmt.Errorf("the %T driver of device %q cannot write", drv, device)
	}
	return w, nil
}

// publishDeviceDrivers publishes which driver holds each device. Call it
// with d.mu held after d.groups changed (publishDrivers does).
func (d *Gateway) publishDeviceDrivers() {
	m := map[string]ferry.Driver{}
	for _, g := range d.groups {
		for _, name := range g.devices {
			m[name] = g.drv
		}
	}
	d.cmds.writers.Store(&m)
}

// Command is the HTTP API's way in (web.Options.Command).
func (d *Gateway) command(ctx context.Context, body []byte, by string) ferry.CommandReply {
	return d.cmds.svc.Handle(ctx, body, command.ViaHTTP, by)
}

// runCommands serves the NATS command subject until ctx ends, and
// forgets old command ids. Without an uplink it only does the latter. A
// reload that changes the uplink's connection or the command subject
// ends the session: the next one connects with the new settings.
func (d *Gateway) runCommands(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { defer wg.Done(); _ = d.cmds.svc.Run(ctx) }()
	for ctx.Err() == nil {
		d.serveCommands(ctx, d.curCfg.Load())
	}
	return nil
}

// serveCommands is one session of runCommands, on cfg's connection and
// subject: it returns when ctx ends or a reload changed either, once the
// commands it took have been answered.
func (d *Gateway) serveCommands(ctx context.Context, cfg *config.Config) {
	wait := func() {
		select {
		case <-ctx.Done():
		case <-d.cmds.changed:
		}
	}
	nc0 := cfg.Uplink.Control() // the first NATS upstream
	if nc0 == nil {
		wait()
		return
	}
	subject := cfg.Commands.SubjectFor(cfg.Gateway.Site, cfg.Gateway.ID)
	log := d.log.With("part", "commands", "subject", subject)
	nc, err := uplink.Connect(*nc0, "ferry "+cfg.Gateway.ID+" commands", nats.RetryOnFailedConnect(true),
		nats.CustomInboxPrefix(uplink.InboxPrefix(cfg.Gateway.Site, cfg.Gateway.ID)))
	if err != nil {
		log.Error("commands: NATS connection", "err", err)
		wait()
		return
	}
	defer nc.Close()
	// Commands taken are answered on this connection before it closes.
	var inflight sync.WaitGroup
	defer inflight.Wait()
	sem := make(chan struct{}, commandWorkers)
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		if m.Reply == "" {
			log.Warn("command without a reply subject ignored")
			return
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			defer func() { <-sem }()
			reply := d.cmds.svc.Handle(ctx, m.Data, command.ViaNATS, "")
			b, _ := json.Marshal(reply)
			if err := m.Respond(b); err != nil {
				log.Warn("command reply not sent", "id", reply.ID, "status", reply.Status, "err", err)
			}
		}()
	})
	if err != nil {
		log.Error("commands: subscribe", "err", err)
		wait()
		return
	}
	log.Info("commands: listening", "enabled", cfg.Commands.Enabled)
	wait()
	// No new command after this; the ones taken finish (deferred waits).
	_ = sub.Unsubscribe()
}

// prepareCommands: the commit ends the command session when the reload
// changes its connection (the uplink's NATS settings) or its subject, so
// that the next session uses the new ones. Everything else of the command
// settings is read live.
func (d *Gateway) prepareCommands(old, cfg *config.Config) (func(), error) {
	if reflect.DeepEqual(old.Uplink.Control(), cfg.Uplink.Control()) &&
		old.Commands.SubjectFor(old.Gateway.Site, old.Gateway.ID) == cfg.Commands.SubjectFor(cfg.Gateway.Site, cfg.Gateway.ID) {
		return nil, nil
	}
	return func() {
		select {
		case d.cmds.changed <- struct{}{}:
		default: // one pending change is enough: the session reads the config anew
		}
	}, nil
}

// lastValues is the latest sample of each point an interlock reads.
type lastValues struct {
	mu sync.RWMutex
	// cfg is the configuration watch was built from.
	cfg   *config.Config
	watch map[string]map[string]bool // device → point → watched
	vals  map[string]ferry.Sample    // "device.point"
	// any is set while some point is watched: observe then looks.
	any atomic.Bool
}

// observe keeps the samples of s that an interlock reads.
func (lv *lastValues) observe(cfg *config.Config, s *ferry.Scan) {
	lv.mu.RLock()
	stale := lv.cfg != cfg
	lv.mu.RUnlock()
	if stale {
		lv.rebuild(cfg)
	}
	if !lv.any.Load() {
		return
	}
	lv.mu.RLock()
	pts := lv.watch[s.Device]
	lv.mu.RUnlock()
	if pts == nil {
		return
	}
	lv.mu.Lock()
	for i := range s.Samples {
		smp := &s.Samples[i]
		dev := smp.Device
		if dev == "" {
			dev = s.Device
		}
		if pts[smp.Point] {
			lv.vals[dev+"."+smp.Point] = ferry.Sample{Device: dev, Point: smp.Point, Value: smp.Value, Quality: smp.Quality, Time: smp.Time}
		}
	}
	lv.mu.Unlock()
}

// rebuild finds the points the interlocks of cfg read.
func (lv *lastValues) rebuild(cfg *config.Config) {
	watch := map[string]map[string]bool{}
	n := 0
	if cfg != nil {
		for _, p := range cfg.Points {
			if p.Write == nil || p.Write.Interlock == "" {
				continue
			}
			refs, err := command.ParseInterlock(p.Device, p.Write.Interlock, nil)
			if err != nil {
				continue // the loader refused it already
			}
			for _, r := range refs {
				if watch[r.Device] == nil {
					watch[r.Device] = map[string]bool{}
				}
				watch[r.Device][r.Point] = true
				n++
			}
		}
	}
	lv.mu.Lock()
	lv.cfg, lv.watch = cfg, watch
	if lv.vals == nil {
		lv.vals = map[string]ferry.Sample{}
	}
	for k := range lv.vals {
		dev, pt, _ := cutDot(k)
		if !watch[dev][pt] {
			delete(lv.vals, k)
		}
	}
	lv.mu.Unlock()
	lv.any.Store(n > 0)
}

// get is the command service's Value.
func (lv *lastValues) get(device, point string) (ferry.Sample, bool) {
	lv.mu.RLock()
	defer lv.mu.RUnlock()
	s, ok := lv.vals[device+"."+point]
	return s, ok
}

func cutDot(k string) (string, string, bool) {
	for i := 0; i < len(k); i++ {
		if k[i] == '.' {
			return k[:i], k[i+1:], true
		}
	}
	return k, "", false
}

// commandStopTimeout bounds the wait for the commands in flight at
// shutdown (each is bounded by commands.write_timeout).
func commandStopTimeout(cfg *config.Config) time.Duration {
	return cfg.Commands.WriteTimeout + 5*time.Second
}
