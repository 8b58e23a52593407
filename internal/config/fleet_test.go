package config_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/fleet"
	"github.com/ferry-edge/ferry/internal/gateway"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// fleetLocal is a gateway's local file in fleet mode.
const fleetLocal = `gateway: {id: gw1, site: plant1}
data_dir: %s
http: {listen: "127.0.0.1:0"}
uplink:
  nats: {urls: ["nats://127.0.0.1:4222"], user: gw1, password: secret, stream: LOCAL}
fleet: {readiness_window: 5s}
`

func loadLocal(t *testing.T) *config.Config {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "ferry.yaml")
	testutil.WriteFile(t, p, strings.Replace(fleetLocal, "%s", filepath.Join(dir, "data"), 1))
	c, err := load(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// stage merges and stages the bundles as an agent does, and loads them.
func stageLoad(t *testing.T, local *config.Config, gw, site *fleet.Bundle) (*config.Config, error) {
	t.Helper()
	m, err := fleet.Merge(gw, site)
	if err != nil {
		t.Fatal(err)
	}
	st, err := fleet.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir, err := st.Stage(m)
	if err != nil {
		t.Fatal(err)
	}
	return config.LoadFleet(dir, local, gateway.Protocols)
}

func bundle(files ...string) *fleet.Bundle {
	b := &fleet.Bundle{Format: fleet.BundleFormat, Revision: 1, Files: map[string]string{}}
	for i := 0; i+1 < len(files); i += 2 {
		b.Files[files[i]] = files[i+1]
	}
	return b
}

const press = `devices:
  - name: press1
    modbus: {url: "tcp://127.0.0.1:1502", unit: 1}
    points:
      - {name: oil_temp, table: holding, address: 0, type: float32}
`

// TestLoadFleetTakesLocalOnlySettingsFromTheLocalFile: the bundle brings
// devices, rules and the uplink's stream; identity, data_dir, http, the
// fleet block and the uplink's servers and credentials come from the
// local file.
func TestLoadFleetTakesLocalOnlySettingsFromTheLocalFile(t *testing.T) {
	local := loadLocal(t)
	c, err := stageLoad(t, local, bundle(
		"ferry.yaml", "devices_dir: devices.d\nuplink:\n  nats: {stream: FLEET}\nrules:\n  - {name: hot, when: \"press1.oil_temp > 80\", severity: warning}\n",
		"devices.d/press.yaml", press), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Gateway != local.Gateway || c.DataDir != local.DataDir || c.Fleet == nil || c.HTTP.Listen != local.HTTP.Listen {
		t.Errorf("local-only settings not taken from the local file: %+v %q %v", c.Gateway, c.DataDir, c.Fleet)
	}
	n := c.Uplink.NATS
	if n == nil || n.Stream != "FLEET" || n.URLs[0] != "nats://127.0.0.1:4222" || n.User != "gw1" || n.Password.Reveal() != "secret" {
		t.Errorf("uplink = %+v, want the bundle's stream with the local connection", n)
	}
	if len(c.Devices) != 1 || len(c.Rules) != 1 {
		t.Errorf("devices %d rules %d, want 1 and 1", len(c.Devices), len(c.Rules))
	}
	// Without an uplink section the bundle runs the local one.
	c, err = stageLoad(t, local, bundle("ferry.yaml", press), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Uplink.NATS == nil || c.Uplink.NATS.Stream != "LOCAL" {
		t.Errorf("uplink = %+v, want the local one", c.Uplink.NATS)
	}
}

// TestLoadFleetRefuses: what a bundle may not do, each refused with the
// position of the offending key.
func TestLoadFleetRefuses(t *testing.T) {
	local := loadLocal(t)
	// Merge keys that would expand to 10^6 nodes, where a device block
	// is decoded.
	var b strings.Builder
	b.WriteString("x-l0: &l0 {unit: 1}\n")
	for i := 1; i <= 6; i++ {
		fmt.Fprintf(&b, "x-l%d: &l%d {<<: [%s]}\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d, ", i-1), 10), ", "))
	}
	b.WriteString("devices:\n  - name: d\n    modbus: {url: \"tcp://h:1\", <<: *l6}\n")
	bomb := b.String()
	for _, tc := range []struct{ name, main, want string }{
		{"data_dir", press + "data_dir: /tmp/elsewhere\n", "ferry.yaml:6:1: data_dir: is local-only"},
		{"identity", "gateway: {id: other}\n" + press, "ferry.yaml:1:1: gateway: is local-only"},
		{"http", press + "http: {listen: \"0.0.0.0:80\"}\n", "ferry.yaml:6:1: http: is local-only"},
		{"fleet", press + "fleet: {}\n", "ferry.yaml:6:1: fleet: is local-only"},
		// Whether a gateway may write to machines is decided at the
		// gateway, never by whoever can write to the config bucket.
		{"commands", press + "commands: {enabled: true}\n", "ferry.yaml:6:1: commands: is local-only"},
		{"credentials", press + "uplink:\n  nats: {stream: X, creds: /tmp/evil.creds}\n", "ferry.yaml:7:21: uplink.nats.creds: is local-only"},
		{"servers", press + "uplink:\n  nats:\n    urls: [\"nats://evil:4222\"]\n", "ferry.yaml:8:5: uplink.nats.urls: is local-only"},
		{"devices_dir outside", "devices_dir: ../../..\n", "devices_dir: \"../../..\" leaves the bundle"},
		{"devices_dir absolute", "devices_dir: /etc\n", "devices_dir: \"/etc\" leaves the bundle"},
		{"unknown key", press + "rulez: []\n", "ferry.yaml:6:1: rulez: unknown field"},
		{"alias bomb", bomb, "expands to more than"},
		{"bad point", strings.Replace(press, "float32", "flaot32", 1), "devices[0].points[0].type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := stageLoad(t, local, bundle("ferry.yaml", tc.main), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestLoadFleetSiteMergedUnderGateway: the site-wide bundle's files and
// main-file keys fill in what the gateway's bundle lacks; for the same
// file name or the same top-level key, the gateway's wins.
func TestLoadFleetSiteMergedUnderGateway(t *testing.T) {
	local := loadLocal(t)
	site := bundle(
		"ferry.yaml", "log: {level: warn}\ndevices_dir: devices.d\nrules:\n  - {name: hot, when: \"press1.oil_temp > 80\", severity: warning}\n",
		"devices.d/press.yaml", press,
		"devices.d/shared.yaml", strings.ReplaceAll(press, "press1", "press2"))
	gw := bundle(
		"ferry.yaml", "log: {level: debug}\n",
		"devices.d/shared.yaml", strings.ReplaceAll(press, "press1", "press9"))
	c, err := stageLoad(t, local, gw, site)
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Level != "debug" {
		t.Errorf("log.level = %q, want the gateway's debug", c.Log.Level)
	}
	if len(c.Rules) != 1 {
		t.Errorf("rules = %d, want the site's 1", len(c.Rules))
	}
	var names []string
	for _, d := range c.Devices {
		names = append(names, d.Name)
	}
	if strings.Join(names, ",") != "press1,press9" {
		t.Errorf("devices = %v, want press1 (site file) and press9 (gateway's shared.yaml over the site's)", names)
	}
	// The site's main file may not set local-only keys either.
	site.Files["ferry.yaml"] += "data_dir: /tmp/x\n"
	if _, err := stageLoad(t, local, gw, site); err == nil || !strings.Contains(err.Error(), "data_dir: is local-only") {
		t.Errorf("err = %v, want data_dir refused in the site file", err)
	}
	// A site bundle alone is a whole configuration.
	site.Files["ferry.yaml"] = strings.Replace(site.Files["ferry.yaml"], "data_dir: /tmp/x\n", "", 1)
	c, err = stageLoad(t, local, nil, site)
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Level != "warn" || len(c.Devices) != 2 {
		t.Errorf("site alone: log %q, %d devices", c.Log.Level, len(c.Devices))
	}
}

// TestFleetNeedsUplinkConnection: fleet mode connects with uplink.nats.
func TestFleetNeedsUplinkConnection(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ferry.yaml")
	testutil.WriteFile(t, p, "gateway: {id: gw1, site: s}\ndata_dir: "+dir+"\nfleet: {}\n")
	if _, err := load(p); err == nil || !strings.Contains(err.Error(), "fleet: needs uplink.nats") {
		t.Fatalf("err = %v", err)
	}
}
