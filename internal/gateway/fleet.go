package gateway

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/fleet"
	"github.com/ferry-edge/ferry/internal/web"
	"github.com/ferry-edge/ferry/uplink"
)

// fleetWiring is the gateway's side of fleet mode (internal/fleet): the
// local file's configuration, which every bundle is loaded with, and the
// agent.
type fleetWiring struct {
	local atomic.Pointer[config.Config]
	store *fleet.Store
	agent *fleet.Agent
}

// fleetBoot returns what a gateway in fleet mode starts on: its
// last-known-good bundle with the local file cfg, or cfg itself when there
// is none or it no longer loads (a gateway never boots on nothing; it
// needs no network for this). It builds the agent.
func (d *Gateway) fleetBoot(cfg *config.Config) (*config.Config, error) {
	store, err := fleet.OpenStore(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	d.fleet.store = store
	d.fleet.local.Store(cfg)
	local := cfg
	st, err := store.State()
	if err != nil {
		d.log.Error("fleet: state unreadable; starting from none", "err", err)
	}
	booted := cfg
	if st.LKG != nil {
		if booted, err = config.LoadFleet(store.Dir(st.LKG.Hash), cfg, Protocols); err != nil {
			// The agent then knows what runs: the local file, and it
			// rolls back to it.
			d.log.Error("fleet: the last-known-good bundle does not load with the local file; running the local file", "err", reloadError(err))
			booted, st.LKG = cfg, nil
		} else {
			d.log.Info("fleet: running the last-known-good bundle", "revision", st.LKG.Revision, "site_revision", st.LKG.SiteRevision, "version", booted.Version)
			// The local file is kept for its local-only settings; no
			// driver is built from its devices.
			cfg.DropPointSpecs()
		}
	}
	agent, err := fleet.New(*cfg.Fleet, fleet.Options{
		Site: cfg.Gateway.Site, Gateway: cfg.Gateway.ID,
		Version: d.opts.Version, Commit: d.opts.Commit,
		Connect: func() (*nats.Conn, error) {
			return uplink.Connect(*local.Uplink.NATS, "ferry fleet "+local.Gateway.Site+"."+local.Gateway.ID,
				nats.CustomInboxPrefix(fleet.InboxPrefix(local.Gateway.Site, local.Gateway.ID)))
		},
		Store:  store,
		State:  &st,
		Hooks:  fleet.Hooks{Prepare: d.fleetPrepare, Gate: d.fleetGate, Health: d.fleetHealth},
		Logger: d.log.With("part", "fleet"),
	})
	if err != nil {
		return nil, err
	}
	d.fleet.agent = agent
	return booted, nil
}

// lastKnownGood loads the last-known-good bundle with the local file
// local; it returns local when there is none.
func (d *Gateway) lastKnownGood(local *config.Config) (*config.Config, error) {
	st, err := d.fleet.store.State()
	if err != nil || st.LKG == nil {
		return local, err
	}
	return config.LoadFleet(d.fleet.store.Dir(st.LKG.Hash), local, Protocols)
}

// loadConfig loads the file at path for a reload: the file itself, or in
// fleet mode the last-known-good bundle with it as the local file.
func (d *Gateway) loadConfig(path string) (*config.Config, error) {
	cfg, err := LoadConfig(path)
	if err != nil || cfg.Fleet == nil || d.fleet.store == nil {
		return cfg, err
	}
	merged, err := d.lastKnownGood(cfg)
	if err != nil {
		return nil, fmt.Errorf("fleet: last-known-good bundle with %s: %w", path, err)
	}
	if merged != cfg {
		cfg.DropPointSpecs() // kept for its local-only settings, as in fleetBoot
	}
	d.fleet.local.Store(cfg)
	return merged, nil
}

// startFleet starts the agent, if any.
func (d *Gateway) startFleet(ctx context.Context) *runner {
	if d.fleet.agent == nil {
		return nil
	}
	return start(ctx, d.fleet.agent.Run)
}

// fleetPrepare loads the bundle staged in dir with the local file ("":
// the local file alone, read again) and returns its apply.
func (d *Gateway) fleetPrepare(dir string) (func() error, error) {
	local := d.fleet.local.Load()
	var cfg *config.Config
	var err error
	if dir == "" {
		cfg, err = LoadConfig(local.Path)
	} else {
		cfg, err = config.LoadFleet(dir, local, Protocols)
	}
	if err != nil {
		return nil, err
	}
	return func() error { return d.ApplyConfig(cfg) }, nil
}

// fleetGate notes the devices connected now; the check it returns passes
// when each of them that is still configured is connected again and the
// uplink, when one is configured, is connected.
func (d *Gateway) fleetGate() func() error {
	before := map[string]bool{}
	for _, s := range d.deviceStatus() {
		if s.Connected {
			before[s.Device] = true
		}
	}
	return func() error {
		cfg := d.curCfg.Load()
		now := map[string]string{}
		for _, s := range d.deviceStatus() {
			if s.Connected {
				now[s.Device] = ""
			} else {
				now[s.Device] = s.LastError
				if now[s.Device] == "" {
					now[s.Device] = "no answer yet"
				}
			}
		}
		var bad []string
		for _, dev := range cfg.Devices {
			if !before[dev.Name] {
				continue
			}
			why, ok := now[dev.Name]
			if !ok {
				why = "not running"
			}
			if why != "" {
				bad = append(bad, fmt.Sprintf("device %s: %s", dev.Name, why))
			}
		}
		sort.Strings(bad)
		if cfg.Uplink.NATS != nil {
			if err := d.uplinkErr(); err != nil {
				bad = append(bad, "uplink: "+err.Error())
			}
		}
		if len(bad) > 0 {
			return errors.New(strings.Join(bad, "; "))
		}
		return nil
	}
}

// fleetHealth is the gateway's part of its status key.
func (d *Gateway) fleetHealth() fleet.Health {
	cfg := d.curCfg.Load()
	h := fleet.Health{ConfigVersion: cfg.Version, Devices: map[string]int{}}
	seen := map[string]bool{}
	for _, s := range d.deviceStatus() {
		seen[s.Device] = true
		switch {
		case s.Connected:
			h.Devices["connected"]++
		case s.LastError != "":
			h.Devices["lost"]++
		default:
			h.Devices["connecting"]++
		}
	}
	for _, dev := range cfg.Devices {
		if !seen[dev.Name] {
			h.Devices["not_running"]++
		}
	}
	var oldest time.Time
	for _, l := range d.buf.Stats().Lanes {
		h.Backlog += int64(l.Records)
		if !l.Oldest.IsZero() && (oldest.IsZero() || l.Oldest.Before(oldest)) {
			oldest = l.Oldest
		}
	}
	if !oldest.IsZero() {
		h.OldestAge = time.Since(oldest).Seconds()
	}
	h.Uplink.Configured = cfg.Uplink.NATS != nil
	if h.Uplink.Configured {
		err := d.uplinkErr()
		h.Uplink.Connected = err == nil
		if err != nil {
			h.Uplink.Error = err.Error()
		}
		h.Uplink.Lag = h.OldestAge
	}
	h.AlertsActive = len(d.engine.Active())
	return h
}

// webFleet is fleet mode for the console and the API; nil when off.
func (d *Gateway) webFleet() *web.FleetStatus {
	a := d.fleet.agent
	if a == nil {
		return nil
	}
	last, running := a.Result()
	f := &web.FleetStatus{Key: a.Key(), Last: last.State, LastReason: last.Reason, LastTime: last.Time}
	if running != nil {
		f.Revision, f.SiteRevision, f.Hash = running.Revision, running.SiteRevision, running.Hash
	}
	return f
}
