package gateway

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"golang.org/x/crypto/bcrypt"
)

// TestSecretsNeverPrinted feeds a canary through every secret of the
// configuration — the uplink's password (from a file), an MQTT device's,
// an OPC UA user's, the MQTT alert sink's, a webhook header, the HTTP
// basic auth hash — runs a plant against it, reloads a good and a refused
// configuration (one with a password in a NATS URL), takes NATS away, and
// greps every log line, /metrics, /readyz and the API for the canaries.
func TestSecretsNeverPrinted(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and a daemon")
	}
	t.Parallel()
	canaries := map[string]string{
		"nats":   "CANARY-nats-7f3a",
		"mqtt":   "CANARY-mqtt-1b9c",
		"opcua":  "CANARY-opcua-55d0",
		"sink":   "CANARY-sink-e2c4",
		"hook":   "CANARY-hook-90aa",
		"http":   "CANARY-http-3c71",
		"natsur": "CANARY-url-a1f0",
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(canaries["http"]), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	canaries["hash"] = string(hash)

	hook := testpeer.Webhook(t)

	p := startPlant(t, 1)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	pwFile := filepath.Join(dir, "nats.pw")
	if err := os.WriteFile(pwFile, []byte(canaries["nats"]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := plantConfig{
		DataDir: filepath.Join(dir, "data"),
		Rules:   []string{`{name: fast, when: "press1.speed > 10", severity: critical}`},
	}
	file := func(sinkPassword, natsURL string) string {
		text := cfg.yaml(p)
		text = strings.Replace(text, `http: {listen: "127.0.0.1:0"}`, fmt.Sprintf(
			`http: {listen: "127.0.0.1:0", basic_auth: {username: prom, password_hash: %q}}`, canaries["hash"]), 1)
		text = strings.Replace(text, "rules:", fmt.Sprintf(`  - name: boiler
    opcua: {endpoint: "%s", security_policy: None, allow_insecure: true, mode: poll, interval: 200ms, auth: {username: op, password: %q}}
    points:
      - {name: pressure, node: "nsu=urn:ferry:plantsim:boiler;s=Boiler.Pressure"}
  - name: env
    mqtt: {broker: "tcp://%s", topic: "sensors/hall1/env", format: json, username: ferry, password: %q}
    points:
      - {name: temperature, path: temp}
rules:`, p.Boiler.Endpoint, canaries["opcua"], p.MQTT.Addr, canaries["mqtt"]), 1)
		text = strings.Replace(text, "alerts: {log: {enabled: true}}", fmt.Sprintf(`alerts:
  log: {enabled: true}
  mqtt: {broker: "tcp://%s", username: ferry, password: %q}
  webhook: {url: "%s", headers: {Authorization: "Bearer %s"}}`, p.MQTT.Addr, sinkPassword, hook.URL, canaries["hook"]), 1)
		return text + fmt.Sprintf("uplink:\n  nats: {urls: [%q], user: ferry, password_file: %s, stream: %s}\n", natsURL, pwFile, "FERRY")
	}
	testutil.WriteFile(t, path, file(canaries["sink"], p.NATS.URL))
	h := startDaemon(t, path)

	var bodies []string
	get := func(path string, auth bool) int {
		req, _ := http.NewRequest("GET", h.url(path), nil)
		if auth {
			req.SetBasicAuth("prom", canaries["http"])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		bodies = append(bodies, fmt.Sprintf("GET %s: %d %s", path, resp.StatusCode, b))
		return resp.StatusCode
	}
	waitFor(t, 30*time.Second, "devices read, the uplink up and the alert posted", func() bool {
		up, _ := h.metric("ferry_uplink_connected")
		n := len(hook.Auth())
		sink, _ := h.metric("ferry_alert_sink_sent_total", "sink=mqtt")
		return up == 1 && h.scans("press1") >= 2 && h.scans("env") >= 1 && h.scans("boiler") >= 1 && n >= 1 && sink >= 1
	})
	if auth := hook.Auth(); auth[0] != "Bearer "+canaries["hook"] {
		t.Errorf("the webhook got Authorization %q: the secret header was not sent", auth[0])
	}
	if code := get("/metrics", false); code != 401 {
		t.Errorf("/metrics without credentials: %d", code)
	}
	for _, path := range []string{"/", "/metrics", "/readyz?verbose", "/readyz?format=json", "/api/status", "/api/devices", "/api/alerts"} {
		if code := get(path, true); code != 200 {
			t.Errorf("GET %s: %d", path, code)
		}
	}

	// A good reload that changes a secret, and refused ones.
	h.reload(file(canaries["sink"]+"x", p.NATS.URL))
	withCreds := strings.Replace(p.NATS.URL, "nats://", "nats://ferry:"+canaries["natsur"]+"@", 1)
	h.reload(file(canaries["sink"], withCreds))
	h.reload(strings.Replace(file(canaries["sink"], p.NATS.URL), "password_file: "+pwFile, "password: "+canaries["nats"]+", password_file: "+pwFile, 1))
	if v, _ := h.metric("ferry_config_reloads_total", "result=failure"); v != 2 {
		t.Errorf("%v reloads refused, want 2", v)
	}
	// The uplink fails: its errors are logged.
	p.NATS.Shutdown()
	waitFor(t, 20*time.Second, "the uplink down", func() bool { c := get("/readyz?verbose", true); return c == 503 })
	if err := p.NATS.Start(); err != nil {
		t.Fatal(err)
	}
	get("/metrics", true)
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}

	out := h.logs.String() + strings.Join(bodies, "\n")
	for name, c := range canaries {
		if i := strings.Index(out, c); i >= 0 {
			t.Errorf("the %s secret is printed: …%s…", name, out[max(0, i-200):min(len(out), i+100)])
		}
	}
	// The refused reloads were refused for the secrets (and said so
	// without them).
	if n := len(h.logs.lines("reload refused", "holds credentials")) + len(h.logs.lines("reload refused", "password_file")); n != 2 {
		t.Errorf("%d reloads refused for the NATS password, want 2", n)
	}
}
