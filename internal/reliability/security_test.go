package reliability

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-edge/ferry/internal/plantsim"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// getAuth fetches path with basic auth.
func (p *proc) getAuth(path, user, pass string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+p.HTTP()+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.SetBasicAuth(user, pass)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// listeners returns the local addresses of the TCP sockets pid listens
// on (from its own socket inodes and its network namespace's tables).
func listeners(t *testing.T, pid int) []string {
	t.Helper()
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var out []string
	for _, table := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
				continue
			}
			out = append(out, decodeAddr(f[1]))
		}
	}
	return out
}

// decodeAddr turns /proc/net/tcp's "0100007F:24D0" into "127.0.0.1:9424".
func decodeAddr(s string) string {
	h, p, _ := strings.Cut(s, ":")
	raw, _ := hex.DecodeString(h)
	var port int
	fmt.Sscanf(p, "%X", &port)
	ip := make(net.IP, len(raw))
	for i := 0; i < len(raw); i += 4 { // each 32-bit word is in host (little endian) order
		for j := 0; j < 4 && i+j < len(raw); j++ {
			ip[i+j] = raw[i+3-j]
		}
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(port))
}

func loopback(addr string) bool {
	h, _, _ := net.SplitHostPort(addr)
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// TestSecretsNeverShown: a canary secret in every secret field of the
// configuration (MQTT device password from the environment, uplink
// password, alert sink MQTT password, webhook header, OPC UA user password
// from a file, the HTTP basic auth hash) must never appear in ferry's log
// at debug level, /metrics, the API, `ferry validate` (also for configs it
// refuses), the buffer dump or upstream — while the secrets are in use.
func TestSecretsNeverShown(t *testing.T) {
	needProfile(t)
	var nonce [6]byte
	rand.Read(nonce[:])
	canary := "Kq7canary" + hex.EncodeToString(nonce[:])
	secret := func(field string) string { return canary + field }
	plant := startPlant(t, plantsim.Options{Presses: 1, Rate: 200 * time.Millisecond})
	dir := t.TempDir()
	data := filepath.Join(dir, "data")

	hook := testpeer.Webhook(t)

	hash, err := bcrypt.GenerateFromPassword([]byte(secret("http")), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(dir, "opcua.pass")
	if err := os.WriteFile(pwFile, []byte(secret("opcua")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FERRY_CANARY_MQTT", secret("mqttdevice"))
	uplinkPW := fmt.Sprintf("uplink:\n  nats: {urls: [\"%s\"], stream: FERRY, user: ferry, password: %q}\n", plant.NATS.URL, secret("natspassword"))
	body := func(uplink string) cfgOpts {
		return cfgOpts{Gateway: "secrets", DataDir: data, Plant: plant, NoOPCUA: true, NoMQTT: true, LogLevel: "debug",
			Devices: fmt.Sprintf(`  - name: env
    mqtt: {broker: "tcp://%s", topic: "sensors/hall1/env", username: ferry, password: "${FERRY_CANARY_MQTT}"}
    points:
      - {name: temperature, path: temp}
  - name: boiler
    opcua: {endpoint: "%s", security_policy: None, allow_insecure: true, auth: {username: operator, password_file: %s}}
    points:
      - {name: pressure, node: "nsu=%s;s=Boiler.Pressure"}
`, plant.MQTT.Addr, plant.Boiler.Endpoint, pwFile, plantsim.BoilerNamespace),
			Rules:  "  - {name: always, when: press1.oil_temp > -1000, severity: warning}\n",
			Uplink: uplink,
		}
	}
	cfg := writeConfig(t, dir, body(uplinkPW))
	extra := fmt.Sprintf(`  mqtt: {broker: "tcp://%s", topic: ferry/alerts, username: alerts, password: %q}
  webhook: {url: "%s", headers: {Authorization: "Bearer %s"}}
`, plant.MQTT.Addr, secret("alertsmqtt"), hook.URL, secret("webhook"))
	patch := func(path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.Replace(string(b), "alerts:\n  log: {enabled: true}\n", "alerts:\n  log: {enabled: true}\n"+extra, 1)
		s = strings.Replace(s, "http: {listen: \"127.0.0.1:0\"}\n",
			fmt.Sprintf("http: {listen: \"127.0.0.1:0\", basic_auth: {username: admin, password_hash: %q}}\n", hash), 1)
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	patch(cfg)

	outputs := map[string]string{}
	out, err := runFerry(t, 30*time.Second, "validate", cfg)
	if err != nil {
		t.Fatalf("ferry validate: %v\n%s", err, out)
	}
	outputs["ferry validate"] = out

	f := newProc(t, cfg)
	f.Start()
	if err := f.WaitUp(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	// The secrets are in use: the webhook got its header, the uplink and
	// MQTT are connected.
	if err := waitFor(60*time.Second, func() error {
		n := len(hook.Auth())
		if n == 0 {
			return errors.New("the webhook got no alert")
		}
		code, body, err := f.getAuth("/metrics", "admin", secret("http"))
		if err != nil || code != 200 {
			return fmt.Errorf("/metrics with basic auth: %d %v", code, err)
		}
		m, err := testpeer.ParseMetrics(body)
		if err != nil {
			return err
		}
		if m.Sum("ferry_uplink_connected") != 1 || m.Sum("ferry_device_connected", "device=env") != 1 {
			return errors.New("uplink or MQTT not connected")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if auth := hook.Auth(); len(auth) > 0 && auth[0] != "Bearer "+secret("webhook") {
		t.Errorf("the webhook got Authorization %q", auth[0])
	}
	if code, _, err := f.Get("/metrics"); err != nil || code != 401 {
		t.Errorf("/metrics without credentials: %d %v, want 401", code, err)
	}
	for _, path := range []string{"/metrics", "/api/status", "/api/devices", "/api/alerts", "/readyz?format=json", "/healthz"} {
		code, body, err := f.getAuth(path, "admin", secret("http"))
		if err != nil || code >= 500 && path != "/readyz?format=json" {
			t.Errorf("%s: %d %v", path, code, err)
		}
		outputs[path] = body
	}
	for _, l := range listeners(t, f.Pid()) {
		if !loopback(l) {
			t.Errorf("ferry listens on %s, not loopback", l)
		}
	}
	// Upstream messages sent with the secrets in use, for the check below.
	uplinked := func(p *proc) func() error {
		return func() error {
			code, body, err := p.getAuth("/metrics", "admin", secret("http"))
			if err != nil || code != 200 {
				return fmt.Errorf("/metrics with basic auth: %d %v", code, err)
			}
			m, err := testpeer.ParseMetrics(body)
			if err != nil {
				return err
			}
			if m.Sum("ferry_uplink_connected") != 1 || m.Sum("ferry_uplink_acked_total") < 2 {
				return fmt.Errorf("uplink connected %v, acked %v", m.Sum("ferry_uplink_connected"), m.Sum("ferry_uplink_acked_total"))
			}
			return nil
		}
	}
	if err := waitFor(60*time.Second, uplinked(f)); err != nil {
		t.Error(err)
	}
	if err := f.Stop(30 * time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}
	out, _ = runFerry(t, time.Minute, "buffer", "dump", "-data-dir", data)
	outputs["ferry buffer dump"] = out

	// The token variant of the uplink, and configurations that are refused
	// next to a secret.
	cfgTok := writeConfig(t, t.TempDir(), body(fmt.Sprintf("uplink:\n  nats: {urls: [\"%s\"], stream: FERRY, token: %q}\n", plant.NATS.URL, secret("natstoken"))))
	patch(cfgTok)
	if out, err := runFerry(t, 30*time.Second, "validate", cfgTok); err != nil {
		t.Errorf("validate (token): %v\n%s", err, out)
	} else {
		outputs["ferry validate (token)"] = out
	}
	ft := newProc(t, cfgTok)
	ft.Start()
	if err := ft.WaitUp(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(60*time.Second, uplinked(ft)); err != nil {
		t.Errorf("token: %v", err)
	}
	if err := ft.Stop(30 * time.Second); err != nil {
		t.Errorf("stop (token): %v", err)
	}
	outputs["ferry log (token)"] = ft.Log()
	bad := map[string]string{
		"credentials in the uplink URL": fmt.Sprintf("uplink:\n  nats: {urls: [\"nats://ferry:%s@127.0.0.1:4222\"], stream: FERRY}\n", secret("inurl")),
		"password and password_file":    fmt.Sprintf("uplink:\n  nats: {urls: [\"%s\"], user: u, password: %q, password_file: /nonexistent}\n", plant.NATS.URL, secret("both")),
		"token and password":            fmt.Sprintf("uplink:\n  nats: {urls: [\"%s\"], token: %q, user: u, password: %q}\n", plant.NATS.URL, secret("tok2"), secret("pw2")),
		"password without user":         fmt.Sprintf("uplink:\n  nats: {urls: [\"%s\"], password: %q}\n", plant.NATS.URL, secret("nouser")),
	}
	for name, up := range bad {
		c := writeConfig(t, t.TempDir(), body(up))
		out, err := runFerry(t, 30*time.Second, "validate", c)
		if err == nil {
			t.Errorf("%s: ferry validate accepted it", name)
		}
		outputs["ferry validate ("+name+")"] = out
	}
	outputs["ferry log"] = f.Log()

	// Upstream: every message, decoded.
	msgs := readStream(t, plant.NATS.URL, func(string) bool { return true })
	var up strings.Builder
	for _, m := range msgs {
		fmt.Fprintf(&up, "%s %s %+v\n", m.Subject, m.ID, m.Msg)
	}
	outputs["upstream messages"] = up.String()

	var leaks []string
	for src, text := range outputs {
		if i := strings.Index(text, canary); i >= 0 {
			end := min(len(text), i+len(canary)+20)
			leaks = append(leaks, fmt.Sprintf("%s: …%s…", src, text[max(0, i-60):end]))
		}
		if strings.Contains(text, string(hash)) {
			leaks = append(leaks, src+": the bcrypt hash")
		}
	}
	for _, l := range leaks {
		t.Errorf("secret leaked in %s", l)
	}
	if !strings.Contains(outputs["ferry log"], "[redacted]") && !strings.Contains(outputs["ferry validate"], "[redacted]") {
		t.Log("note: no [redacted] marker seen; secrets are simply not printed")
	}
	result(t, "secrets canary", fmt.Sprintf("7 secret fields (MQTT device password via ${ENV}, uplink password and token, alerts MQTT password, webhook header, OPC UA password_file, HTTP basic auth bcrypt hash) in use; checked %d outputs (debug log, /metrics, /api/status, /api/devices, /api/alerts, /readyz, ferry validate incl. 4 refused configs, buffer dump, %d upstream messages): leaks %d; /metrics without credentials 401; listeners loopback only",
		len(outputs), len(msgs), len(leaks)))
}

// TestOPCUASecurityDefaults: through the binary, policy None is refused
// unless allow_insecure is set (at validation and at run time, when the
// server offers nothing else), and an untrusted server certificate is
// refused, saved for review, and accepted after `ferry pki trust`.
func TestOPCUASecurityDefaults(t *testing.T) {
	needProfile(t)
	plant := startPlant(t, plantsim.Options{Presses: 1})
	dir := t.TempDir()

	// 1. None without allow_insecure: refused by the loader.
	noneCfg := writeConfig(t, dir, cfgOpts{Gateway: "ua", DataDir: filepath.Join(dir, "d1"), NoMQTT: true,
		Devices: fmt.Sprintf("  - name: boiler\n    opcua: {endpoint: \"%s\", security_policy: None}\n    points:\n      - {name: p, node: \"nsu=%s;s=Boiler.Pressure\"}\n", plant.Boiler.Endpoint, plantsim.BoilerNamespace)})
	out, err := runFerry(t, 30*time.Second, "validate", noneCfg)
	if err == nil || !strings.Contains(out, "allow_insecure") {
		t.Errorf("security_policy None without allow_insecure: validate %v:\n%s", err, out)
	}
	validateMsg := firstLine(out)

	// 2. Default policy against a server that offers only None: refused
	// at run time.
	cert, key := selfSignedCert(t, "untrusted test server", "urn:ferry:reliability:server")
	secure := startSecureServer(t, cert, key)
	data := filepath.Join(dir, "d2")
	cfg := writeConfig(t, t.TempDir(), cfgOpts{Gateway: "ua", DataDir: data, NoMQTT: true,
		Devices: fmt.Sprintf(`  - name: boiler
    opcua: {endpoint: "%s"}
    points:
      - {name: p, node: "nsu=%s;s=Boiler.Pressure"}
  - name: secure
    opcua: {endpoint: "%s", mode: poll, interval: 500ms}
    points:
      - {name: v, node: "nsu=urn:ferry:reliability;s=Value"}
`, plant.Boiler.Endpoint, plantsim.BoilerNamespace, secure)})
	f := newProc(t, cfg)
	f.Start()
	if err := f.WaitUp(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	var rejected []string
	if err := waitFor(60*time.Second, func() error {
		m, err := f.Metrics()
		if err != nil {
			return err
		}
		if m.Sum("ferry_opcua_certificates_rejected_total") == 0 {
			return errors.New("no certificate rejected yet")
		}
		if m.Sum("ferry_device_errors_total", "device=boiler") == 0 {
			return errors.New("no error counted for the None-only boiler")
		}
		rejected, _ = filepath.Glob(filepath.Join(data, "pki", "rejected", "*"))
		if len(rejected) == 0 {
			return errors.New("nothing in pki/rejected")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	m, _ := f.Metrics()
	for _, d := range []string{"boiler", "secure"} {
		if m.Sum("ferry_device_connected", "device="+d) != 0 {
			t.Errorf("%s is connected; it must be refused by default", d)
		}
		if m.Sum("ferry_device_points", "device="+d, "quality=good") != 0 {
			t.Errorf("%s has Good points", d)
		}
	}
	log := f.Log()
	if !strings.Contains(log, "BadCertificateUntrusted") {
		t.Error("the log does not name BadCertificateUntrusted")
	}
	noneLine := ""
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "device=boiler") && strings.Contains(l, "None") {
			noneLine = l
			break
		}
	}
	if noneLine == "" {
		t.Error("the log does not say why the None-only boiler is refused")
	}
	// 3. Trust it: the next attempt connects.
	if out, err := runFerry(t, 30*time.Second, "pki", "trust", "-data-dir", data, rejected[0]); err != nil {
		t.Fatalf("ferry pki trust: %v\n%s", err, out)
	}
	if err := waitFor(90*time.Second, func() error {
		m, err := f.Metrics()
		if err != nil {
			return err
		}
		if m.Sum("ferry_device_connected", "device=secure") != 1 {
			return errors.New("secure server not connected after trust")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if err := f.Stop(30 * time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}
	result(t, "OPC UA security defaults", fmt.Sprintf("None without allow_insecure refused by validate (%q); None-only server refused at run time; untrusted certificate refused (ferry_opcua_certificates_rejected_total %.0f, saved in pki/rejected), connected after ferry pki trust",
		validateMsg, m.Sum("ferry_opcua_certificates_rejected_total")))
}

// TestHTTPDefaultLoopback: with no http section ferry listens on
// 127.0.0.1:9440 only. It runs in a network namespace of its own, so the
// default port cannot clash with anything on this machine.
func TestHTTPDefaultLoopback(t *testing.T) {
	needProfile(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2) to bring up loopback in a network namespace")
	}
	if out, err := exec.Command("unshare", "-n", "true").CombinedOutput(); err != nil {
		t.Skipf("cannot make a network namespace (unshare -n): %v %s", err, out)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(path, []byte("gateway: {id: defaults}\ndata_dir: "+filepath.Join(dir, "data")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "-n", "sh", "-c", `ip link set lo up && exec "$0" run -config "$1"`, ferryBin, path)
	logf, err := os.Create(filepath.Join(dir, "ferry.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	var ls []string
	if err := waitFor(30*time.Second, func() error {
		ls = listeners(t, cmd.Process.Pid)
		if len(ls) == 0 {
			b, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("no listener yet:\n%s", tail(string(b), 5))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0] != "127.0.0.1:9440" {
		t.Errorf("ferry with no http section listens on %v, want [127.0.0.1:9440]", ls)
	}
	result(t, "HTTP API default", fmt.Sprintf("no http section: listens on %v only", ls))
}

func selfSignedCert(t *testing.T, cn, uri string) ([]byte, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(uri)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature |
			x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign | x509.KeyUsageContentCommitment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		URIs:                  []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// startSecureServer starts a gopcua server that offers only
// Basic256Sha256 (Sign, SignAndEncrypt) with cert.
func startSecureServer(t *testing.T, cert []byte, key *rsa.PrivateKey) string {
	t.Helper()
	srv := testpeer.OPCUAServer(t, testpeer.UAName("untrusted test server"), testpeer.UANamespace("urn:ferry:reliability"),
		testpeer.UASecurity(cert, key, "Basic256Sha256"))
	srv.AddFunc("Value", func() *ua.DataValue {
		return &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp, Value: ua.MustVariant(7.5), SourceTimestamp: time.Now()}
	})
	return srv.Endpoint()
}
