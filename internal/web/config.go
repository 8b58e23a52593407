package web

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-edge/ferry/internal/setting"
)

// Off is the Listen value that disables the listener.
const Off = "off"

// DefaultListen is the default address: loopback only.
const DefaultListen = "127.0.0.1:9440"

// Config is the `http:` section: the local listener for /metrics,
// /healthz, /readyz and the API.
//
// The listener binds to loopback by default. A non-loopback address is
// allowed without TLS or basic auth (a plant network may scrape /metrics
// in the clear), but Run logs a warning at start saying what is exposed.
type Config struct {
	Listen    string     `yaml:"listen" doc:"host:port of the local HTTP listener (/metrics, /healthz, /readyz, /api); \"off\" disables it"`
	TLS       *TLSConfig `yaml:"tls" doc:"serve HTTPS instead of HTTP"`
	BasicAuth *BasicAuth `yaml:"basic_auth" doc:"require HTTP basic auth on every path except /healthz"`
	// Operator is the credential POST /api/commands requires (writes to
	// devices); without it the HTTP API takes no commands.
	Operator *BasicAuth `yaml:"operator" doc:"the operator credential (basic auth, distinct from basic_auth) that POST /api/commands requires; without it HTTP takes no commands"`
	// Sparklines is how much history the console keeps per numeric point
	// for its sparklines, in buckets of 5 s (about 144 bytes per minute
	// per point: 7 MB for 10,000 points over 5 minutes); 0 turns them off.
	Sparklines time.Duration `yaml:"sparklines" doc:"history the web console keeps per numeric point for its sparklines (5s buckets, ~144 bytes per minute per point); 0 turns sparklines off"`
	// AllowedHosts are the host names, besides IP addresses, localhost
	// and the listen host, that requests may name in their Host header;
	// any other is refused with 421 (DNS rebinding).
	AllowedHosts []string `yaml:"allowed_hosts" doc:"host names (no port) clients may use to reach the listener, besides IP addresses, localhost and the listen host; requests naming any other Host are refused with 421 (DNS rebinding protection)"`
	// Pprof mounts Go's profiles on /debug/pprof/ (off by default).
	Pprof bool `yaml:"pprof" doc:"serve Go's profiles on /debug/pprof/ (same listener and authentication; ?seconds capped at 60)"`
}

// DefaultSparklines is the default Sparklines: five minutes.
const DefaultSparklines = 5 * time.Minute

// MaxSparklines bounds Sparklines: an hour is 8.6 KB per point.
const MaxSparklines = time.Hour

// TLSConfig is the `http.tls:` block. The certificate and key are read at
// start and read again when either file changes, so a renewed certificate
// is picked up without a restart.
type TLSConfig struct {
	Cert     string `yaml:"cert" doc:"absolute path of the PEM certificate (chain)"`
	Key      string `yaml:"key" doc:"absolute path of the PEM private key"`
	ClientCA string `yaml:"client_ca" doc:"absolute path of PEM CA certificates; when set, clients must present a certificate signed by one of them"`
}

// BasicAuth is the `http.basic_auth:` block. Only a bcrypt hash of the
// password is configured, never the password itself.
type BasicAuth struct {
	Username     string         `yaml:"username" doc:"the user name clients send"`
	PasswordHash setting.Secret `yaml:"password_hash" doc:"bcrypt hash of the password, e.g. from htpasswd -nBC 12 USER (or password_hash_file: PATH)"`
}

// SetDefaults sets the defaults applied before decoding.
func (c *Config) SetDefaults() {
	c.Listen = DefaultListen
	c.Sparklines = DefaultSparklines
}

// Disabled reports whether the listener is turned off.
func (c *Config) Disabled() bool { return c.Listen == Off }

// Validate checks the section; paths are relative to it. It does no I/O:
// certificate files are read by Server.Listen.
func (c *Config) Validate() error {
	var errs setting.Errors
	switch {
	case c.Listen == "":
		errs.Add("listen", "is required (use %q to disable)", Off)
	case c.Listen == Off:
		return nil
	default:
		if err := checkListen(c.Listen); err != "" {
			errs.Add("listen", "%q %s", c.Listen, err)
		}
	}
	if d := c.Sparklines; d != 0 && (d < 5*time.Second || d > MaxSparklines) {
		errs.Add("sparklines", "%v is outside 5s..%v (0 turns sparklines off)", d, MaxSparklines)
	}
	for i, h := range c.AllowedHosts {
		if canonicalHost(h) == "" {
			errs.Add(fmt.Sprintf("allowed_hosts[%d]", i), "%q is not a host name (write the name alone: gateway.plant.local)", h)
		}
	}
	if t := c.TLS; t != nil {
		for _, f := range []struct{ key, path string }{{"cert", t.Cert}, {"key", t.Key}} {
			if f.path == "" {
				errs.Add("tls."+f.key, "is required when tls is set")
			} else if !filepath.IsAbs(f.path) {
				errs.Add("tls."+f.key, "%q must be an absolute path", f.path)
			}
		}
		if t.ClientCA != "" && !filepath.IsAbs(t.ClientCA) {
			errs.Add("tls.client_ca", "%q must be an absolute path", t.ClientCA)
		}
	}
	if a := c.BasicAuth; a != nil {
		switch {
		case a.Username == "":
			errs.Add("basic_auth.username", "is required when basic_auth is set")
		case strings.ContainsAny(a.Username, ":\r\n"):
			errs.Add("basic_auth.username", "%q may not contain ':' or line breaks", a.Username)
		}
		if a.PasswordHash == "" {
			errs.Add("basic_auth.password_hash", "is required when basic_auth is set (a bcrypt hash, e.g. from htpasswd -nBC 12 %s)", a.Username)
		} else if _, err := bcrypt.Cost([]byte(a.PasswordHash.Reveal())); err != nil {
			// The hash itself is never printed.
			errs.Add("basic_auth.password_hash", "is not a bcrypt hash ($2a$, $2b$ or $2y$…): %v", err)
		}
	}
	errs.Merge("operator", c.validateOperator())
	return errs.Err()
}

// checkListen returns "" when addr is a usable host:port, else what is
// wrong with it.
func checkListen(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "is not host:port (e.g. 127.0.0.1:9440, [::1]:9440, :9440)"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "has a port that is not a number in 0..65535"
	}
	if strings.ContainsAny(host, " /") {
		return "has an invalid host"
	}
	return ""
}
