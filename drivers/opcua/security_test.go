package opcua

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/setting"
)

// trustServer puts the test server's certificate into dataDir's trusted
// directory, as `ferry pki trust` would.
func trustServer(t *testing.T, dataDir string, srv *testServer) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "server.der")
	if err := os.WriteFile(f, srv.cert, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewPKI(dataDir).Trust(f); err != nil {
		t.Fatal(err)
	}
}

// TestSecureSessions connects with signing and encryption, generated
// application certificates and each login type.
func TestSecureSessions(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t, true)
	srv.add(sourceTime, "Pressure", 4.5)

	userCert, userKey := selfSigned(t, "operator", "", false, nil, nil, time.Now().Add(time.Hour))
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "user.der"), filepath.Join(dir, "user.pem")
	os.WriteFile(certFile, userCert, 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(userKey)}), 0o600)

	tests := []struct {
		name   string
		policy string
		mode   string
		auth   Auth
	}{
		{"Basic256Sha256 SignAndEncrypt username", "Basic256Sha256", "SignAndEncrypt", Auth{Username: "operator", Password: setting.Secret("s3cret")}},
		{"Basic256Sha256 Sign anonymous", "Basic256Sha256", "Sign", Auth{}},
		{"strongest SignAndEncrypt certificate login", "", "SignAndEncrypt", Auth{CertFile: certFile, KeyFile: keyFile}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			trustServer(t, dataDir, srv)
			dev := testDevice("boiler", srv.Endpoint(), func(c *Config) {
				c.SecurityPolicy, c.SecurityMode, c.Auth = tt.policy, tt.mode, tt.auth
			}, Point{Name: "pressure", Node: srv.Node("Pressure")})
			if err := dev.Validate(); err != nil {
				t.Fatal(err)
			}
			d, err := New([]Device{dev}, Options{DataDir: dataDir, Gateway: "gw1"})
			if err != nil {
				t.Fatal(err)
			}
			c := newCollector()
			runDriver(t, d, c)
			got := c.waitFor(t, 0, "a good value", func(m map[string]ferry.Sample) bool { s, ok := m["pressure"]; return ok && s.Quality.IsGood() })
			if !got["pressure"].Value.Equal(ferry.FloatValue(4.5)) {
				t.Errorf("value %v", got["pressure"].Value)
			}
			// The generated application certificate carries ferry's URI.
			id, err := NewPKI(dataDir).Own("urn:other", "")
			if err != nil {
				t.Fatal(err)
			}
			if id.ApplicationURI != "urn:ferry:gw1" {
				t.Errorf("own certificate URI %q, want urn:ferry:gw1", id.ApplicationURI)
			}
		})
	}
}

// TestSelectEndpoint picks endpoints from what the gopcua server offers.
func TestSelectEndpoint(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	eps, err := opcua.GetEndpoints(ctx, srv.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	noneOnly := []*ua.EndpointDescription{}
	for _, ep := range eps {
		if ep.SecurityPolicyURI == ua.SecurityPolicyURINone {
			noneOnly = append(noneOnly, ep)
		}
	}
	tests := []struct {
		name       string
		eps        []*ua.EndpointDescription
		policy     string
		mode       string
		allow      bool
		wantPolicy string
		wantMode   ua.MessageSecurityMode
		wantErr    error
	}{
		{"strongest by default", eps, "", "SignAndEncrypt", false, ua.SecurityPolicyURIAes256Sha256RsaPss, ua.MessageSecurityModeSignAndEncrypt, nil},
		{"strongest signed", eps, "", "Sign", false, ua.SecurityPolicyURIAes256Sha256RsaPss, ua.MessageSecurityModeSign, nil},
		{"configured policy", eps, "Basic256Sha256", "SignAndEncrypt", false, ua.SecurityPolicyURIBasic256Sha256, ua.MessageSecurityModeSignAndEncrypt, nil},
		{"configured None", eps, "None", "SignAndEncrypt", true, ua.SecurityPolicyURINone, ua.MessageSecurityModeNone, nil},
		{"not offered", eps, "Aes128_Sha256_RsaOaep", "SignAndEncrypt", false, "", 0, ErrNoEndpoint},
		{"only None, refused", noneOnly, "", "SignAndEncrypt", false, "", 0, ErrInsecure},
		{"only None, allowed", noneOnly, "", "SignAndEncrypt", true, ua.SecurityPolicyURINone, ua.MessageSecurityModeNone, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Config{SecurityPolicy: tt.policy, SecurityMode: tt.mode, AllowInsecure: tt.allow}
			ep, err := selectEndpoint(tt.eps, c)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			// The sentinel is short; the advice is wrapped around it.
			if errors.Is(err, ErrInsecure) && !strings.Contains(err.Error(), "allow_insecure: true") {
				t.Errorf("err %q does not say what to set", err)
			}
			if err != nil {
				return
			}
			if ep.SecurityPolicyURI != tt.wantPolicy || ep.SecurityMode != tt.wantMode {
				t.Errorf("got %s %s, want %s %s", ep.SecurityPolicyURI, ep.SecurityMode, tt.wantPolicy, tt.wantMode)
			}
		})
	}
}

