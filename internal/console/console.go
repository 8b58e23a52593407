package console

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/sinks"
)

//go:embed assets
var assetFS embed.FS

// Options are what the console reads from the running gateway. Every
// function may be nil (that part of the console is then empty); each is
// called in the request's goroutine and must return promptly.
type Options struct {
	Logger *slog.Logger
	// Gateway is the gateway id put in alert JSON.
	Gateway string
	// Devices returns the drivers' view of every running device.
	Devices func() []ferry.DeviceStatus
	// Active returns the active alerts (to count them per device).
	Active func() []ferry.Alert
	// Status returns the gateway's own facts for the health page.
	Status func() Status
	// Gatherer is read for the health page's drops, rates and latencies.
	Gatherer prometheus.Gatherer
	// Step and Slots shape the sparklines (DefaultStep, DefaultSlots;
	// Slots below zero turns them off); History is how many alert
	// transitions are kept (DefaultHistory).
	Step    time.Duration
	Slots   int
	History int
	Now     func() time.Time
}

// Console is the local web console: the embedded page and the JSON API
// behind it. Create it with New, feed it with Observe (every scan) and
// Alert (every alert transition), and mount it with Mount.
type Console struct {
	opts    Options
	log     *slog.Logger
	store   *Store
	history *History
	meter   *meter
	assets  map[string]asset
}

type asset struct {
	body        []byte
	contentType string
	etag        string
}

// New returns a console for the devices and points of cat. It does no I/O.
func New(cat Catalog, opts Options) *Console {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Console{
		opts:    opts,
		log:     opts.Logger,
		store:   NewStore(cat, opts.Step, opts.Slots, opts.Now),
		history: NewHistory(opts.History),
		meter:   &meter{g: opts.Gatherer},
		assets:  map[string]asset{},
	}
	_ = fs.WalkDir(assetFS, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assetFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		c.assets[path.Base(p)] = asset{body: b, contentType: contentType(p), etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	return c
}

func contentType(p string) string {
	switch path.Ext(p) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	}
	return "application/octet-stream"
}

// Observe records the values of one scan (the pipeline calls it for every
// scan; it does not allocate in steady state).
func (c *Console) Observe(s *ferry.Scan) { c.store.Observe(s) }

// Alert records one alert transition in the history.
func (c *Console) Alert(a ferry.Alert) { c.history.Add(a) }

// SetCatalog replaces the configured devices and points (a reload).
func (c *Console) SetCatalog(cat Catalog) { c.store.SetCatalog(cat) }

// Store returns the value store.
func (c *Console) Store() *Store { return c.store }

// Mux is where the console mounts its handlers (an *http.ServeMux or the
// httpapi server).
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Routes lists the patterns Mount mounts.
var Routes = []string{
	"GET /{$}",
	"GET /assets/{file}",
	"GET /api/devices",
	"GET /api/points",
	"GET /api/alerts/history",
	"GET /api/health",
}

// Mount mounts the page, its assets and the JSON API on m. The alert list,
// stream and acknowledge (/api/alerts, /api/alerts/stream,
// /api/alerts/{id}/ack) are served by internal/alertapi; the page uses
// them.
func (c *Console) Mount(m Mux) {
	hs := []http.HandlerFunc{c.serveIndex, c.serveAsset, c.serveDevices, c.servePoints, c.serveHistory, c.serveHealth}
	for i, p := range Routes {
		m.Handle(p, hs[i])
	}
}

// Handler returns the console's routes on their own mux (tests, or a
// listener of its own).
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	c.Mount(mux)
	return mux
}

// csp lets the page load only its own scripts, styles and data; it may not
// be framed (an Acknowledge button must not be clickjacked).
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (c *Console) serveIndex(w http.ResponseWriter, r *http.Request) {
	c.writeAsset(w, r, "index.html")
}

func (c *Console) serveAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if name == "index.html" {
		http.Redirect(w, r, "/", http.StatusMovedPermanently)
		return
	}
	c.writeAsset(w, r, name)
}

