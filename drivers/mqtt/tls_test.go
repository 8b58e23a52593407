package mqtt

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
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
	write := func(name string, data []byte) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca := testutil.NewCA(t, "ferry test CA")
	client := ca.Issue(t, 3, "ferry-gateway", x509.ExtKeyUsageClientAuth)
	return &testPKI{
		dir:        dir,
		caFile:     write("ca.pem", ca.PEM),
		certFile:   write("client.pem", client.CertPEM),
		keyFile:    write("client-key.pem", client.KeyPEM),
		otherCA:    write("other-ca.pem", testutil.NewCA(t, "another CA").PEM),
		serverCert: ca.Issue(t, 2, "broker.plant.local", x509.ExtKeyUsageServerAuth).TLS(),
		pool:       ca.Pool(),
	}
}

// TestTLS connects to a broker that requires a client certificate signed
// by the test CA, checking the broker by CA and server name; and shows the
// errors when the CA is wrong or no client certificate is given.
func TestTLS(t *testing.T) {
	pki := newPKI(t)
	b := testpeer.Broker(t, testpeer.BrokerTLS(&tls.Config{
		Certificates: []tls.Certificate{pki.serverCert},
		ClientCAs:    pki.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}))
	broker := b.URL() // ssl://

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
			b.Publish(t, "tls/t", []byte(`{"v":42}`), 1, false)
			waitFor(t, "message over TLS", 5*time.Second, func() bool { return len(store.samples("secure")) == 1 })
		})
	}
}

// TestWebsocket connects over ws://.
func TestWebsocket(t *testing.T) {
	b := testpeer.Broker(t)
	url := b.ServeWebsocket(t) // its listener is open: no wait for it
	store := newCommitStore(t)
	r := start(t, []Device{jsonDevice("web", url, "ws/t", Point{Name: "v", Path: "v"})}, testOptions(nil), store.emit)
	r.waitSubscribed(t, b, 1)
	b.Publish(t, "ws/t", []byte(`{"v":1}`), 1, false)
	waitFor(t, "message over websocket", 5*time.Second, func() bool { return len(store.samples("web")) == 1 })
	waitFor(t, "acknowledged", 5*time.Second, func() bool { return b.Inflight(r.d.ClientID()) == 0 })
}
