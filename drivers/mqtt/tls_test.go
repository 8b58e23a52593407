package mqtt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// testPKI is a CA with a server and a client certificate, as PEM files.
type testPKI struct {
	dir                       string
	caFile, certFile, keyFile string // the client's
	otherCA                   string // a CA that signed nothing here
	serverCert                tls.Certificate
	pool                      *x509.CertPool
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	p := &testPKI{dir: dir}
	caKey, caCert, caDER := makeCA(t, "ferry test CA")
	p.pool = x509.NewCertPool()
	p.pool.AddCert(caCert)
	p.caFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER)
	_, _, otherDER := makeCA(t, "another CA")
	p.otherCA = writePEM(t, dir, "other-ca.pem", "CERTIFICATE", otherDER)

	srvKey, srvDER := makeLeaf(t, caKey, caCert, "broker.plant.local", x509.ExtKeyUsageServerAuth)
	p.serverCert = tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}

	cliKey, cliDER := makeLeaf(t, caKey, caCert, "ferry-gateway", x509.ExtKeyUsageClientAuth)
	p.certFile = writePEM(t, dir, "client.pem", "CERTIFICATE", cliDER)
	keyDER, err := x509.MarshalECPrivateKey(cliKey)
	if err != nil {
		t.Fatal(err)
	}
	p.keyFile = writePEM(t, dir, "client-key.pem", "EC PRIVATE KEY", keyDER)
	return p
}

var serial int64

func makeCA(t *testing.T, cn string) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, der
}

func makeLeaf(t *testing.T, caKey *ecdsa.PrivateKey, ca *x509.Certificate, cn string, usage x509.ExtKeyUsage) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTLS connects to a broker that requires a client certificate signed
// by the test CA, checking the broker by CA and server name; and shows the
// errors when the CA is wrong or no client certificate is given.
func TestTLS(t *testing.T) {
	pki := newPKI(t)
	b := startBroker(t, brokerOpts{tls: &tls.Config{
		Certificates: []tls.Certificate{pki.serverCert},
		ClientCAs:    pki.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}})
	broker := "ssl://" + b.addr

	tests := []struct {
		name    string
		tls     TLS
		wantErr string // in the device's last error; "" = works
	}{
		{"client certificate", TLS{CA: pki.caFile, Cert: pki.certFile, Key: pki.keyFile, ServerName: "broker.plant.local"}, ""},
		{"wrong CA", TLS{CA: pki.otherCA, Cert: pki.certFile, Key: pki.keyFile, ServerName: "broker.plant.local"}, "certificate signed by unknown authority"},
		{"wrong server name", TLS{CA: pki.caFile, Cert: pki.certFile, Key: pki.keyFile, ServerName: "other.local"}, "other.local"},
		{"no client certificate", TLS{CA: pki.caFile, ServerName: "broker.plant.local"}, "certificate"},
		{"missing CA file", TLS{CA: filepath.Join(pki.dir, "nope.pem")}, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newCommitStore(t)
			dev := jsonDevice("secure", broker, "tls/t", Point{Name: "v", Path: "v"})
			dev.Config.TLS = tt.tls
			dev.Config.ClientID = "ferry-tls-" + strings.ReplaceAll(tt.name, " ", "-")
			r := start(t, []Device{dev}, testOptions(nil), store.emit)
			if tt.wantErr != "" {
				waitFor(t, "connection error", 5*time.Second, func() bool {
					return strings.Contains(r.d.DeviceStatus()[0].LastError, tt.wantErr)
				})
				st := r.d.DeviceStatus()[0]
				if st.Connected {
					t.Fatal("connected")
				}
				t.Logf("last error: %s", st.LastError)
				return
			}
			r.waitSubscribed(t, b, 1)
			b.publish(t, "tls/t", []byte(`{"v":42}`), 1, false)
			waitFor(t, "message over TLS", 5*time.Second, func() bool { return len(store.samples("secure")) == 1 })
		})
	}
}

// TestWebsocket connects over ws://.
func TestWebsocket(t *testing.T) {
	b := startBroker(t, brokerOpts{})
	addr := freePort(t)
	ws := listeners.NewWebsocket(listeners.Config{ID: "ws", Address: addr})
	if err := b.srv.AddListener(ws); err != nil {
		t.Fatal(err)
	}
	b.srv.Listeners.Serve("ws", b.srv.EstablishConnection)
	waitFor(t, "websocket listener", 5*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	store := newCommitStore(t)
	r := start(t, []Device{jsonDevice("web", "ws://"+addr+"/mqtt", "ws/t", Point{Name: "v", Path: "v"})}, testOptions(nil), store.emit)
	r.waitSubscribed(t, b, 1)
	b.publish(t, "ws/t", []byte(`{"v":1}`), 1, false)
	waitFor(t, "message over websocket", 5*time.Second, func() bool { return len(store.samples("web")) == 1 })
	waitFor(t, "acknowledged", 5*time.Second, func() bool { return b.inflight(r.d.ClientID()) == 0 })
}