func (c *Console) writeAsset(w http.ResponseWriter, r *http.Request, name string) {
	a, ok := c.assets[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	// Revalidate every time: a new ferry binary serves new assets at once.
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, a.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(a.body)
}

// Device is one row of GET /api/devices: the driver's status of the
// device, with what the console adds.
type Device struct {
	ferry.DeviceStatus
	Description string `json:"description,omitempty"`
	// State is "connected", "lost" (not answering; see last_error and
	// since), "connecting" (no answer yet, no failure yet) or "not
	// running" (configured, but its driver is not running).
	State    string    `json:"state"`
	PollMS   float64   `json:"poll_ms"`
	Points   int       `json:"points"`
	Quality  Counts    `json:"quality"`
	LastScan time.Time `json:"last_scan,omitzero"`
	Scans    uint64    `json:"scans"`
	// Alerts is the number of active alerts on the device's points.
	Alerts int `json:"alerts"`
}

// Counts are points by the quality of their last sample.
type Counts struct {
	Good      int `json:"good"`
	Uncertain int `json:"uncertain"`
	Bad       int `json:"bad"`
}

// Devices returns every configured device (configuration order), then any
// device a driver reports that the configuration does not name.
func (c *Console) Devices() []Device {
	var status []ferry.DeviceStatus
	if c.opts.Devices != nil {
		status = c.opts.Devices()
	}
	alerts := map[string]int{}
	if c.opts.Active != nil {
		for _, a := range c.opts.Active() {
			alerts[a.Device]++
		}
	}
	byName := make(map[string]int, len(status))
	for i, st := range status {
		byName[st.Device] = i
	}
	used := make([]bool, len(status))
	sums := c.store.devices()
	out := make([]Device, 0, len(sums)+len(status))
	for _, s := range sums {
		d := Device{
			DeviceStatus: ferry.DeviceStatus{Device: s.info.Name, Protocol: s.info.Protocol},
			Description:  s.info.Description,
			State:        "not running",
			Points:       s.points,
			Quality:      Counts{s.quality[ferry.Good], s.quality[ferry.Uncertain], s.quality[ferry.Bad]},
			LastScan:     s.lastScan,
			Scans:        s.scans,
			Alerts:       alerts[s.info.Name],
		}
		if i, ok := byName[s.info.Name]; ok {
			used[i] = true
			d.setStatus(status[i])
		}
		out = append(out, d)
	}
	for i, st := range status {
		if !used[i] {
			d := Device{Alerts: alerts[st.Device]}
			d.setStatus(st)
			out = append(out, d)
		}
	}
	return out
}

func (d *Device) setStatus(st ferry.DeviceStatus) {
	if st.Protocol == "" {
		st.Protocol = d.Protocol
	}
	d.DeviceStatus = st
	d.PollMS = float64(st.PollDuration.Microseconds()) / 1000
	switch {
	case st.Connected:
		d.State = "connected"
	case st.LastError != "":
		d.State = "lost"
	default:
		d.State = "connecting"
	}
}

func (c *Console) serveDevices(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, c.Devices())
}

func (c *Console) servePoints(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	dev := q.Get("device")
	spark := q.Get("spark") != "0" && q.Get("spark") != "false"
	pts, ok := c.store.Points(dev, spark)
	if !ok {
		writeJSON(w, http.StatusNotFound, errorBody{"unknown device " + quote(dev)})
		return
	}
	writeJSON(w, http.StatusOK, pts)
}

func (c *Console) serveHistory(w http.ResponseWriter, r *http.Request) {
	list := c.history.List()
	out := make([]sinks.AlertJSON, len(list))
	for i, a := range list {
		out[i] = sinks.NewAlertJSON(a, c.opts.Gateway)
	}
	writeJSON(w, http.StatusOK, out)
}

// Health returns the health page's data now.
func (c *Console) Health() Health {
	now := c.opts.Now()
	h := Health{Time: now}
	if c.opts.Status != nil {
		h.Status = c.opts.Status()
	}
	if !h.Started.IsZero() {
		h.UptimeSeconds = now.Sub(h.Started).Round(time.Second).Seconds()
	}
	for i := range h.Buffer.Lanes {
		l := &h.Buffer.Lanes[i]
		if !l.Oldest.IsZero() {
			l.OldestAgeSeconds = max(0, now.Sub(l.Oldest).Seconds())
		}
	}
	c.meter.read(&h, now)
	return h
}

func (c *Console) serveHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, c.Health())
}

type errorBody struct {
	Error string `json:"error"`
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
