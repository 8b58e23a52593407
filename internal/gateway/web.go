package gateway

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/console"
)

// consoleWiring is what the daemon keeps for the web console
// (internal/console): the console itself (nil when the HTTP listener is
// off) and the facts its health page shows that no part owns.
type consoleWiring struct {
	c       *console.Console
	started time.Time
	loaded  atomic.Int64 // when the running configuration was loaded (Unix ns)
	reload  atomic.Pointer[console.Reload]
}

// setupConsole creates the console and lets the pipeline feed it. Call it
// before routes, after the pipeline and the rule engine exist.
func (d *Gateway) setupConsole() {
	d.con.started = time.Now()
	d.con.loaded.Store(d.con.started.UnixNano())
	d.con.c = console.New(consoleCatalog(d.cfg), console.Options{
		Logger:   d.log.With("part", "console"),
		Gateway:  d.cfg.Gateway.ID,
		Devices:  d.deviceStatus,
		Active:   d.engine.Active,
		Status:   d.consoleStatus,
		Gatherer: d.reg,
		Slots:    sparklineSlots(d.cfg.HTTP.Sparklines),
	})
	d.pipe.observe = d.con.c.Observe
}

// sparklineSlots turns the http.sparklines history into the console's
// number of buckets: -1 (none) for 0.
func sparklineSlots(history time.Duration) int {
	if history <= 0 {
		return -1
	}
	return max(1, int(history/console.DefaultStep))
}

// mountConsole mounts the console's page and API. The alert API
// (acknowledge is the console's only write) is refused to cross-origin
// browser requests, so that another web page cannot acknowledge alerts
// with the credentials a browser keeps for the gateway.
func (d *Gateway) mountConsole(alerts http.Handler) http.Handler {
	if d.con.c != nil {
		d.con.c.Mount(d.http)
	}
	return http.NewCrossOriginProtection().Handler(alerts)
}

// alert records an alert transition in the console's history.
func (w *consoleWiring) alert(a ferry.Alert) {
	if w.c != nil {
		w.c.Alert(a)
	}
}

// reloaded records the result of a reload: err is nil when cfg was
// applied.
func (w *consoleWiring) reloaded(cfg *config.Config, err error) {
	now := time.Now()
	r := &console.Reload{Time: now, OK: err == nil}
	if err != nil {
		r.Error = reloadError(err)
	} else {
		w.loaded.Store(now.UnixNano())
		if w.c != nil {
			w.c.SetCatalog(consoleCatalog(cfg))
		}
	}
	w.reload.Store(r)
}

// consoleCatalog lists the configured devices and points.
func consoleCatalog(cfg *config.Config) console.Catalog {
	cat := console.Catalog{Points: cfg.Points}
	for _, dev := range cfg.Devices {
		cat.Devices = append(cat.Devices, console.DeviceInfo{Name: dev.Name, Protocol: dev.Protocol, Description: dev.Description})
	}
	return cat
}

// consoleStatus is the gateway's own part of the health page. Like the
// other handlers it reads what Run and Reload published, not d.mu, which
// a reload holds while a device group stops.
func (d *Gateway) consoleStatus() console.Status {
	cfg, up := d.curCfg.Load(), d.curUp.Load()
	st := console.Status{
		Version: d.opts.Version,
		Commit:  d.opts.Commit,
		Gateway: cfg.Gateway.ID,
		Site:    cfg.Gateway.Site,
		Started: d.con.started,
		Config: console.ConfigStatus{
			File:    cfg.Path,
			Files:   cfg.Files,
			Version: cfg.Version,
			Loaded:  time.Unix(0, d.con.loaded.Load()),
			Reload:  d.con.reload.Load(),
		},
	}
	bs := d.buf.Stats()
	for _, l := range bs.Lanes {
		st.Buffer.Lanes = append(st.Buffer.Lanes, console.LaneStatus{
			Lane: l.Lane.String(), Records: l.Records, Bytes: l.Bytes, Oldest: l.Oldest, InFlight: l.InFlight,
		})
	}
	st.Buffer.FileBytes, st.Buffer.FreeBytes, st.Buffer.QueueLength = bs.FileBytes, bs.FreeBytes, bs.QueueLength
	if err := d.buf.Err(); err != nil {
		st.Buffer.Error = err.Error()
	}
	st.Uplink.Configured = cfg.Uplink.NATS != nil
	switch {
	case up != nil:
		err := up.Err()
		st.Uplink.Connected = err == nil
		if err != nil {
			st.Uplink.Error = err.Error()
		}
	case st.Uplink.Configured:
		st.Uplink.Error = "uplink not running (see the log)"
	}
	return st
}

// reloadError is the one-line form of a refused reload's errors.
func reloadError(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// uplinkErr is the uplink's readiness check.
func (d *Gateway) uplinkErr() error {
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
func (d *Gateway) routes() {
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
