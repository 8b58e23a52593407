package web

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry/internal/testutil"
)

// start runs a server on a free loopback port until the test ends.
func start(t *testing.T, cfg Config, opts Options) (*Server, *testutil.SyncBuffer) {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	opts.Config = cfg
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, s)
	return s, logs
}

// serve runs s until the test ends.
func serve(t *testing.T, s *Server) {
	t.Helper()
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "Run", 20*time.Second, s.Run)
}

func get(t *testing.T, c *http.Client, url string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func local() Config { return Config{Listen: "127.0.0.1:0"} }

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_test_things_total", Help: "Things."})
	reg.MustRegister(c)
	c.Add(3)
	s, _ := start(t, local(), Options{Gatherer: reg, Registerer: reg, Version: "1.2.3"})
	s.handle("GET /api/ping", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "pong") }))
	base := "http://" + s.Addr()

	code, _, body := get(t, nil, base+"/healthz")
	if code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	code, _, body = get(t, nil, base+"/api/ping")
	if code != 200 || body != "pong" {
		t.Errorf("/api/ping (mounted after Run) = %d %q", code, body)
	}
	code, hdr, body := get(t, nil, base+"/")
	if code != 200 || hdr.Get("Content-Type") != "text/html; charset=utf-8" || !strings.Contains(body, "<html") {
		t.Errorf("/ (the console) = %d %s", code, hdr.Get("Content-Type"))
	}
	code, _, body = get(t, nil, base+"/api/status")
	if code != 200 || !strings.Contains(body, `"version": "1.2.3"`) || !strings.Contains(body, `"uplink": "not configured"`) {
		t.Errorf("/api/status = %d %s", code, body)
	}
	code, _, _ = get(t, nil, base+"/nothing")
	if code != 404 {
		t.Errorf("/nothing = %d, want 404", code)
	}

	code, hdr, body = get(t, nil, base+"/metrics")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics = %d %s", code, hdr.Get("Content-Type"))
	}
	for _, want := range []string{
		"ferry_test_things_total 3",
		`ferry_http_requests_total{code="200",handler="healthz"} 1`,
		`ferry_http_requests_total{code="200",handler="api_ping"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
	code, hdr, body = get(t, nil, base+"/metrics", "Accept", "application/openmetrics-text;version=1.0.0")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/openmetrics-text") || !strings.HasSuffix(body, "# EOF\n") {
		t.Errorf("OpenMetrics /metrics = %d %s, ends %q", code, hdr.Get("Content-Type"), body[max(0, len(body)-20):])
	}
}

func TestReadyz(t *testing.T) {
	reg := prometheus.NewRegistry()
	var uplinkErr atomic.Pointer[error]
	var bufferPanics atomic.Bool
	s, _ := start(t, local(), Options{Gatherer: reg, Registerer: reg, Checks: []Check{
		{"buffer", func() error {
			if bufferPanics.Load() {
				panic("boom")
			}
			return nil
		}},
		{"uplink", func() error {
			if p := uplinkErr.Load(); p != nil {
				return *p
			}
			return nil
		}},
	}})
	base := "http://" + s.Addr()

	code, _, body := get(t, nil, base+"/readyz")
	if code != 200 || body != "ok\n" {
		t.Fatalf("ready: /readyz = %d %q", code, body)
	}

	down := errors.New("not connected to nats://10.0.0.5:4222: connection refused")
	uplinkErr.Store(&down)
	code, _, body = get(t, nil, base+"/readyz")
	if code != 503 {
		t.Fatalf("uplink down: /readyz = %d, want 503", code)
	}
	want := "not ready: 1 of 2 checks failing\n[-] uplink: not connected to nats://10.0.0.5:4222: connection refused\n"
	if body != want {
		t.Errorf("uplink down: body\n%q\nwant\n%q", body, want)
	}
	_, _, body = get(t, nil, base+"/metrics")
	for _, w := range []string{`ferry_ready{check="buffer"} 1`, `ferry_ready{check="uplink"} 0`} {
		if !strings.Contains(body, w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}
	code, hdr, body := get(t, nil, base+"/readyz?format=json")
	var r Readiness
	if err := json.Unmarshal([]byte(body), &r); err != nil || code != 503 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("json: %d %s %q: %v", code, hdr.Get("Content-Type"), body, err)
	}
	wantR := Readiness{Ready: false, Checks: []CheckResult{{Name: "buffer", OK: true}, {Name: "uplink", OK: false, Error: down.Error()}}}
	if got, _ := json.Marshal(r); string(got) != mustJSON(wantR) {
		t.Errorf("json = %s, want %s", got, mustJSON(wantR))
	}

	uplinkErr.Store(nil)
	code, _, body = get(t, nil, base+"/readyz?verbose")
	if code != 200 || body != "ok\n[+] buffer: ok\n[+] uplink: ok\n" {
		t.Errorf("recovered: /readyz?verbose = %d %q", code, body)
	}

	// A panicking check fails, named.
	bufferPanics.Store(true)
	code, _, body = get(t, nil, base+"/readyz")
	if code != 503 || !strings.Contains(body, "[-] buffer: check panicked: boom") {
		t.Errorf("panicking check: %d %q", code, body)
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestBasicAuth(t *testing.T) {
	cfg := local()
	cfg.BasicAuth = &BasicAuth{Username: "prometheus", PasswordHash: mustHash(t, "correct horse")}
	s, logs := start(t, cfg, Options{Checks: []Check{{"x", func() error { return nil }}}})
	base := "http://" + s.Addr()

	tests := []struct {
		name       string
		path       string
		user, pass string
		want       int
	}{
		{"healthz needs no auth", "/healthz", "", "", 200},
		{"metrics without auth", "/metrics", "", "", 401},
		{"readyz without auth", "/readyz", "", "", 401},
		{"index without auth", "/", "", "", 401},
		{"wrong password", "/metrics", "prometheus", "battery staple", 401},
		{"wrong user", "/metrics", "admin", "correct horse", 401},
		{"good", "/metrics", "prometheus", "correct horse", 200},
		{"good again (cached)", "/readyz", "prometheus", "correct horse", 200},
		{"unclean healthz path is not exempt", "//healthz", "", "", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", base+tt.path, nil)
			if tt.user != "" {
				req.SetBasicAuth(tt.user, tt.pass)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.want == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), `Basic realm="ferry"`) {
				t.Errorf("WWW-Authenticate = %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	if strings.Contains(logs.String(), "correct horse") || strings.Contains(logs.String(), cfg.BasicAuth.PasswordHash.Reveal()) {
		t.Errorf("logs show the password or its hash:\n%s", logs)
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func tlsClient(ca *testutil.CA, client *tls.Certificate) *http.Client {
	tc := &tls.Config{RootCAs: ca.Pool()}
	if client != nil {
		tc.Certificates = []tls.Certificate{*client}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, "ferry test CA")
	certPath, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	leaf := ca.Issue(t, 100, "ferry-test", x509.ExtKeyUsageServerAuth)
	writeFile(t, certPath, leaf.CertPEM)
	writeFile(t, keyPath, leaf.KeyPEM)

	cfg := local()
	cfg.TLS = &TLSConfig{Cert: certPath, Key: keyPath}
	s, logs := start(t, cfg, Options{})
	client := tlsClient(ca, nil)

	serial := func() int64 {
		t.Helper()
		resp, err := client.Get("https://" + s.Addr() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
	}
	if got := serial(); got != 100 {
		t.Fatalf("serial %d, want 100", got)
	}
	// Plain HTTP to the TLS port is refused.
	if resp, err := http.Get("http://" + s.Addr() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP served on a TLS listener")
		}
	}

	// A renewed certificate is used by the next connection.
	leaf = ca.Issue(t, 101, "ferry-test", x509.ExtKeyUsageServerAuth)
	writeFile(t, certPath, leaf.CertPEM)
	writeFile(t, keyPath, leaf.KeyPEM)
	future := time.Now().Add(time.Minute) // make the change visible on coarse mtime filesystems
	os.Chtimes(certPath, future, future)
	if got := serial(); got != 101 {
		t.Fatalf("after renewal: serial %d, want 101", got)
	}
	// A broken renewal keeps the previous certificate.
	writeFile(t, keyPath, []byte("garbage"))
	os.Chtimes(keyPath, future.Add(time.Minute), future.Add(time.Minute))
	if got := serial(); got != 101 {
		t.Fatalf("after broken renewal: serial %d, want 101", got)
	}
	if n := strings.Count(logs.String(), "does not load"); n != 1 {
		t.Errorf("broken renewal logged %d times, want once:\n%s", n, logs)
	}
	serial()
	if n := strings.Count(logs.String(), "does not load"); n != 1 {
		t.Errorf("broken renewal logged %d times after another handshake, want once", n)
	}
}

func TestClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, "server CA")
	clientCA := testutil.NewCA(t, "client CA")
	leaf := ca.Issue(t, 7, "ferry-test", x509.ExtKeyUsageServerAuth)
	writeFile(t, filepath.Join(dir, "tls.crt"), leaf.CertPEM)
	writeFile(t, filepath.Join(dir, "tls.key"), leaf.KeyPEM)
	writeFile(t, filepath.Join(dir, "clients.pem"), clientCA.PEM)
	cfg := Config{Listen: "127.0.0.1:0", TLS: &TLSConfig{
		Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key"), ClientCA: filepath.Join(dir, "clients.pem"),
	}}
	s, _ := start(t, cfg, Options{})
	url := "https://" + s.Addr() + "/metrics"

	if resp, err := tlsClient(ca, nil).Get(url); err == nil {
		resp.Body.Close()
		t.Fatal("a client without a certificate was served")
	}
	pair := clientCA.Issue(t, 8, "ferry-test", x509.ExtKeyUsageClientAuth).TLS()
	code, _, _ := get(t, tlsClient(ca, &pair), url)
	if code != 200 {
		t.Fatalf("with a client certificate: %d", code)
	}
}

func TestListenErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "bad.crt"), []byte("not a certificate"))
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"port in use", Config{Listen: busy.Addr().String()}, "http: listen on " + busy.Addr().String()},
		{"missing cert", Config{Listen: "127.0.0.1:0", TLS: &TLSConfig{Cert: filepath.Join(dir, "none.crt"), Key: filepath.Join(dir, "none.key")}}, "tls.cert:"},
		{"bad cert", Config{Listen: "127.0.0.1:0", TLS: &TLSConfig{Cert: filepath.Join(dir, "bad.crt"), Key: filepath.Join(dir, "bad.crt")}}, "load tls certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Options{Config: tt.cfg})
			if err != nil {
				t.Fatal(err)
			}
			err = s.Run(context.Background()) // returns at once: Listen fails
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestOff(t *testing.T) {
	s, err := New(Options{Config: Config{Listen: "off"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil || s.Addr() != "" {
		t.Fatalf("Listen = %v, Addr = %q", err, s.Addr())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	testutil.StopRun(t, cancel, done, 10*time.Second)
}

// TestShutdownEndsStreams: a long-lived response (an event stream) sees
// its context end at shutdown, and Run returns.
func TestShutdownEndsStreams(t *testing.T) {
	s, err := New(Options{Config: local(), ShutdownTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	streaming := make(chan struct{})
	ended := make(chan struct{})
	s.handle("GET /api/stream", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: hello\n\n")
		w.(http.Flusher).Flush()
		close(streaming)
		<-r.Context().Done()
		close(ended)
	}))
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	resp, err := http.Get("http://" + s.Addr() + "/api/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-streaming
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return while a stream was open")
	}
	select {
	case <-ended:
	default:
		t.Fatal("the stream handler was still running after Run returned")
	}
	if _, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		t.Error("still accepting connections after Run returned")
	}
}

func TestNetworkBindWarnings(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string
		not  []string
	}{
		{"loopback", Config{Listen: "127.0.0.1:0"}, nil, []string{"level=WARN"}},
		{"open network", Config{Listen: "0.0.0.0:0"}, []string{"without authentication"}, []string{"clear text"}},
		{"auth without tls", Config{Listen: "0.0.0.0:0", BasicAuth: &BasicAuth{Username: "u", PasswordHash: mustHash(t, "p")}},
			[]string{"clear text"}, []string{"without authentication"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, logs := start(t, tt.cfg, Options{})
			out := logs.String()
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("log lacks %q:\n%s", w, out)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(out, n) {
					t.Errorf("log has %q:\n%s", n, out)
				}
			}
		})
	}
}

func TestBodyLimit(t *testing.T) {
	s, _ := start(t, local(), Options{})
	s.handle("POST /api/echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		fmt.Fprintf(w, "read %d bytes", n)
	}))
	resp, err := http.Post("http://"+s.Addr()+"/api/echo", "application/octet-stream", bytes.NewReader(make([]byte, maxBodyBytes+1)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d", resp.StatusCode)
	}
}
