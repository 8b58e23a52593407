package opcua

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// serverCert makes a server certificate naming the given hosts (DNS names
// or IP addresses) and application URI ("" for none).
func serverCert(t *testing.T, uri string, hosts ...string) ([]byte, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "identity server"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature |
			x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign | x509.KeyUsageContentCommitment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if uri != "" {
		u, _ := url.Parse(uri)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// TestServerIdentity: a trusted server certificate that does not name the
// host dialled, or whose URI is not the application URI the server
// announces, is refused with a reason that says what to do; the check can
// be turned off per device; a certificate that names both connects.
func TestServerIdentity(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		uri      string
		hosts    []string
		mod      func(*Config)
		reason   string   // "" = connects
		mentions []string // in the device's last error and the log
	}{
		{"host and URI match", "urn:ferry:test:identity", []string{"localhost", "127.0.0.1"}, nil, "", nil},
		{"host not in certificate", "urn:ferry:test:identity", []string{"plc7.example"}, nil,
			"BadCertificateHostNameInvalid", []string{"plc7.example", "not 127.0.0.1", "check_server_host: false"}},
		{"host check off", "urn:ferry:test:identity", []string{"plc7.example"}, func(c *Config) { c.CheckServerHost = false }, "", nil},
		{"certificate without URI", "", []string{"127.0.0.1"}, nil,
			"BadCertificateUriInvalid", []string{"no application URI", "check_server_uri: false"}},
		{"URI check off", "", []string{"127.0.0.1"}, func(c *Config) { c.CheckServerURI = false }, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cert, key := serverCert(t, tt.uri, tt.hosts...)
			srv := &testServer{cert: cert, UAServer: testpeer.OPCUAServer(t, testpeer.UANamespace(testNS), testpeer.UASecurity(cert, key, "Basic256Sha256"))}
			srv.add(sourceTime, "Pressure", 4.5)
			dataDir := t.TempDir()
			trustServer(t, dataDir, srv)
			logs := newLogCapture()
			d, err := New([]Device{testDevice("boiler", srv.Endpoint(), tt.mod, Point{Name: "pressure", Node: srv.Node("Pressure")})},
				Options{DataDir: dataDir, Gateway: "gw1", Logger: slog.New(logs)})
			if err != nil {
				t.Fatal(err)
			}
			c := newCollector()
			runDriver(t, d, c)
			if tt.reason == "" {
				c.waitFor(t, 0, "a good value", func(m map[string]ferry.Sample) bool { s, ok := m["pressure"]; return ok && s.Quality.IsGood() })
				return
			}
			c.waitFor(t, 0, "Bad "+tt.reason, func(m map[string]ferry.Sample) bool { return m["pressure"].Quality == ferry.BadQuality(tt.reason) })
			st := d.DeviceStatus()[0]
			if st.Connected {
				t.Fatal("connected")
			}
			for _, want := range tt.mentions {
				if !strings.Contains(st.LastError, want) {
					t.Errorf("last error %q does not mention %q", st.LastError, want)
				}
			}
			if !logs.contains(tt.reason) {
				t.Errorf("no log line gives the reason %s", tt.reason)
			}
		})
	}
}

// contains reports whether a record's message or an attribute value
// contains s.
func (l logCapture) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range *l.recs {
		found := strings.Contains(r.Message, s)
		r.Attrs(func(a slog.Attr) bool {
			found = found || strings.Contains(a.Value.String(), s)
			return !found
		})
		if found {
			return true
		}
	}
	return false
}
