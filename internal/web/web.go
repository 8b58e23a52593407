package web

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ferry-edge/ferry/internal/tlsfile"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ferry-edge/ferry"
)

// Limits and timeouts of the listener.
const (
	DefaultShutdownTimeout = 5 * time.Second
	readHeaderTimeout      = 10 * time.Second
	readTimeout            = 30 * time.Second
	idleTimeout            = 2 * time.Minute
	maxHeaderBytes         = 64 << 10
	maxBodyBytes           = 1 << 20
	metricsTimeout         = 30 * time.Second
	metricsInFlight        = 4
)

// Options are everything the server shows and serves. Only Config is
// required; every other field may be left zero (that part of the API is
// then empty). The funcs and interfaces are called in the request's
// goroutine and must return promptly: report a state the part already
// knows, do not dial.
type Options struct {
	Logger *slog.Logger
	// Config is the `http:` section.
	Config Config
	// Gatherer is served on /metrics and read for the health page's
	// drops, rates and latencies; nil serves an empty registry.
	Gatherer prometheus.Gatherer
	// Registerer, when set, receives ferry_http_requests_total and
	// ferry_ready{check} (each readiness check, run at scrape time).
	Registerer prometheus.Registerer
	// Version and Commit are shown on /api/status and the health page.
	Version, Commit string
	// Gateway is the gateway id put in alert JSON.
	Gateway string

	// Catalog is the configured devices and points the console keeps
	// values for (SetCatalog replaces it on a reload).
	Catalog Catalog
	// Devices returns the drivers' view of every running device.
	Devices func() []ferry.DeviceStatus
	// Alerts lists and acknowledges the active alerts.
	Alerts Alerts
	// Stream returns the alert stream now (it changes when the sinks are
	// rebuilt by a reload); nil, or a nil result, answers 503.
	Stream func() AlertStream
	// Status returns the gateway's own facts for /api/status and the
	// health page.
	Status func() Status
	// Durability returns the retention and upstream loss check now (nil,
	// or a nil result: not shown).
	Durability func() *Durability
	// Fleet returns fleet mode's state for /api/status and the console;
	// nil (or a nil result): not in fleet mode.
	Fleet func() *FleetStatus
	// Checks are the readiness checks of /readyz, in the order shown.
	Checks []Check
	// Command runs a command request (its JSON body) for POST
	// /api/commands, on behalf of the operator by; nil answers 503.
	Command func(ctx context.Context, body []byte, by string) ferry.CommandReply
	// Historian, when set, serves /api/history and the persisted
	// /api/alerts/history (historyapi.go).
	Historian Historian
	// Plan returns how the driver reads a device (its request plan), for
	// GET /api/devices/{device}; nil, or a nil result: it has none.
	Plan func(device string) *DevicePlan

	// Step is the sparklines' bucket (DefaultStep); Config.Sparklines
	// says how long they are. History is how many alert transitions are
	// kept (DefaultHistory).
	Step    time.Duration
	History int
	Now     func() time.Time
	// ShutdownTimeout bounds the graceful shutdown (default 5s).
	ShutdownTimeout time.Duration
}

// Alerts is what the alert API needs of the rule engine.
type Alerts interface {
	// Active returns the active alerts, oldest first.
	Active() []ferry.Alert
	// Ack acknowledges the active alert id on behalf of by; it returns
	// an error wrapping ferry.ErrAlertNotFound for an unknown or cleared
	// id.
	Ack(id, by string) (ferry.Alert, error)
}

// AlertStream is what GET /api/alerts/stream needs of the alert sinks'
// Server-Sent Events hub: serve one client until it goes away, sending
// first the alerts snapshot returns as "active" events (the client is
// subscribed before snapshot is called).
type AlertStream interface {
	Serve(w http.ResponseWriter, r *http.Request, snapshot func() []ferry.Alert)
}

// Check is one readiness check: /readyz is ready when every Err returns
// nil. A check that panics counts as failing.
type Check struct {
	Name string
	Err  func() error
}

// Server is the HTTP listener and everything it serves. Create it with
// New, feed the console with Observe and Alert, then Run it.
type Server struct {
	cfg      Config
	opts     Options
	log      *slog.Logger
	shutdown time.Duration
	gatherer prometheus.Gatherer

	mux      *http.ServeMux
	requests *prometheus.CounterVec // nil without a Registerer
	auth     *authenticator         // nil without basic auth
	hosts    *hostAllowList
	operator *authenticator // nil without http.operator
	checks   []Check

	// The console's state.
	store   *Store
	history *History
	meter   *meter
	assets  map[string]asset
	search  searchIndex

	mu       sync.Mutex
	ln       net.Listener
	certs    *certLoader
	clientCA *x509.CertPool
	running  bool
}

