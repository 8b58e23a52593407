package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestURLPasswordNeverPrinted puts one canary password in the userinfo of
// every URL a device or sink is configured with (alerts.mqtt.broker,
// devices[].opcua.endpoint, devices[].mqtt.broker, alerts.webhook.url) and
// reloads that configuration into a running daemon: the reload is refused
// with a pointer to the username/password fields, and the canary appears
// in no log line, no /metrics series, no API answer and not in the
// console's page (issue 21 item 2).
func TestURLPasswordNeverPrinted(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and a daemon")
	}
	t.Parallel()
	const canary = "CANARY-urlpw-4d1e"
	p := startPlant(t, 1)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	cfg := plantConfig{DataDir: filepath.Join(dir, "data"), Boiler: true, Env: true}
	good := cfg.yaml(p)
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	h := startDaemon(t, path)
	waitFor(t, 30*time.Second, "the boiler and the sensor read", func() bool {
		return h.scans("boiler") >= 1 && h.scans("env") >= 1
	})

	// One reload per URL, so that each is refused for its own sake.
	creds := "op:" + canary + "@"
	bad := []string{
		strings.Replace(good, `endpoint: "opc.tcp://`, `endpoint: "opc.tcp://`+creds, 1),
		strings.Replace(good, `broker: "tcp://`, `broker: "tcp://`+creds, 1),
		strings.Replace(good, "alerts: {log: {enabled: true}}", `alerts: {log: {enabled: true}, mqtt: {broker: "tcp://`+creds+p.MQTT.Addr+`"}}`, 1),
		strings.Replace(good, "alerts: {log: {enabled: true}}", `alerts: {log: {enabled: true}, webhook: {url: "http://`+creds+`127.0.0.1:9/hook"}}`, 1),
	}
	reloads := func() float64 {
		ok, _ := h.metric("ferry_config_reloads_total", "result=success")
		failed, _ := h.metric("ferry_config_reloads_total", "result=failure")
		return ok + failed
	}
	for i, text := range bad {
		if !strings.Contains(text, canary) {
			t.Fatalf("bad config %d holds no canary", i)
		}
		h.reload(text)
		waitFor(t, 30*time.Second, "the reload done", func() bool { return reloads() >= float64(i+1) })
	}
	if v, _ := h.metric("ferry_config_reloads_total", "result=failure"); v != float64(len(bad)) {
		t.Errorf("%v of the %d reloads with a password in a URL refused", v, len(bad))
	}
	refused := h.logs.lines("reload refused", "carries a user name or password", "REDACTED@")
	if len(refused) != len(bad) {
		t.Errorf("%d refusals say why, want %d: %q", len(refused), len(bad), h.logs.lines("reload refused"))
	}
	for _, where := range []string{"opcua.auth.username and opcua.auth.password", "mqtt.username and mqtt.password", "webhook.headers"} {
		if len(h.logs.lines("reload refused", where)) == 0 {
			t.Errorf("no refusal points to %s", where)
		}
	}

	var out strings.Builder
	for _, path := range []string{"/", "/assets/app.js", "/metrics", "/readyz?verbose", "/api/status", "/api/devices", "/api/points", "/api/health", "/api/alerts"} {
		code, body := h.get(path)
		// /readyz may say 503 on a loaded machine; its body is what counts.
		if code != 200 && !(path == "/readyz?verbose" && code == 503) {
			t.Errorf("GET %s: %d", path, code)
		}
		out.WriteString(body)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	all := h.logs.String() + out.String()
	if i := strings.Index(all, canary); i >= 0 {
		t.Errorf("the password of a URL is printed: …%s…", all[max(0, i-200):min(len(all), i+100)])
	}
}
