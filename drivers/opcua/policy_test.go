package opcua

import (
	"log/slog"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/setting"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// TestPolicySessions opens a real session (secure channel, CreateSession,
// ActivateSession, then reads) with each of the newer security policies
// against the gopcua server, in both modes, not only endpoint selection.
// The server offers every policy, so the log proves which one was used.
func TestPolicySessions(t *testing.T) {
	t.Parallel()
	cert, key := selfSigned(t, "policy server", "urn:ferry:test:server", false, nil, nil, time.Now().Add(24*time.Hour))
	srv := &testServer{cert: cert, UAServer: testpeer.OPCUAServer(t,
		testpeer.UANamespace(testNS),
		testpeer.UASecurity(cert, key, "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"),
		testpeer.UAAuth(ua.UserTokenTypeUserName))}
	srv.add(sourceTime, "Pressure", 4.5)

	tests := []struct {
		policy, mode string
		auth         Auth
	}{
		{"Aes128_Sha256_RsaOaep", "SignAndEncrypt", Auth{Username: "operator", Password: setting.Secret("s3cret")}},
		{"Aes128_Sha256_RsaOaep", "Sign", Auth{}},
		{"Aes256_Sha256_RsaPss", "SignAndEncrypt", Auth{Username: "operator", Password: setting.Secret("s3cret")}},
		{"Aes256_Sha256_RsaPss", "Sign", Auth{}},
	}
	for _, tt := range tests {
		t.Run(tt.policy+" "+tt.mode, func(t *testing.T) {
			t.Parallel()
			dataDir := t.TempDir()
			trustServer(t, dataDir, srv)
			dev := testDevice("boiler", srv.Endpoint(), func(c *Config) {
				c.SecurityPolicy, c.SecurityMode, c.Auth = tt.policy, tt.mode, tt.auth
			}, Point{Name: "pressure", Node: srv.Node("Pressure")})
			if err := dev.Validate(); err != nil {
				t.Fatal(err)
			}
			logs := newLogCapture()
			d, err := New([]Device{dev}, Options{DataDir: dataDir, Gateway: "gw1", Logger: slog.New(logs)})
			if err != nil {
				t.Fatal(err)
			}
			c := newCollector()
			runDriver(t, d, c)
			got := c.waitFor(t, 0, "a good value", func(m map[string]ferry.Sample) bool { s, ok := m["pressure"]; return ok && s.Quality.IsGood() })
			if !got["pressure"].Value.Equal(ferry.FloatValue(4.5)) {
				t.Errorf("value %v", got["pressure"].Value)
			}
			if n := logs.count("session open", "policy", tt.policy); n == 0 {
				t.Errorf("no session opened with policy %s", tt.policy)
			}
			if n := logs.count("session open", "mode", tt.mode); n == 0 {
				t.Errorf("no session opened in mode %s", tt.mode)
			}
		})
	}
}