// New validates o.Config and returns a server with every route mounted.
// It does no I/O: the listener is opened by Listen or Run.
func New(o Options) (*Server, error) {
	cfg := o.Config
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Gatherer == nil {
		o.Gatherer = prometheus.NewRegistry()
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
	if o.Step <= 0 {
		o.Step = DefaultStep
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Alerts == nil {
		o.Alerts = noAlerts{}
	}
	s := &Server{
		cfg:      cfg,
		opts:     o,
		log:      o.Logger,
		shutdown: o.ShutdownTimeout,
		gatherer: o.Gatherer,
		mux:      http.NewServeMux(),
		checks:   o.Checks,
		store:    NewStore(o.Catalog, o.Step, sparklineSlots(cfg.Sparklines, o.Step), o.Now),
		history:  NewHistory(o.History),
		meter:    &meter{g: o.Gatherer},
		assets:   loadAssets(),
		hosts:    newHostAllowList(cfg.Listen, cfg.AllowedHosts),
	}
	s.search.set(o.Catalog)
	// The auth metrics are registered (at 0) without basic auth too, so
	// that dashboards find them.
	limit, err := newAuthLimiter(o.Now, o.Logger, o.Registerer)
	if err != nil {
		return nil, fmt.Errorf("http: register metrics: %w", err)
	}
	if cfg.BasicAuth != nil && !cfg.Disabled() {
		s.auth = newAuthenticator(cfg.BasicAuth.Username, cfg.BasicAuth.PasswordHash.Reveal(), limit)
	}
	if cfg.Operator != nil && !cfg.Disabled() {
		s.operator = newAuthenticator(cfg.Operator.Username, cfg.Operator.PasswordHash.Reveal(), limit)
	}
	if o.Registerer != nil {
		s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_http_requests_total",
			Help: "HTTP requests served by the local listener, by route (api_devices, metrics, …) and status code.",
		}, []string{"handler", "code"})
		if err := o.Registerer.Register(s.requests); err != nil {
			return nil, fmt.Errorf("http: register metrics: %w", err)
		}
		if err := o.Registerer.Register(readyCollector{s}); err != nil {
			return nil, fmt.Errorf("http: register metrics: %w", err)
		}
	}
	s.routes()
	return s, nil
}

// routes mounts every handler.
func (s *Server) routes() {
	s.handle("GET /healthz", http.HandlerFunc(s.serveHealthz))
	s.handle("GET /readyz", http.HandlerFunc(s.serveReadyz))
	s.handle("GET /metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{
		ErrorLog:            promLogger{s.log},
		ErrorHandling:       promhttp.ContinueOnError,
		EnableOpenMetrics:   true,
		MaxRequestsInFlight: metricsInFlight,
		Timeout:             metricsTimeout,
	}))

	// The console: its page, assets and JSON API.
	s.handle("GET /{$}", http.HandlerFunc(s.serveIndex))
	s.handle("GET /assets/{file}", http.HandlerFunc(s.serveAsset))
	s.handle("GET /api/devices", http.HandlerFunc(s.serveDevices))
	s.handle("GET /api/devices/{device}", http.HandlerFunc(s.serveDevice))
	s.handle("GET /api/search", http.HandlerFunc(s.serveSearch))
	s.handle("GET /api/points", http.HandlerFunc(s.servePoints))
	s.handle("GET /api/alerts/history", http.HandlerFunc(s.serveAlertHistory))
	s.handle("GET /api/history", http.HandlerFunc(s.serveSeries))
	s.handle("GET /api/health", http.HandlerFunc(s.serveHealth))
	s.handle("GET /api/status", http.HandlerFunc(s.serveStatus))

	// The alert API. Acknowledge is the only request that changes
	// anything: it is refused to cross-origin browser requests, so that
	// another web page cannot acknowledge alerts with the credentials a
	// browser keeps for the gateway.
	alerts := http.NewCrossOriginProtection().Handler(s.alertsHandler())
	s.handle("/api/alerts", alerts)
	s.handle("/api/alerts/", alerts)
	s.handle(commandsPath, http.NewCrossOriginProtection().Handler(http.HandlerFunc(s.serveCommand)))

	// Go's profiles, for a gateway that uses more memory or CPU than it
	// should (go tool pprof http://127.0.0.1:9440/debug/pprof/heap), only
	// with http.pprof: true. Same listener, same authentication as the
	// rest; ?seconds is capped (see pprof.go).
	if s.cfg.Pprof {
		s.mountPprof()
	}
}

// handle mounts h at pattern, counted in ferry_http_requests_total by
// its route name (route.go).
func (s *Server) handle(pattern string, h http.Handler) {
	if s.requests != nil {
		h = promhttp.InstrumentHandlerCounter(s.requests.MustCurryWith(prometheus.Labels{"handler": routeName(pattern)}), h)
	}
	s.mux.Handle(pattern, h)
}

