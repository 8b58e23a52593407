package gateway

import (
	"errors"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/web"
)

// webWiring is what the gateway keeps for its HTTP server (internal/web):
// the server (nil when the listener is off) and the facts its health page
// shows that no part owns.
type webWiring struct {
	// srv is set by New after the buffer is open, and read by alert from
	// the buffer's writer goroutine (its own alerts, raised as it opens):
	// an atomic pointer, so that an alert of Open does not race with New.
	srv     atomic.Pointer[web.Server]
	started time.Time
	loaded  atomic.Int64 // when the running configuration was loaded (Unix ns)
	reload  atomic.Pointer[web.Reload]
}

// newWeb builds the HTTP server of cfg from the gateway's parts and lets
// the pipeline feed its console. Call it after the pipeline, the rule
// engine and the sinks exist. It does no I/O.
func (d *Gateway) newWeb(cfg *config.Config) (*web.Server, error) {
	d.con.started = time.Now()
	d.con.loaded.Store(d.con.started.UnixNano())
	srv, err := web.New(web.Options{
		Logger:     d.log.With("part", "http"),
		Config:     cfg.HTTP,
		Gatherer:   d.reg,
		Registerer: d.reg,
		Version:    d.opts.Version,
		Commit:     d.opts.Commit,
		Gateway:    cfg.Gateway.ID,
		Catalog:    webCatalog(cfg),
		Devices:    d.deviceStatus,
		Alerts:     gatewayAlerts{engine: d.engine, m: d.alarms},
		Stream:     d.alertStream,
		Status:     d.webStatus,
		Durability: d.durability,
		Fleet:      d.webFleet,
		Command:    d.command,
		Historian:  d.historian(),
		Plan:       d.devicePlan,
		Checks: []web.Check{
			{Name: "pipeline", Err: d.pipe.Err},
			{Name: "buffer", Err: d.buf.Err},
			{Name: "uplink", Err: d.uplinkErr},
		},
	})
	if err != nil {
		return nil, err
	}
	d.con.srv.Store(srv)
	d.pipe.observe = srv.Observe
	return srv, nil
}

// alertStream is the alert sinks' SSE hub now: a reload that rebuilds the
// sinks swaps it (d.sinks is an atomic pointer), and the next client of
// /api/alerts/stream gets the new one.
func (d *Gateway) alertStream() web.AlertStream {
	if s := d.sinks.Load(); s != nil {
		if st := s.Stream(); st != nil {
			return st
		}
	}
	return nil
}

// alert records an alert transition in the console's history.
func (w *webWiring) alert(a ferry.Alert) {
	if srv := w.srv.Load(); srv != nil {
		srv.Alert(a)
	}
}

// reloaded records the result of a reload: err is nil when cfg was
// applied.
func (w *webWiring) reloaded(cfg *config.Config, err error) {
	now := time.Now()
	r := &web.Reload{Time: now, OK: err == nil}
	if err != nil {
		r.Error = reloadError(err)
	} else {
		w.loaded.Store(now.UnixNano())
		if srv := w.srv.Load(); srv != nil {
			srv.SetCatalog(webCatalog(cfg))
		}
	}
	w.reload.Store(r)
}

// webCatalog lists the configured devices and points.
func webCatalog(cfg *config.Config) web.Catalog {
	cat := web.Catalog{Points: cfg.Points}
	for _, dev := range cfg.Devices {
		cat.Devices = append(cat.Devices, web.DeviceInfo{Name: dev.Name, Protocol: dev.Protocol, Description: dev.Description})
	}
	return cat
}

// webStatus is the gateway's own part of /api/status and the health page
// (the server adds the version and commit). Like the other handlers it
// reads what Run and Reload published, not d.mu, which a reload holds
// while a device group stops.
func (d *Gateway) webStatus() web.Status {
	cfg := d.curCfg.Load()
	st := web.Status{
		Gateway: cfg.Gateway.ID,
		Site:    cfg.Gateway.Site,
		Started: d.con.started,
		Config: web.ConfigStatus{
			File:    cfg.Path,
			Files:   cfg.Files,
			Version: cfg.Version,
			Loaded:  time.Unix(0, d.con.loaded.Load()),
			Reload:  d.con.reload.Load(),
		},
	}
	bs := d.buf.Stats()
	for _, l := range bs.Lanes {
		st.Buffer.Lanes = append(st.Buffer.Lanes, web.LaneStatus{
			Lane: l.Lane.String(), Records: l.Records, Bytes: l.Bytes, Oldest: l.Oldest, InFlight: l.InFlight,
		})
	}
	st.Buffer.FileBytes, st.Buffer.FreeBytes, st.Buffer.QueueLength = bs.FileBytes, bs.FreeBytes, bs.QueueLength
	if err := d.buf.Err(); err != nil {
		st.Buffer.Error = err.Error()
	}
	st.Upstreams = d.upstreamStatus()
	st.Uplink.Configured = len(cfg.Uplink.Entries()) > 0
	if st.Uplink.Configured {
		err := d.uplinkErr()
		st.Uplink.Connected = err == nil
		if err != nil {
			st.Uplink.Error = err.Error()
		}
	}
	return st
}

// reloadError is the one-line form of a refused reload's errors.
func reloadError(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// uplinkErr is the uplink's readiness check.
func (d *Gateway) uplinkErr() error {
	u := d.primary()
	if u == nil {
		if len(d.curCfg.Load().Uplink.Entries()) > 0 {
			return errors.New("not running (see the log: the uplink could not be started)")
		}
		return nil
	}
	return u.err()
}
