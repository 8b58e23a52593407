package web

import (
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-edge/ferry/internal/setting"
)

func mustHash(t testing.TB, pw string) setting.Secret {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return setting.Secret(h)
}

func TestConfigValidate(t *testing.T) {
	hash := mustHash(t, "s3cret")
	tests := []struct {
		name string
		cfg  Config
		want []string // "path: message fragment"; none means valid
	}{
		{name: "default", cfg: func() Config { var c Config; c.SetDefaults(); return c }()},
		{name: "off", cfg: Config{Listen: "off", TLS: &TLSConfig{}}},
		{name: "all interfaces", cfg: Config{Listen: ":9440"}},
		{name: "ipv6", cfg: Config{Listen: "[::1]:9440"}},
		{name: "hostname", cfg: Config{Listen: "localhost:0"}},
		{name: "empty", cfg: Config{}, want: []string{"listen: is required"}},
		{name: "no port", cfg: Config{Listen: "127.0.0.1"}, want: []string{`listen: "127.0.0.1" is not host:port`}},
		{name: "bad port", cfg: Config{Listen: "127.0.0.1:http"}, want: []string{"listen: \"127.0.0.1:http\" has a port"}},
		{name: "port range", cfg: Config{Listen: ":70000"}, want: []string{"has a port that is not a number in 0..65535"}},
		{name: "tls ok", cfg: Config{Listen: ":9440", TLS: &TLSConfig{Cert: "/etc/ferry/tls.crt", Key: "/etc/ferry/tls.key", ClientCA: "/etc/ferry/ca.pem"}}},
		{name: "tls missing", cfg: Config{Listen: ":9440", TLS: &TLSConfig{}}, want: []string{"tls.cert: is required", "tls.key: is required"}},
		{name: "tls relative", cfg: Config{Listen: ":9440", TLS: &TLSConfig{Cert: "tls.crt", Key: "/k", ClientCA: "ca.pem"}},
			want: []string{`tls.cert: "tls.crt" must be an absolute path`, `tls.client_ca: "ca.pem" must be an absolute path`}},
		{name: "auth ok", cfg: Config{Listen: ":9440", BasicAuth: &BasicAuth{Username: "prom", PasswordHash: hash}}},
		{name: "auth 2y", cfg: Config{Listen: ":9440", BasicAuth: &BasicAuth{Username: "prom",
			PasswordHash: "$2y$05$" + setting.Secret(strings.TrimPrefix(hash.Reveal(), "$2a$05$"))}}},
		{name: "auth missing", cfg: Config{Listen: ":9440", BasicAuth: &BasicAuth{}},
			want: []string{"basic_auth.username: is required", "basic_auth.password_hash: is required"}},
		{name: "auth colon", cfg: Config{Listen: ":9440", BasicAuth: &BasicAuth{Username: "a:b", PasswordHash: hash}},
			want: []string{`basic_auth.username: "a:b" may not contain`}},
		{name: "sparklines off", cfg: Config{Listen: ":9440", Sparklines: 0}},
		{name: "sparklines an hour", cfg: Config{Listen: ":9440", Sparklines: time.Hour}},
		{name: "sparklines too short", cfg: Config{Listen: ":9440", Sparklines: time.Second},
			want: []string{"sparklines: 1s is outside 5s..1h0m0s (0 turns sparklines off)"}},
		{name: "sparklines too long", cfg: Config{Listen: ":9440", Sparklines: 2 * time.Hour},
			want: []string{"sparklines: 2h0m0s is outside 5s..1h0m0s"}},
		{name: "plain password", cfg: Config{Listen: ":9440", BasicAuth: &BasicAuth{Username: "prom", PasswordHash: "hunter2-is-my-password"}},
			want: []string{"basic_auth.password_hash: is not a bcrypt hash"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			got := setting.Flatten(err)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(got), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i].Error(), w) {
					t.Errorf("error %d = %q, want it to contain %q", i, got[i].Error(), w)
				}
			}
			if strings.Contains(errString(err), "hunter2") {
				t.Errorf("the error prints the configured secret: %v", err)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestNewRefusesInvalidConfig(t *testing.T) {
	if _, err := New(Options{Config: Config{Listen: "nope"}}); err == nil {
		t.Fatal("New accepted an invalid config")
	}
}

// FuzzValidate feeds arbitrary listen addresses, paths and hashes to
// Validate: it must never panic, and what it accepts must be usable.
func FuzzValidate(f *testing.F) {
	f.Add("127.0.0.1:9440", "/c", "/k", "prom", "$2a$05$abcdefghijklmnopqrstuuFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAK")
	f.Add(":0", "", "rel", "a:b", "")
	f.Add("[::1]:65536", "/c", "", "", "$2y$99$x")
	f.Add("off", "", "", "", "")
	f.Fuzz(func(t *testing.T, listen, cert, key, user, hash string) {
		c := Config{Listen: listen, TLS: &TLSConfig{Cert: cert, Key: key}, BasicAuth: &BasicAuth{Username: user, PasswordHash: setting.Secret(hash)}}
		if err := c.Validate(); err == nil && listen != Off {
			if _, _, err := net.SplitHostPort(listen); err != nil {
				t.Fatalf("accepted listen %q: %v", listen, err)
			}
			if _, err := bcrypt.Cost([]byte(hash)); err != nil {
				t.Fatalf("accepted hash %q: %v", hash, err)
			}
		}
	})
}
