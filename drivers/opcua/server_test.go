package opcua

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gopcua/opcua/id"
	uaserver "github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testutil"
)

func TestMain(m *testing.M) {
	// gopcua's server and client print through the standard logger.
	log.SetOutput(io.Discard)
	code := m.Run()
	closeShared()
	os.Exit(code)
}

// lockedNode is a variable nobody may read (BadUserAccessDenied).
const lockedNode = "Locked"

// testNS is the namespace URI of the test server's nodes.
const testNS = "urn:ferry:test:plant"

// serverOpts configure a test server.
type serverOpts struct {
	// secure enables Basic256Sha256 and Aes256_Sha256_RsaPss (Sign and
	// SignAndEncrypt) with username and certificate logins.
	secure bool
	// none enables security policy None (anonymous).
	none bool
	// extraNS adds namespaces before the test namespace, shifting its index.
	extraNS int
	// alias is another host:port the server is reached at (a proxy).
	alias string
	// cert and key: the server's certificate (generated when nil).
	cert []byte
	key  *rsa.PrivateKey
}

// testServer is an in-process gopcua server holding one variable per
// name, whose value the test sets.
type testServer struct {
	t        testing.TB
	opts     serverOpts
	port     int
	Endpoint string
	NS       uint16

	srv    *uaserver.Server
	ns     *uaserver.NodeNameSpace
	cancel context.CancelFunc

	mu     sync.Mutex
	values map[string]*ua.DataValue
	px     *testutil.Proxy
	shared bool
}

func selfSigned(t testing.TB, cn, uri string, isCA bool, parent *x509.Certificate, parentKey *rsa.PrivateKey, notAfter time.Time) ([]byte, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage: x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature |
			x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign | x509.KeyUsageContentCommitment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		DNSNames:              []string{"localhost"},
	}
	if uri != "" {
		u, _ := url.Parse(uri)
		tmpl.URIs = []*url.URL{u}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// startServer starts a server on a free port; it is stopped at cleanup.
func startServer(t testing.TB, o serverOpts) *testServer {
	t.Helper()
	s := newTestServer(t, o)
	t.Cleanup(s.close)
	return s
}

// Shared servers, for tests that neither stop nor cut them (each test
// uses its own node names). Starting a gopcua server is slow under the
// race detector (it imports the whole standard node set).
var shared struct {
	mu     sync.Mutex
	none   *testServer // security None only
	secure *testServer // Basic256Sha256 and Aes256_Sha256_RsaPss, and None
}

// sharedServer returns the shared server (secure, or None only), starting
// it on first use; TestMain stops it.
func sharedServer(t testing.TB, secure bool) *testServer {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	p, o := &shared.none, serverOpts{none: true}
	if secure {
		p, o = &shared.secure, serverOpts{none: true, secure: true}
	}
	if *p == nil {
		*p = newTestServer(t, o)
		(*p).shared = true
	}
	return *p
}

func closeShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	for _, s := range []*testServer{shared.none, shared.secure} {
		if s != nil {
			s.close()
		}
	}
}

func newTestServer(t testing.TB, o serverOpts) *testServer {
	t.Helper()
	if o.secure && o.cert == nil {
		o.cert, o.key = selfSigned(t, "test server", "urn:ferry:test:server", false, nil, nil, time.Now().Add(24*time.Hour))
	}
	s := &testServer{t: t, opts: o, port: testutil.FreePort(t), values: map[string]*ua.DataValue{}}
	// Clients connect through the proxy (cut to make a network
	// failure); the server advertises its address as an endpoint too.
	s.px = testutil.NewProxy(t, fmt.Sprintf("127.0.0.1:%d", s.port))
	s.opts.alias = s.px.Addr()
	s.Endpoint = "opc.tcp://" + s.px.Addr()
	s.start()
	return s
}

func (s *testServer) close() {
	s.stop()
	s.px.Close()
}

