package gateway

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// labelStyle is the one style of ferry's label values: short codes
// (snake_case reasons, results, lanes, route names) and identifiers made
// of them. A device, point or rule name from the configuration is the
// only other value a label may take (issue 22).
var labelStyle = regexp.MustCompile(`^[a-z0-9_.:-]+$`)

// TestMetricLabelValues runs a daemon with every kind of device, a device
// that refuses connections, one that never answers, an OPC UA device
// whose server lacks the security policy asked for, an MQTT payload that
// is not JSON, a rule that fires, the uplink and the HTTP API; then it
// gathers the registry and checks every label value of every ferry_*
// series: a code in the one style, or a name from the configuration —
// never an error string, a URL or a route pattern with slashes.
func TestMetricLabelValues(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and a daemon")
	}
	t.Parallel()
	p := startPlant(t, 2)
	silent := testutil.SilentTCP(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	cfg := plantConfig{
		DataDir: filepath.Join(dir, "data"),
		Boiler:  true, Env: true, Uplink: true,
		Rules: []string{`{name: Press1_Running, when: "press1.speed >= 0", severity: info}`},
	}
	// press3 refuses connections (nothing listens on port 1 of
	// 127.0.0.1), Hung_PLC never answers, secure_boiler asks the boiler
	// for a policy it does not offer (BadSecurityPolicyRejected).
	extra := fmt.Sprintf(`  - name: press3
    modbus: {url: "tcp://127.0.0.1:1", unit: 1, interval: 200ms, timeout: 300ms}
    points:
      - {name: speed, table: holding, address: 5, type: uint16}
  - name: Hung_PLC
    modbus: {url: "tcp://%s", unit: 1, interval: 200ms, timeout: 300ms}
    points:
      - {name: Speed, table: holding, address: 5, type: uint16}
  - name: secure_boiler
    opcua: {endpoint: %q, security_policy: Basic256Sha256, mode: poll, interval: 200ms}
    points:
      - {name: pressure, node: "nsu=urn:ferry:plantsim:boiler;s=Boiler.Pressure"}
rules:
`, silent, p.Boiler.Endpoint)
	text := strings.Replace(cfg.yaml(p), "rules:\n", extra, 1)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	h := startDaemon(t, path)
	for _, path := range []string{"/", "/api/devices", "/api/points?device=press1", "/api/alerts", "/metrics", "/nothing"} {
		h.get(path)
	}
	p.MQTT.Publish("sensors/hall1/env", []byte("not json {"), 1)
	waitFor(t, 60*time.Second, "every failure counted", func() bool {
		m := testpeer.Gather(t, h.d.reg)
		_, refused := m.Find("ferry_device_errors_total", "device=press3")
		_, hung := m.Find("ferry_device_errors_total", "device=Hung_PLC")
		_, policy := m.Find("ferry_opcua_session_errors_total", "device=secure_boiler")
		_, payload := m.Find("ferry_mqtt_payload_errors_total", "device=env")
		_, rule := m.Find("ferry_alerts_transitions_total", "rule=Press1_Running")
		_, sent := m.Find("ferry_uplink_published_total")
		return refused && hung && policy && payload && rule && sent && h.scans("press1") > 0 && h.scans("boiler") > 0
	})

	// The names a label may carry as they are: devices, points, rules.
	names := map[string]bool{}
	for _, d := range h.d.cfg.Devices {
		names[d.Name] = true
	}
	for _, pt := range h.d.cfg.Points {
		names[pt.Point] = true
	}
	for _, r := range h.d.cfg.Rules {
		names[r.Name] = true
	}
	bad := map[string]bool{}
	seen := map[string]map[string]bool{} // label → values, for the log
	for _, s := range testpeer.Gather(t, h.d.reg) {
		if !strings.HasPrefix(s.Name, "ferry_") {
			continue
		}
		for k, v := range s.Labels {
			if seen[k] == nil {
				seen[k] = map[string]bool{}
			}
			seen[k][v] = true
			if !labelStyle.MatchString(v) && !names[v] {
				bad[fmt.Sprintf("%s{%s=%q}", s.Name, k, v)] = true
			}
		}
	}
	for _, want := range []string{
		`ferry_device_errors_total{reason="connection_refused"}`,
		`ferry_device_errors_total{reason="timeout"}`,
		`ferry_device_errors_total{reason="bad_security_policy_rejected"}`,
		`ferry_opcua_session_errors_total{reason="bad_security_policy_rejected"}`,
		`ferry_mqtt_payload_errors_total{reason="not_json"}`,
		`ferry_modbus_requests_total{link="press1"}`,
		`ferry_http_requests_total{handler="api_devices"}`,
		`ferry_http_requests_total{handler="index"}`,
	} {
		name, l, _ := strings.Cut(strings.TrimSuffix(want, "}"), "{")
		k, v, _ := strings.Cut(l, "=")
		if _, ok := testpeer.Gather(t, h.d.reg).Find(name, k+"="+strings.Trim(v, `"`)); !ok {
			t.Errorf("no series %s", want)
		}
	}
	if len(bad) > 0 {
		var list []string
		for b := range bad {
			list = append(list, b)
		}
		sort.Strings(list)
		t.Errorf("label values neither codes of the one style nor configured names:\n%s", strings.Join(list, "\n"))
	}
	var labels []string
	for k, vs := range seen {
		var l []string
		for v := range vs {
			l = append(l, v)
		}
		sort.Strings(l)
		labels = append(labels, k+": "+strings.Join(l, " "))
	}
	sort.Strings(labels)
	t.Logf("label values seen:\n%s", strings.Join(labels, "\n"))
}
