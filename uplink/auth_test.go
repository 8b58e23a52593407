package uplink

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// warnLog is the uplink's log, kept to count its warnings: a state change
// is logged once, however often the attempt behind it is retried.
type warnLog struct{ testutil.SyncBuffer }

func newWarnLog() (*warnLog, *slog.Logger) {
	l := &warnLog{}
	return l, slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// warnings returns the lines at WARN or above.
func (l *warnLog) warnings() []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			out = append(out, line)
		}
	}
	return out
}

// authPhase is one state of the credentials: the error the uplink must
// report (its Err says want, and wraps wantErr when set), logged once
// and retried again and again with no more warnings; or, with want
// empty, shipping.
type authPhase struct {
	name    string
	write   func() // puts the phase's files in place
	want    string // in Err's text; "": the phase ships
	wantErr error
	reason  string // ferry_uplink_errors_total reason counted by the retries
}

// runAuthPhases runs an uplink on cfg through the phases, in order. A
// failing phase must report its error, keep a record added then in the
// Source, and log one warning while it is retried at least three times,
// and none with four more retries. A shipping phase must
// deliver what the source holds. read connects a client that can read
// the stream.
func runAuthPhases(t *testing.T, cfg NATSConfig, phases []authPhase, read func() *nats.Conn) {
	t.Helper()
	src := newMemSource("gw1")
	reg := prometheus.NewRegistry()
	logs, log := newWarnLog()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("uplink log:\n%s", logs.String())
		}
	})
	phases[0].write()
	u, err := New(cfg, src, Options{Gateway: "gw1", Site: "lyon", Logger: log, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	runUplink(t, u, src)
	warned := 0
	for i, ph := range phases {
		if i > 0 {
			ph.write()
		}
		if ph.want == "" {
			src.addAlert("v", alert(i))
			src.waitEmpty(t, 20*time.Second)
			checkExactlyOnce(t, streamMsgsOf(t, read()), src.records())
			continue
		}
		retries := func() float64 { return metric(t, reg, "ferry_uplink_errors_total", "reason", ph.reason) }
		testutil.Eventually(t, 20*time.Second, ph.name+": the error reported", func() error {
			err := u.Err()
			if err == nil || (ph.wantErr != nil && !errors.Is(err, ph.wantErr)) || !strings.Contains(err.Error(), ph.want) {
				return fmt.Errorf("Err() = %v", err)
			}
			return nil
		})
		rec := src.addAlert("v", alert(i))
		n0 := retries()
		testutil.Eventually(t, 20*time.Second, ph.name+": retried", func() error {
			if n := retries() - n0; n < 3 {
				return fmt.Errorf("%v retries", n)
			}
			return nil
		})
		w := len(logs.warnings())
		n1 := retries()
		waitFor(t, 20*time.Second, ph.name+": retried again", func() bool { return retries() >= n1+4 })
		if got := logs.warnings(); len(got) != w || w-warned != 1 {
			t.Errorf("%s: %d warnings, then %d after %v more retries; want 1, then no more:\n%s",
				ph.name, w-warned, len(got)-warned, retries()-n1, strings.Join(got[warned:], "\n"))
		}
		warned = len(logs.warnings())
		t.Logf("%s: Err() = %v; %v retries", ph.name, u.Err(), retries()-n0)
		if !src.holds(rec.ID) {
			t.Errorf("%s: record %s left the Source while the uplink could not connect", ph.name, rec.ID)
		}
	}
	t.Logf("warnings logged:\n%s", strings.Join(logs.warnings(), "\n"))
}

// holds reports whether the record is pending or in flight.
func (s *memSource) holds(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.inflight[id]; ok {
		return true
	}
	for _, p := range s.pending {
		for _, r := range p {
			if r.ID == id {
				return true
			}
		}
	}
	return false
}

// streamMsgsOf reads stream FERRY through nc.
func streamMsgsOf(t *testing.T, nc *nats.Conn) []jetstream.Msg {
	t.Helper()
	js, err := NewJetStream(nc, NATSConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return streamMsgs(t, js, "FERRY")
}

// TestAuthCreds authenticates with a creds file (user JWT and NKey seed)
// against a nats-server in operator mode with a memory resolver. The file
// goes through the states a gateway meets: a user the server does not
// know, an expired JWT, a good one, one that expires while connected, a
// renewed one. Each failure is a clear error, logged once.
func TestAuthCreds(t *testing.T) {
	op := testpeer.NewOperator(t)
	srv := testpeer.NATS(t, op.Options(t))
	dir := t.TempDir()
	creds := filepath.Join(dir, "gw1.creds")
	// put writes the creds of a user made when the phase begins (an
	// expiry counts from then).
	put := func(name string, expires func() time.Time) func() {
		return func() { testutil.WriteFile(t, creds, string(op.Creds(t, name, expires()))) }
	}
	at := func(d time.Duration) func() time.Time { return func() time.Time { return time.Now().Add(d) } }
	never := func() time.Time { return time.Time{} }
	reader := filepath.Join(dir, "reader.creds")
	testutil.WriteFile(t, reader, string(op.Creds(t, "reader", time.Time{})))
	read := func() *nats.Conn {
		nc, _ := testpeer.Connect(t, srv.URL(), nats.UserCredentials(reader))
		return nc
	}

	cfg := testConfig(srv.URL())
	cfg.Creds = creds
	runAuthPhases(t, cfg, []authPhase{
		{name: "unknown account", write: func() { testutil.WriteFile(t, creds, string(testpeer.ForeignCreds(t, "gw1"))) }, wantErr: nats.ErrAuthorization, want: "Authorization Violation", reason: reasonAuth},
		{name: "expired", write: put("gw1", at(-time.Hour)), wantErr: errCredentials, want: "expired", reason: reasonCredentials},
		// Connected with a JWT that expires in a few seconds: the
		// server closes the connection then, and the file still holds
		// it.
		{name: "good", write: put("gw1", at(4*time.Second))},
		{name: "expires while connected", write: func() {}, wantErr: errCredentials, want: "expired", reason: reasonCredentials},
		{name: "renewed", write: put("gw1", never)},
	}, read)
}

// TestAuthTLS connects over TLS to a nats-server that verifies client
// certificates: a server certificate of a CA ferry does not trust, a
// client certificate of a CA the server does not trust, then the right
// files. Each failure is a clear error, logged once.
func TestAuthTLS(t *testing.T) {
	ca := testutil.NewCA(t, "ferry test CA")
	other := testutil.NewCA(t, "someone else's CA")
	serverCert := ca.Issue(t, 2, "nats.test", x509.ExtKeyUsageServerAuth)
	srv := testpeer.NATS(t, func(o *natsserver.Options) {
		o.TLS, o.TLSVerify = true, true
		o.TLSConfig = &tls.Config{
			Certificates: []tls.Certificate{serverCert.TLS()},
			ClientCAs:    ca.Pool(),
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
		}
	})
	url := "tls://127.0.0.1:" + strconv.Itoa(srv.Port())

	dir := t.TempDir()
	files := &TLSConfig{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "gw1.pem"), Key: filepath.Join(dir, "gw1.key")}
	put := func(trust *testutil.CA, client testutil.Leaf) func() {
		return func() {
			testutil.WriteFile(t, files.CA, string(trust.PEM))
			testutil.WriteFile(t, files.Cert, string(client.CertPEM))
			testutil.WriteFile(t, files.Key, string(client.KeyPEM))
		}
	}
	good := ca.Issue(t, 3, "gw1", x509.ExtKeyUsageClientAuth)
	foreign := other.Issue(t, 4, "gw1", x509.ExtKeyUsageClientAuth)
	readerCert := ca.Issue(t, 5, "reader", x509.ExtKeyUsageClientAuth).TLS()
	read := func() *nats.Conn {
		nc, _ := testpeer.Connect(t, url, nats.Secure(&tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{readerCert}, MinVersion: tls.VersionTLS12}))
		return nc
	}

	cfg := testConfig(url)
	cfg.TLS = files
	runAuthPhases(t, cfg, []authPhase{
		{name: "server not trusted", write: put(other, good), want: "certificate signed by unknown authority", reason: reasonConnect},
		{name: "client not trusted", write: put(ca, foreign), want: "the server refused the TLS session", reason: reasonConnect},
		{name: "good", write: put(ca, good)},
	}, read)
}

// TestCheckCreds: a creds file is refused before a connection attempt
// when it cannot work, with a reason the server would not give.
func TestCheckCreds(t *testing.T) {
	op := testpeer.NewOperator(t)
	dir := t.TempDir()
	tests := []struct {
		name, content, want string
	}{
		{"good", string(op.Creds(t, "gw1", time.Now().Add(time.Hour))), ""},
		{"no expiry", string(op.Creds(t, "gw1", time.Time{})), ""},
		{"expired", string(op.Creds(t, "gw1", time.Now().Add(-time.Minute))), `the JWT of user "gw1" expired at`},
		{"seed only", "-----BEGIN USER NKEY SEED-----\nSUAM\n------END USER NKEY SEED------\n", "the user JWT is not a JWT"},
		{"not creds", "hello\n", "holds no user JWT"},
		{"missing", "", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name+".creds")
			if tt.content != "" {
				testutil.WriteFile(t, path, tt.content)
			}
			err := checkCreds(path, time.Now())
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("checkCreds: %v", err)
			case tt.want != "" && (!errors.Is(err, errCredentials) || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("checkCreds: %v, want %v: ...%s", err, errCredentials, tt.want)
			}
		})
	}
}
