package uplink

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/ferry-edge/ferry/internal/tlsfile"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry/internal/backoff"
)

// errCredentials marks a local problem with a credentials, NKey or TLS
// file: fixing the file fixes it, the server is not to blame.
var errCredentials = errors.New("credentials")

// natsOptions builds the client options of one connection attempt. Files
// (creds, nkey seed, TLS) are read here, so a fixed or renewed file is used
// by the next attempt.
func natsOptions(c *NATSConfig, name string) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(c.ConnectTimeout),
		nats.PingInterval(20 * time.Second),
		nats.MaxPingsOutstanding(3),
		// The buffer is ferry's reconnect buffer: while disconnected a
		// publish fails at once and its record goes back to the buffer.
		nats.ReconnectBufSize(-1),
	}
	switch {
	case c.Creds != "":
		if err := checkCreds(c.Creds, time.Now()); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(c.Creds))
	case c.NKey != "":
		o, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return nil, fmt.Errorf("%w: nkey seed file: %v", errCredentials, err)
		}
		opts = append(opts, o)
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token.Reveal()))
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password.Reveal()))
	}
	if c.TLS != nil || usesTLS(c.URLs) {
		tc, err := tlsConfig(c.TLS)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

// credsJWT finds the user JWT in a creds file, as nats.go does: the
// first block between dashed lines.
var credsJWT = regexp.MustCompile(`\s*(?:(?:[-]{3,}.*[-]{3,}\r?\n)([\w\-.=]+)(?:\r?\n[-]{3,}.*[-]{3,}\r?\n))`)

// checkCreds reads the creds file at path and refuses it when it holds no
// user JWT or the JWT has expired: the server would only say
// "Authorization Violation", which does not tell an expired JWT from a
// user it does not know.
func checkCreds(path string, now time.Time) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: creds file: %v", errCredentials, err)
	}
	m := credsJWT.FindSubmatch(b)
	if m == nil {
		return fmt.Errorf("%w: creds file %s holds no user JWT", errCredentials, path)
	}
	parts := strings.Split(string(m[1]), ".")
	if len(parts) != 3 {
		return fmt.Errorf("%w: creds file %s: the user JWT is not a JWT", errCredentials, path)
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	var claims struct {
		Name    string `json:"name"`
		Expires int64  `json:"exp"`
	}
	if err == nil {
		err = json.Unmarshal(payload, &claims)
	}
	if err != nil {
		return fmt.Errorf("%w: creds file %s: the user JWT does not decode: %v", errCredentials, path, err)
	}
	if claims.Expires != 0 && !now.Before(time.Unix(claims.Expires, 0)) {
		return fmt.Errorf("%w: creds file %s: the JWT of user %q expired at %s; renew the file", errCredentials, path, claims.Name,
			time.Unix(claims.Expires, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

// credsErr is checkCreds of cfg's creds file now, nil without one.
func credsErr(c *NATSConfig) error {
	if c.Creds == "" {
		return nil
	}
	return checkCreds(c.Creds, time.Now())
}

func usesTLS(urls []string) bool {
	for _, u := range urls {
		if strings.HasPrefix(u, "tls://") || strings.HasPrefix(u, "wss://") {
			return true
		}
	}
	return false
}

func tlsConfig(t *TLSConfig) (*tls.Config, error) {
	if t == nil {
		return tlsfile.Client(tlsfile.Files{})
	}
	tc, err := tlsfile.Client(tlsfile.Files{CA: t.CA, Cert: t.Cert, Key: t.Key, ServerName: t.ServerName, Insecure: t.InsecureSkipVerify})
	if err != nil {
		return nil, fmt.Errorf("%w: tls %v", errCredentials, err)
	}
	return tc, nil
}

// Connect opens a NATS connection as cfg describes (servers, credentials,
// TLS), for tools such as `ferry tail`. It makes one attempt across the
// servers; the client then reconnects on its own with the backoff of
// reconnect_max. extra options come last and win.
func Connect(cfg NATSConfig, name string, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := natsOptions(&cfg, name)
	if err != nil {
		return nil, err
	}
	bo := &backoff.Backoff{Max: cfg.ReconnectMax}
	opts = append(opts,
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			if attempts <= 1 {
				bo.Reset()
			}
			return bo.Next()
		}),
	)
	dialer := &recordingDialer{d: net.Dialer{Timeout: cfg.ConnectTimeout}}
	opts = append(opts, nats.SetCustomDialer(dialer))
	opts = append(opts, extra...)
	nc, err := nats.Connect(strings.Join(cfg.URLs, ","), opts...)
	if err != nil {
		if derr := dialer.lastErr(); errors.Is(err, nats.ErrNoServers) && derr != nil {
			// "no servers available" hides why: refused, timeout, DNS.
			err = fmt.Errorf("%w: %w", err, derr)
		}
		if tlsRefused(err) {
			err = fmt.Errorf("%w (the server refused the TLS session: it wants a client certificate, tls.cert, from a CA it trusts)", err)
		}
		return nil, fmt.Errorf("connect to %s: %w", serverList(cfg.URLs), err)
	}
	return nc, nil
}

// InboxPrefix is the inbox prefix of a gateway's NATS connections,
// "_INBOX.SITE.GATEWAY" ("_INBOX.GATEWAY" without a site). Replies to the
// gateway (JetStream acknowledgements, KV watches, command replies) come to
// inboxes under it, so a NATS user may be given subscribe permission on
// its own prefix only, and cannot read the replies another gateway gets.
func InboxPrefix(site, gateway string) string {
	if site == "" {
		return "_INBOX." + gateway
	}
	return "_INBOX." + site + "." + gateway
}

// NewJetStream returns the JetStream context of cfg on nc: the API of the
// domain cfg names (domain or api_prefix), else the API of the server nc
// is connected to. Publishes are not routed by it: a subject reaches the
// stream that captures it wherever that stream is, and only the stream
// lookup, creation and reads go through the domain's API.
func NewJetStream(nc *nats.Conn, cfg NATSConfig, opts ...jetstream.JetStreamOpt) (jetstream.JetStream, error) {
	switch {
	case cfg.Domain != "":
		return jetstream.NewWithDomain(nc, cfg.Domain, opts...)
	case cfg.APIPrefix != "":
		return jetstream.NewWithAPIPrefix(nc, cfg.APIPrefix, opts...)
	}
	return jetstream.New(nc, opts...)
}

// recordingDialer dials like net.Dialer and remembers the last failure.
type recordingDialer struct {
	d    net.Dialer
	mu   sync.Mutex
	last error
}

func (r *recordingDialer) Dial(network, address string) (net.Conn, error) {
	c, err := r.d.Dial(network, address)
	r.mu.Lock()
	r.last = err
	r.mu.Unlock()
	return c, err
}

func (r *recordingDialer) lastErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// serverList prints the URLs without any userinfo.
func serverList(urls []string) string {
	out := make([]string, len(urls))
	for i, s := range urls {
		if u, err := url.Parse(s); err == nil {
			out[i] = redactURL(u)
		} else {
			out[i] = "?"
		}
	}
	return strings.Join(out, ",")
}

// errorReason classifies a connection or publish error for the errors
// metric.
func errorReason(err error) string {
	switch {
	case errors.Is(err, errCredentials):
		return reasonCredentials
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired),
		errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrPermissionViolation):
		return reasonAuth
	}
	return reasonConnect
}

// streamReason classifies an error of ensureStreams.
func streamReason(err error) string {
	switch {
	case errors.Is(err, ErrStreamNotFound):
		return reasonStreamAbsent
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrPermissionViolation):
		return reasonAuth
	}
	return reasonStream
}
