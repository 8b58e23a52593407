package web

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/ferry-edge/ferry"
)

//go:embed assets
var assetFS embed.FS

type asset struct {
	body        []byte
	contentType string
	etag        string
}

// loadAssets reads the embedded page and its files, with their ETags.
func loadAssets() map[string]asset {
	m := map[string]asset{}
	_ = fs.WalkDir(assetFS, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assetFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		m[path.Base(p)] = asset{body: b, contentType: contentType(p), etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	return m
}

// sparklineSlots turns the http.sparklines history into the store's
// number of buckets of step: -1 (none) for 0.
func sparklineSlots(history, step time.Duration) int {
	if history <= 0 {
		return -1
	}
	return max(1, int(history/step))
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

// Observe records the values of one scan for the console (the pipeline
// calls it for every scan; it does not allocate in steady state).
func (s *Server) Observe(scan *ferry.Scan) { s.store.Observe(scan) }

// Alert records one alert transition in the console's history.
func (s *Server) Alert(a ferry.Alert) { s.history.Add(a) }

// SetCatalog replaces the configured devices and points (a reload).
func (s *Server) SetCatalog(cat Catalog) {
	s.store.SetCatalog(cat)
	s.search.set(cat)
}

// csp lets the page load only its own scripts, styles and data; it may not
// be framed (an Acknowledge button must not be clickjacked).
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (s *Server) serveIndex(w http.ResponseWriter, r *http.Request) {
	s.writeAsset(w, r, "index.html")
}

func (s *Server) serveAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if name == "index.html" {
		http.Redirect(w, r, "/", http.StatusMovedPermanently)
		return
	}
	s.writeAsset(w, r, name)
}

func (s *Server) writeAsset(w http.ResponseWriter, r *http.Request, name string) {
	a, ok := s.assets[name]
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
func (s *Server) Devices() []Device {
	var status []ferry.DeviceStatus
	if s.opts.Devices != nil {
		status = s.opts.Devices()
	}
	alerts := map[string]int{}
	for _, a := range s.opts.Alerts.Active() {
		alerts[a.Device]++
	}
	byName := make(map[string]int, len(status))
	for i, st := range status {
		byName[st.Device] = i
	}
	used := make([]bool, len(status))
	sums := s.store.devices()
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

func (s *Server) serveDevices(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Devices())
}

func (s *Server) servePoints(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	dev := q.Get("device")
	spark := q.Get("spark") != "0" && q.Get("spark") != "false"
	pts, ok := s.store.Points(dev, spark)
	if !ok {
		writeJSON(w, http.StatusNotFound, errorBody{"unknown device " + quote(dev)})
		return
	}
	writeJSON(w, http.StatusOK, pts)
}

func (s *Server) serveHistory(w http.ResponseWriter, r *http.Request) {
	list := s.history.List()
	out := make([]ferry.AlertJSON, len(list))
	for i, a := range list {
		out[i] = ferry.NewAlertJSON(a, s.opts.Gateway)
	}
	writeJSON(w, http.StatusOK, out)
}

// Health returns the health page's data now.
func (s *Server) Health() Health {
	now := s.opts.Now()
	h := Health{Time: now}
	h.Status = s.status()
	if !h.Started.IsZero() {
		h.UptimeSeconds = now.Sub(h.Started).Round(time.Second).Seconds()
	}
	for i := range h.Buffer.Lanes {
		l := &h.Buffer.Lanes[i]
		if !l.Oldest.IsZero() {
			l.OldestAgeSeconds = max(0, now.Sub(l.Oldest).Seconds())
		}
	}
	s.meter.read(&h, now)
	if s.opts.Durability != nil {
		h.Durability = s.opts.Durability()
	}
	return h
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Health())
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

// status is the gateway's Status now, with the version and commit.
func (s *Server) status() Status {
	var st Status
	if s.opts.Status != nil {
		st = s.opts.Status()
	}
	if s.opts.Fleet != nil {
		st.Fleet = s.opts.Fleet()
	}
	st.Version, st.Commit = s.opts.Version, s.opts.Commit
	return st
}

// apiStatus is the GET /api/status body: a summary for scripts (the
// health page's /api/health has the details).
type apiStatus struct {
	Version       string    `json:"version"`
	Gateway       string    `json:"gateway"`
	Site          string    `json:"site"`
	ConfigFile    string    `json:"config_file"`
	ConfigVersion string    `json:"config_version"`
	Buffer        apiBuffer `json:"buffer"`
	// Uplink is "connected", "not configured" or why it is not connected.
	Uplink string `json:"uplink"`
	// Upstreams is each upstream, when there are several.
	Upstreams []UpstreamStatus `json:"upstreams,omitempty"`
	Fleet     *FleetStatus     `json:"fleet,omitempty"`
}

type apiBuffer struct {
	Lanes       []apiLane `json:"lanes"`
	FileBytes   int64     `json:"file_bytes"`
	FreeBytes   int64     `json:"free_bytes"`
	QueueLength int       `json:"queue_length"`
}

type apiLane struct {
	Records  int       `json:"records"`
	Bytes    int64     `json:"bytes"`
	Oldest   time.Time `json:"oldest,omitzero"`
	InFlight int       `json:"in_flight"`
}

func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	st := s.status()
	out := apiStatus{
		Version: st.Version, Gateway: st.Gateway, Site: st.Site,
		ConfigFile: st.Config.File, ConfigVersion: st.Config.Version, Fleet: st.Fleet, Upstreams: st.Upstreams,
		Buffer: apiBuffer{Lanes: make([]apiLane, len(st.Buffer.Lanes)), FileBytes: st.Buffer.FileBytes, FreeBytes: st.Buffer.FreeBytes, QueueLength: st.Buffer.QueueLength},
	}
	for i, l := range st.Buffer.Lanes {
		out.Buffer.Lanes[i] = apiLane{Records: l.Records, Bytes: l.Bytes, Oldest: l.Oldest, InFlight: l.InFlight}
	}
	switch u := st.Uplink; {
	case !u.Configured:
		out.Uplink = "not configured"
	case u.Connected:
		out.Uplink = "connected"
	case u.Error != "":
		out.Uplink = u.Error
	default:
		out.Uplink = "not connected"
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}
