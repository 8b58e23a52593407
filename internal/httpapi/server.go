// Package httpapi is ferry's local HTTP listener: /metrics (Prometheus
// text and OpenMetrics), /healthz (the process is alive), /readyz (every
// part is working, or which one is not and why), and the API handlers the
// other parts mount with Handle.
//
// Promises:
//
//   - Loopback by default (127.0.0.1:9440); "off" disables the listener and
//     Run then only waits for its context.
//   - Optional TLS (certificate re-read when its files change, optional
//     client certificates) and basic auth with a bcrypt hash. /healthz is
//     never authenticated: it says only "ok" and liveness probes must not
//     need a password. Every other path, /metrics and /readyz included,
//     requires the password when basic_auth is set.
//   - A non-loopback bind without authentication, or with basic auth but
//     without TLS, is allowed and logged as a warning at start.
//   - Slow or hostile clients cannot pin the server: header, read and idle
//     timeouts, a header size limit, a request body limit, and a cap on
//     concurrent bcrypt checks.
//   - Run shuts down gracefully: it stops accepting, cancels the requests'
//     context (ending long-lived streams) and waits at most
//     Options.ShutdownTimeout for handlers to return.
//
// Caveat: readiness checks run in the request goroutine; each must return
// promptly (report a state the part already knows, do not dial).
package httpapi

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
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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

// Options are what the server needs besides its configuration.
type Options struct {
	Logger *slog.Logger
	// Gatherer is served on /metrics; nil serves an empty registry.
	Gatherer prometheus.Gatherer
	// Registerer, when set, receives ferry_http_requests_total and
	// ferry_ready{check} (each readiness check, run at scrape time).
	Registerer prometheus.Registerer
	// Version is shown on the index page.
	Version string
	// ShutdownTimeout bounds the graceful shutdown (default 5s).
	ShutdownTimeout time.Duration
}

// Server is the HTTP listener. Create it with New, mount handlers with
// Handle, register readiness checks with AddCheck, then Run it.
type Server struct {
	cfg      Config
	log      *slog.Logger
	version  string
	shutdown time.Duration
	gatherer prometheus.Gatherer

	mux      *http.ServeMux
	requests *prometheus.CounterVec // nil without a Registerer
	auth     *authenticator         // nil without basic auth
	checks   checks

	mu       sync.Mutex
	patterns []string
	ln       net.Listener
	certs    *certLoader
	clientCA *x509.CertPool
	running  bool
}

// New validates cfg and returns a server. It does no I/O: the listener is
// opened by Listen or Run.
func New(cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Gatherer == nil {
		opts.Gatherer = prometheus.NewRegistry()
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	s := &Server{
		cfg:      cfg,
		log:      opts.Logger,
		version:  opts.Version,
		shutdown: opts.ShutdownTimeout,
		gatherer: opts.Gatherer,
		mux:      http.NewServeMux(),
	}
	if cfg.BasicAuth != nil && !cfg.Disabled() {
		s.auth = newAuthenticator(cfg.BasicAuth.Username, cfg.BasicAuth.PasswordHash.Reveal())
	}
	if opts.Registerer != nil {
		s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_http_requests_total",
			Help: "HTTP requests served by the local listener, by route pattern and status code.",
		}, []string{"handler", "code"})
		if err := opts.Registerer.Register(s.requests); err != nil {
			return nil, fmt.Errorf("http: register metrics: %w", err)
		}
		if err := opts.Registerer.Register(readyCollector{&s.checks}); err != nil {
			return nil, fmt.Errorf("http: register metrics: %w", err)
		}
	}
	s.Handle("GET /healthz", http.HandlerFunc(s.serveHealthz))
	s.Handle("GET /readyz", http.HandlerFunc(s.serveReadyz))
	s.Handle("GET /metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{
		ErrorLog:            promLogger{s.log},
		ErrorHandling:       promhttp.ContinueOnError,
		EnableOpenMetrics:   true,
		MaxRequestsInFlight: metricsInFlight,
		Timeout:             metricsTimeout,
	}))
	return s, nil
}

// Handle mounts h at pattern, a net/http ServeMux pattern with an
// optional method ("GET /api/devices", "POST /api/alerts/{id}/ack"). It
// panics on a malformed or conflicting pattern, as ServeMux does. Handlers
// mounted while the server runs are served at once.
func (s *Server) Handle(pattern string, h http.Handler) {
	if s.requests != nil {
		h = promhttp.InstrumentHandlerCounter(s.requests.MustCurryWith(prometheus.Labels{"handler": pattern}), h)
	}
	s.mux.Handle(pattern, h)
	s.mu.Lock()
	s.patterns = append(s.patterns, pattern)
	s.mu.Unlock()
}

// AddCheck adds a readiness check named name, or replaces the check of
// that name (keeping its place). /readyz reports ready when every check
// returns nil. A check must return promptly; a check that panics counts
// as failing.
func (s *Server) AddCheck(name string, check func() error) { s.checks.add(name, check) }

// RemoveCheck removes the readiness check named name, if any.
func (s *Server) RemoveCheck(name string) { s.checks.remove(name) }

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
			pem, err := os.ReadFile(t.ClientCA)
			if err != nil {
				return fmt.Errorf("http: read tls.client_ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("http: tls.client_ca %s holds no PEM certificate", t.ClientCA)
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
	root := !s.hasRootLocked()
	s.mu.Unlock()
	if root {
		s.Handle("GET /{$}", http.HandlerFunc(s.serveIndex))
	}

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

// hasRootLocked reports whether a handler was mounted at the site root.
func (s *Server) hasRootLocked() bool {
	for _, p := range s.patterns {
		path := p
		if i := strings.IndexByte(p, ' '); i >= 0 {
			path = strings.TrimSpace(p[i+1:])
		}
		if path == "/" || path == "/{$}" {
			return true
		}
	}
	return false
}

// handler wraps the mux with the limits and basic auth.
func (s *Server) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		}
		if s.auth != nil && r.URL.Path != "/healthz" && !s.auth.check(w, r) {
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

func (s *Server) serveIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	s.mu.Lock()
	patterns := append([]string(nil), s.patterns...)
	s.mu.Unlock()
	v := s.version
	if v == "" {
		v = "dev"
	}
	fmt.Fprintf(w, "ferry %s\n\n", v)
	for _, p := range patterns {
		if p == "GET /{$}" {
			continue
		}
		fmt.Fprintln(w, p)
	}
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
