package opcua

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
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
}

// testServer is an in-process gopcua server (testpeer.UAServer) holding
// one variable per name, whose value the test sets.
type testServer struct {
	*testpeer.UAServer
	cert []byte // the server's certificate (secure servers)
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
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)}, // the tests dial 127.0.0.1
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

// startServer starts a server; it is stopped at cleanup.
func startServer(t testing.TB, o serverOpts) *testServer {
	t.Helper()
	opts, cert := o.options(t)
	return &testServer{UAServer: testpeer.OPCUAServer(t, opts...), cert: cert}
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
		opts, cert := o.options(t)
		// Parallel tests add their nodes: gopcua's Node.AddRef is not
		// safe for concurrent use, so they are readable, not browsable.
		srv, err := testpeer.NewOPCUAServer(append(opts, testpeer.UAUnbrowsable())...)
		if err != nil {
			t.Fatal(err)
		}
		*p = &testServer{UAServer: srv, cert: cert}
	}
	return *p
}

func closeShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	for _, s := range []*testServer{shared.none, shared.secure} {
		if s != nil {
			s.Close()
		}
	}
}

// options are the testpeer options for o, and the certificate of a
// secure server.
func (o serverOpts) options(t testing.TB) ([]testpeer.UAOption, []byte) {
	t.Helper()
	opts := []testpeer.UAOption{testpeer.UANamespace(testNS), testpeer.UAExtraNamespaces(o.extraNS)}
	if o.none {
		opts = append(opts, testpeer.UANone())
	}
	var cert []byte
	if o.secure {
		var key *rsa.PrivateKey
		cert, key = selfSigned(t, "test server", "urn:ferry:test:server", false, nil, nil, time.Now().Add(24*time.Hour))
		opts = append(opts, testpeer.UASecurity(cert, key), testpeer.UAAuth(ua.UserTokenTypeUserName, ua.UserTokenTypeCertificate))
	}
	return opts, cert
}

// add creates variables with their first values (source time ts);
// lockedNode is a variable nobody may read.
func (s *testServer) add(ts time.Time, kv ...any) {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == lockedNode {
			s.AddLocked(lockedNode)
			continue
		}
		s.Add(ts, kv[i], kv[i+1])
	}
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