func (s *testServer) start() {
	s.t.Helper()
	o := s.opts
	opts := []uaserver.Option{uaserver.EndPoint("127.0.0.1", s.port), uaserver.ServerName("ferry test server")}
	if o.alias != "" {
		host, port, _ := net.SplitHostPort(o.alias)
		p, _ := strconv.Atoi(port)
		opts = append(opts, uaserver.EndPoint(host, p))
	}
	if o.none {
		opts = append(opts, uaserver.EnableSecurity("None", ua.MessageSecurityModeNone))
	}
	if o.secure {
		for _, p := range []string{"Basic256Sha256", "Aes256_Sha256_RsaPss"} {
			opts = append(opts,
				uaserver.EnableSecurity(p, ua.MessageSecurityModeSign),
				uaserver.EnableSecurity(p, ua.MessageSecurityModeSignAndEncrypt))
		}
		opts = append(opts, uaserver.Certificate(o.cert), uaserver.PrivateKey(o.key),
			uaserver.EnableAuthMode(ua.UserTokenTypeUserName), uaserver.EnableAuthMode(ua.UserTokenTypeCertificate))
	}
	opts = append(opts, uaserver.EnableAuthMode(ua.UserTokenTypeAnonymous))
	srv := uaserver.New(opts...)
	for i := 0; i < o.extraNS; i++ {
		uaserver.NewNodeNameSpace(srv, fmt.Sprintf("urn:ferry:test:extra%d", i))
	}
	ns := uaserver.NewNodeNameSpace(srv, testNS)
	root, err := srv.Namespace(0)
	if err != nil {
		s.t.Fatal(err)
	}
	root.Objects().AddRef(ns.Objects(), id.HasComponent, true)
	s.mu.Lock()
	names := make([]string, 0, len(s.values))
	for n := range s.values {
		names = append(names, n)
	}
	s.srv, s.ns, s.NS = srv, ns, ns.ID()
	s.mu.Unlock()
	sort.Strings(names)
	for _, n := range names {
		s.addNode(n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if err := srv.Start(ctx); err != nil {
		cancel()
		s.t.Fatalf("start server: %v", err)
	}
}

func (s *testServer) addNode(name string) {
	if name == lockedNode {
		n := uaserver.NewNode(ua.NewStringNodeID(s.NS, name), map[ua.AttributeID]*ua.DataValue{
			ua.AttributeIDAccessLevel:     uaserver.DataValueFromValue(byte(ua.AccessLevelTypeNone)),
			ua.AttributeIDUserAccessLevel: uaserver.DataValueFromValue(byte(ua.AccessLevelTypeNone)),
			ua.AttributeIDNodeClass:       uaserver.DataValueFromValue(uint32(ua.NodeClassVariable)),
		}, nil, func() *ua.DataValue { return uaserver.DataValueFromValue(1.0) })
		s.ns.AddNode(n)
		return
	}
	n := s.ns.AddNewVariableStringNode(name, func() *ua.DataValue {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.values[name]
	})
	// gopcua's Node.AddRef is not safe for concurrent use: the nodes of a
	// shared server (added by parallel tests) are readable but not
	// browsable.
	if !s.shared {
		s.ns.Objects().AddRef(n, id.HasComponent, true)
	}
}

// add creates variables with their first values (source time ts).
func (s *testServer) add(ts time.Time, kv ...any) {
	for i := 0; i+1 < len(kv); i += 2 {
		name := kv[i].(string)
		s.mu.Lock()
		_, exists := s.values[name]
		s.values[name] = dataValue(kv[i+1], ts)
		s.mu.Unlock()
		if !exists {
			s.addNode(name)
		}
	}
}

// set changes a value and notifies subscribers.
func (s *testServer) set(name string, v any, ts time.Time) {
	s.mu.Lock()
	s.values[name] = dataValue(v, ts)
	ns := s.NS
	s.mu.Unlock()
	s.ns.ChangeNotification(ua.NewStringNodeID(ns, name))
}

// setStatus gives a variable a status code (and no value).
func dataValue(v any, ts time.Time) *ua.DataValue {
	return &ua.DataValue{
		EncodingMask:    ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
		Value:           ua.MustVariant(v),
		SourceTimestamp: ts,
		ServerTimestamp: time.Now(),
	}
}

// node returns "ns=<n>;s=<name>" for the current server.
func (s *testServer) node(name string) string { return fmt.Sprintf("ns=%d;s=%s", s.NS, name) }

// stop stops the server like a process exit: its connections close.
// (gopcua's server.Close leaves its TCP connections open, so the clients
// connect through a proxy that is cut here.)
func (s *testServer) stop() {
	if s.srv == nil {
		return
	}
	s.px.Cut()
	s.srv.Close()
	s.cancel()
	s.srv = nil
}

// restart stops the server and starts a new one on the same address with
// the same nodes and values; extraNS may shift the namespace index.
func (s *testServer) restart(extraNS int) {
	s.stop()
	s.opts.extraNS = extraNS
	// The port was just released; retry briefly in case it lingers.
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", s.port))
		if err == nil {
			l.Close()
			break
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("port %d not released: %v", s.port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.start()
}

// collector gathers emitted scans.
type collector struct {
	mu    sync.Mutex
	scans []ferry.Scan
	ch    chan struct{}
}

func newCollector() *collector { return &collector{ch: make(chan struct{}, 1)} }

func (c *collector) emit(s ferry.Scan) {
	c.mu.Lock()
	c.scans = append(c.scans, s)
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

// last returns the latest sample of every point seen since from (an
// index into the scans).
func (c *collector) latest(from int) map[string]ferry.Sample {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]ferry.Sample{}
	for _, sc := range c.scans[min(from, len(c.scans)):] {
		for _, s := range sc.Samples {
			out[s.Point] = s
		}
	}
	return out
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.scans)
}

// waitFor waits until cond holds for the latest samples since from.
func (c *collector) waitFor(t *testing.T, from int, what string, cond func(map[string]ferry.Sample) bool) map[string]ferry.Sample {
	t.Helper()
	deadline := time.NewTimer(60 * time.Second) // generous: the test machine may be loaded
	defer deadline.Stop()
	for {
		m := c.latest(from)
		if cond(m) {
			return m
		}
		select {
		case <-c.ch:
		case <-time.After(50 * time.Millisecond):
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; latest samples: %v", what, m)
		}
	}
}

// runDriver runs d until the test ends.
func runDriver(t *testing.T, d *Driver, c *collector) {
	t.Helper()
	testutil.Run(t, "Run", 15*time.Second, func(ctx context.Context) error { return d.Run(ctx, c.emit) })
}

// logCapture is a slog handler that keeps every record.
type logCapture struct {
	mu   *sync.Mutex
	recs *[]slog.Record
}

func newLogCapture() logCapture { return logCapture{mu: &sync.Mutex{}, recs: &[]slog.Record{}} }

func (l logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (l logCapture) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	*l.recs = append(*l.recs, r.Clone())
	l.mu.Unlock()
	return nil
}
func (l logCapture) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l logCapture) WithGroup(string) slog.Handler      { return l }

// count returns how many records have msg and, when attr is not "", an
// attribute attr=val.
func (l logCapture) count(msg, attr, val string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range *l.recs {
		if r.Message != msg {
			continue
		}
		ok := attr == ""
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == attr && a.Value.String() == val {
				ok = true
			}
			return true
		})
		if ok {
			n++
		}
	}
	return n
}