// TestUntrustedServer: an unknown server certificate is refused with a
// message that says how to trust it, lands in pki/rejected, and trusting
// it (as `ferry pki trust` does) lets the next retry connect.
func TestUntrustedServer(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t, true)
	srv.add(sourceTime, "Pressure", 4.5)
	dataDir := t.TempDir()
	d, err := New([]Device{testDevice("boiler", srv.Endpoint(), nil, Point{Name: "pressure", Node: srv.Node("Pressure")})},
		Options{DataDir: dataDir, Gateway: "gw1"})
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	runDriver(t, d, c)
	c.waitFor(t, 0, "Bad BadCertificateUntrusted", func(m map[string]ferry.Sample) bool {
		return m["pressure"].Quality == ferry.BadQuality("BadCertificateUntrusted")
	})
	st := d.DeviceStatus()[0]
	if st.Connected {
		t.Fatal("connected to an untrusted server")
	}
	rejected, _ := filepath.Glob(filepath.Join(dataDir, "pki", "rejected", "*.der"))
	if len(rejected) != 1 {
		t.Fatalf("rejected certificates: %v", rejected)
	}
	b, _ := os.ReadFile(rejected[0])
	if string(b) != string(srv.cert) {
		t.Error("the rejected file is not the server's certificate")
	}
	for _, want := range []string{"BadCertificateUntrusted", "ferry pki trust " + rejected[0], filepath.Join(dataDir, "pki", "trusted")} {
		if !strings.Contains(st.LastError, want) {
			t.Errorf("error %q does not mention %q", st.LastError, want)
		}
	}

	dst, err := NewPKI(dataDir).Trust(rejected[0])
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(dst) != filepath.Join(dataDir, "pki", "trusted") {
		t.Errorf("trusted as %s", dst)
	}
	if _, err := os.Stat(rejected[0]); !os.IsNotExist(err) {
		t.Errorf("still in rejected/: %v", err)
	}
	n := c.count()
	c.waitFor(t, n, "a good value after trusting", func(m map[string]ferry.Sample) bool { s, ok := m["pressure"]; return ok && s.Quality.IsGood() })
}

// TestNoneRefused: policy None needs allow_insecure, in the config and at
// run time (a server that offers only None).
func TestNoneRefused(t *testing.T) {
	dev := testDevice("old", "opc.tcp://127.0.0.1:4840", func(c *Config) { c.SecurityPolicy = "None" }, Point{Name: "p", Node: "i=2258"})
	err := dev.Validate()
	if err == nil || !strings.Contains(err.Error(), "opcua.security_policy: None sends values and passwords unsigned and unencrypted; set allow_insecure: true") {
		t.Fatalf("Validate: %v", err)
	}

	t.Parallel()
	srv := sharedServer(t, false)
	srv.add(sourceTime, "Pressure", 1.0)
	d := newDriver(t, testDevice("old", srv.Endpoint(), nil, Point{Name: "pressure", Node: srv.Node("Pressure")}))
	c := newCollector()
	runDriver(t, d, c)
	c.waitFor(t, 0, "Bad BadSecurityPolicyRejected", func(m map[string]ferry.Sample) bool {
		return m["pressure"].Quality == ferry.BadQuality("BadSecurityPolicyRejected")
	})
	st := d.DeviceStatus()[0]
	if st.Connected || !strings.Contains(st.LastError, "allow_insecure: true") {
		t.Errorf("status %+v", st)
	}
}

// TestAccessDeniedMapping: the in-process server accepts any password, so
// the mapping of a refused login is checked on ferry's side.
func TestAccessDeniedMapping(t *testing.T) {
	c := &Config{Auth: Auth{Username: "operator", Password: "wrong"}}
	err := explainConnect(ua.StatusBadUserAccessDenied, c, "/var/lib/ferry/pki/own/cert.der")
	if !errors.Is(err, ua.StatusBadUserAccessDenied) {
		t.Errorf("errors.Is lost the status: %v", err)
	}
	if !strings.Contains(err.Error(), `user "operator"`) || !strings.Contains(err.Error(), "BadUserAccessDenied") || strings.Contains(err.Error(), "wrong") {
		t.Errorf("message %q", err)
	}
	if r := reasonOf(err); r != "BadUserAccessDenied" {
		t.Errorf("reason %q", r)
	}
	// Not a transport problem: the samples keep the reason even after the
	// device was connected once.
	d := newDriver(t, testDevice("x", "opc.tcp://127.0.0.1:1", insecure, Point{Name: "p", Node: "i=1"}))
	dv := d.devs[0]
	dv.everConnected = true
	if r := dv.fail(err); r != "BadUserAccessDenied" {
		t.Errorf("sample reason %q", r)
	}
	if r := dv.fail(errLost); r != ferry.ReasonDisconnected {
		t.Errorf("sample reason %q", r)
	}

	err = explainConnect(ua.StatusBadSecurityChecksFailed, c, "/data/pki/own/cert.der")
	if !strings.Contains(err.Error(), "/data/pki/own/cert.der") || reasonOf(err) != "BadSecurityChecksFailed" {
		t.Errorf("BadSecurityChecksFailed: %v (%s)", err, reasonOf(err))
	}
}

// TestUserCertificateMissing: a user certificate that cannot be read
// makes the points Bad "user certificate" and the status names the file.
func TestUserCertificateMissing(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t, true)
	srv.add(sourceTime, "Pressure", 4.5)
	dataDir := t.TempDir()
	trustServer(t, dataDir, srv)
	d, err := New([]Device{testDevice("boiler", srv.Endpoint(), func(c *Config) {
		c.Auth = Auth{CertFile: "/nonexistent/user.der", KeyFile: "/nonexistent/user.key"}
	}, Point{Name: "pressure", Node: srv.Node("Pressure")})}, Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	runDriver(t, d, c)
	c.waitFor(t, 0, "Bad user certificate", func(m map[string]ferry.Sample) bool {
		return m["pressure"].Quality == ferry.BadQuality("user certificate")
	})
	if st := d.DeviceStatus()[0]; !strings.Contains(st.LastError, "/nonexistent/user.der") {
		t.Errorf("last error %q", st.LastError)
	}
}
