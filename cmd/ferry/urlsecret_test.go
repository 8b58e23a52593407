package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestValidateURLPassword: `ferry validate` refuses a password in the URL
// of an MQTT alert sink, an OPC UA endpoint and an MQTT device broker
// (one that url.Parse refuses too) and says where credentials go, without
// printing the password (issue 21 item 2).
func TestValidateURLPassword(t *testing.T) {
	const canary = "CANARY-validate-8b2f"
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	testutil.WriteFile(t, path, `gateway: {id: gw1}
devices:
  - name: boiler
    opcua: {endpoint: "opc.tcp://op:`+canary+`@127.0.0.1:4840"}
    points:
      - {name: p, node: "ns=2;s=P"}
  - name: env
    mqtt: {broker: "tcp://ferry:`+canary+`@127.0.0.1:1883/%zz", topic: t}
    points:
      - {name: temperature, path: temp}
alerts:
  mqtt: {broker: "tcp://ferry:`+canary+`@127.0.0.1:1883"}
`)
	code, out, errOut := run(t, "validate", path)
	if code != 1 {
		t.Errorf("exit code %d, want 1 (stdout %q)", code, out)
	}
	if strings.Contains(out+errOut, canary) {
		t.Errorf("validate prints the password:\n%s%s", out, errOut)
	}
	for _, want := range []string{
		`devices[0].opcua.endpoint: "opc.tcp://REDACTED@127.0.0.1:4840" carries a user name or password`,
		"opcua.auth.username and opcua.auth.password (or password_file)",
		`devices[1].mqtt.broker: "tcp://REDACTED@127.0.0.1:1883/%zz" carries a user name or password`,
		`alerts.mqtt.broker: "tcp://REDACTED@127.0.0.1:1883" carries a user name or password`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr does not say %q:\n%s", want, errOut)
		}
	}
}