// Handler returns the server's handler: every route behind the limits
// and the authentication, as Run serves it.
func (s *Server) Handler() http.Handler { return s.handler() }

// Addr returns the address the server listens on ("127.0.0.1:40123"), or
// "" before Listen and when the listener is off.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Listen opens the listening socket and loads the TLS material, so that a
// port in use or a bad certificate is reported before the rest of the
// daemon starts. Run calls it when it has not been called, and closes the
// socket when it returns. It does nothing when the listener is off or
// already open.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.Disabled() || s.ln != nil {
		return nil
	}
	if t := s.cfg.TLS; t != nil {
		cl, err := newCertLoader(t.Cert, t.Key, s.log)
		if err != nil {
			return fmt.Errorf("http: %w", err)
		}
		s.certs = cl
		if t.ClientCA != "" {
			pool, err := tlsfile.Pool(t.ClientCA)
			if err != nil {
				return fmt.Errorf("http: tls.client_%w", err)
			}
			s.clientCA = pool
		}
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("http: listen on %s: %w", s.cfg.Listen, err)
	}
	s.ln = ln
	s.logStart(ln)
	return nil
}

// Run serves until ctx ends, then shuts down gracefully within
// Options.ShutdownTimeout. It returns nil after a shutdown asked by ctx,
// or the error that stopped the server. When the listener is off it
// returns nil when ctx ends. Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	if s.cfg.Disabled() {
		s.log.Info("http listener off")
		<-ctx.Done()
		return nil
	}
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("http: Run called twice")
	}
	s.running = true
	s.mu.Unlock()
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()

	baseCtx, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	srv := &http.Server{
		Handler:           s.handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          log.New(serverErrorLog{s.log}, "", 0),
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
	}
	// Long-lived responses (event streams) see their context end when the
	// shutdown starts; short ones finish normally.
	srv.RegisterOnShutdown(cancelBase)

	errc := make(chan error, 1)
	go func() {
		if s.certs != nil {
			srv.TLSConfig = s.tlsConfig()
			errc <- srv.ServeTLS(ln, "", "")
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("http: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.shutdown)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
		err = fmt.Errorf("http: shutdown: %w", err)
	}
	<-errc // http.ErrServerClosed
	s.log.Info("http listener stopped", "addr", ln.Addr().String())
	return err
}

func (s *Server) tlsConfig() *tls.Config {
	c := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.certs.get,
	}
	if s.clientCA != nil {
		c.ClientCAs = s.clientCA
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c
}

// logStart logs where the server listens and warns about what is exposed
// to the network.
func (s *Server) logStart(ln net.Listener) {
	addr := ln.Addr().String()
	loopback := false
	if ta, ok := ln.Addr().(*net.TCPAddr); ok {
		loopback = ta.IP.IsLoopback()
	}
	scheme := "http"
	if s.certs != nil {
		scheme = "https"
	}
	s.log.Info("http listening", "addr", addr, "scheme", scheme, "basic_auth", s.auth != nil, "client_certs", s.clientCA != nil)
	if loopback {
		return
	}
	if s.auth == nil && s.clientCA == nil {
		s.log.Warn("http listener is reachable from the network without authentication: anyone who can reach it can read /metrics and use the API; set http.basic_auth or bind to 127.0.0.1", "addr", addr)
	}
	if s.auth != nil && s.certs == nil {
		s.log.Warn("http basic auth without TLS on a network address: the password crosses the network in clear text; set http.tls", "addr", addr)
	}
}

// handler wraps the mux with the Host check, the limits and basic auth.
// The Host check comes first: it guards every route, those mounted later
// included.
func (s *Server) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if !s.hosts.serve(w, r) {
			return
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		}
		// The command endpoint checks the operator credential itself.
		// So does acknowledge (an operator's for a machine alarm).
		if s.auth != nil && r.URL.Path != "/healthz" && r.URL.Path != commandsPath && !isAckPath(r.URL.Path) && !s.auth.check(w, r) {
			return
		}
		s.mux.ServeHTTP(w, r)
	})
}

func (s *Server) serveHealthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	io.WriteString(w, "ok\n")
}

// promLogger routes promhttp's errors (a collector failing) to the log.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Warn("metrics: " + strings.TrimSpace(fmt.Sprintln(v...)))
}

// serverErrorLog routes net/http's own messages to the log: TLS handshake
// failures (scanners, wrong clients) at Debug, anything else at Warn.
type serverErrorLog struct{ log *slog.Logger }

func (l serverErrorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "TLS handshake error") {
		l.log.Debug(msg)
	} else {
		l.log.Warn(msg)
	}
	return len(p), nil
}
