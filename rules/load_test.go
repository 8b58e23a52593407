package rules_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-edge/ferry/internal/gateway"
	"github.com/ferry-edge/ferry/rules"
)

// TestLoaderReportsRulePositions loads a whole configuration through the
// loader: every rule problem is reported with file:line:column, and a good
// rule set compiles into an engine.
func TestLoaderReportsRulePositions(t *testing.T) {
	const head = `gateway: {id: gw1}
devices:
  - name: press3
    modbus: {url: "tcp://127.0.0.1:502"}
    points:
      - {name: oil_temp, table: holding, address: 100}
      - {name: running, table: coil, address: 5}
rules:
`
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "ferry.yaml")
		if err := os.WriteFile(p, []byte(head+body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	_, err := gateway.LoadConfig(write(`  - name: hot
    when: press3.oil_temp > 80 and press3.oil_tmp > 1
  - {name: typo, when: "press3.oil_temp >"}
  - name: stats
    point: press3.oil_temp
    anomaly: {method: zcore}
`))
	if err == nil {
		t.Fatal("loaded")
	}
	for _, want := range []string{
		`ferry.yaml:10:11: rules[0].when: unknown point "press3.oil_tmp" (did you mean "press3.oil_temp"?) at column 26 of "press3.oil_temp > 80 and press3.oil_tmp > 1"`,
		`ferry.yaml:11:24: rules[1].when: unexpected token EOF at column 17 of "press3.oil_temp >"`,
		`ferry.yaml:14:23: rules[2].anomaly.method: "zcore" is not one of zscore, ewma`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}

	c, err := gateway.LoadConfig(write(`  - {name: hot, when: "press3.oil_temp > 80", clear: "press3.oil_temp < 75", for: 10s, severity: critical}
  - name: stuck
    point: press3.oil_temp
    flatline: {duration: 10m, epsilon: 0.1}
  - name: stats
    point: press3.oil_temp
    anomaly: {method: ewma, window: 5m}
`))
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Rules[2].Anomaly; a.Threshold != 4 || a.Lambda != 0.2 || a.MinSamples != 30 || a.Direction != "both" {
		t.Errorf("anomaly defaults not applied: %+v", a)
	}
	if _, err := rules.New(c.Rules, rules.Options{}); err != nil {
		t.Fatal(err)
	}
}
