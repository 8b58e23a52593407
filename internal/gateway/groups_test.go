package gateway

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/drivers/modbus"
	"github.com/ferry-edge/ferry/drivers/mqtt"
	"github.com/ferry-edge/ferry/drivers/opcua"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/plantsim"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestEveryProtocolRuns holds the two halves of groups.go together: each
// entry of Protocols loads a device whose Spec groupSpecs switches on and
// newGroupDriver builds a driver for. A protocol added to the table but
// not to the switch would load and then never run.
func TestEveryProtocolRuns(t *testing.T) {
	// A device entry's block and points, by protocol.
	entries := map[string]string{
		"modbus": "modbus: {url: \"tcp://127.0.0.1:502\"}\n    points: [{name: p, table: holding, address: 1}]",
		"opcua":  "opcua: {endpoint: \"opc.tcp://127.0.0.1:4840\"}\n    points: [{name: p, node: \"i=85\"}]",
		"mqtt":   "mqtt: {broker: \"tcp://127.0.0.1:1883\", topic: t}\n    points: [{name: p, path: v}]",
	}
	for _, p := range Protocols {
		t.Run(p.Name, func(t *testing.T) {
			entry, ok := entries[p.Name]
			if !ok {
				t.Fatalf("no sample device for protocol %q: add one to this test", p.Name)
			}
			path := filepath.Join(t.TempDir(), "ferry.yaml")
			data := "gateway: {id: gw, site: s}\ndata_dir: " + t.TempDir() + "\ndevices:\n  - name: d\n    " + entry + "\n"
			if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := LoadConfig(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Devices) != 1 || cfg.Devices[0].Protocol != p.Name || cfg.Devices[0].Spec == nil {
				t.Fatalf("devices %+v", cfg.Devices)
			}
			specs := groupSpecs(cfg)
			if len(specs) != 1 {
				t.Fatalf("%d groups from a %s device (Spec %T): groupSpecs has no case for it", len(specs), p.Name, cfg.Devices[0].Spec)
			}
			for key, spec := range specs {
				if spec.protocol != p.Name {
					t.Errorf("group %s runs %q", key, spec.protocol)
				}
			}
			if err := CheckGroups(cfg); err != nil {
				t.Errorf("CheckGroups: %v", err)
			}
			// What a running group keeps of its spec: the device names
			// and a digest that the points are part of.
			var g *group
			for key, spec := range specs {
				g = newGroup(key, spec, nil)
			}
			if !reflect.DeepEqual(g.devices, []string{"d"}) {
				t.Errorf("group devices %q, want [d]: deviceNames has no case for %s", g.devices, p.Name)
			}
			cfg.DropPointSpecs()
			noPointSpecs(t, cfg, "after DropPointSpecs")
			for key, spec := range groupSpecs(cfg) {
				if newGroup(key, spec, nil).digest == g.digest {
					t.Error("the group's digest does not change when its points go")
				}
			}
		})
	}
}

// TestReloadOnePointScale: once running, the gateway's configuration holds
// no points in its specs, and a reload that changes one point's scale
// restarts that point's group and no other — the digest decided — and the
// new scale is in effect.
func TestReloadOnePointScale(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and a daemon")
	}
	t.Parallel()
	p := startPlant(t, 2)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	// press speed is 30: scaled by 2 it trips the rule.
	cfg := plantConfig{DataDir: filepath.Join(dir, "data"), Boiler: true, Env: true,
		Rules: []string{`{name: p1_fast, when: "press1.speed > 50", severity: warning}`, `{name: p2_fast, when: "press2.speed > 50", severity: warning}`}}
	text := cfg.yaml(p)
	testutil.WriteFile(t, path, text)
	h := startDaemon(t, path)
	waitFor(t, 30*time.Second, "every device read", func() bool {
		return h.scans("press1") >= 2 && h.scans("press2") >= 2 && h.scans("boiler") >= 1 && h.scans("env") >= 1
	})

	running := h.d.curCfg.Load()
	if len(running.Points) == 0 {
		t.Fatal("the running configuration lost its catalog")
	}
	ndev := len(config.DevicesOf[modbus.Device](running)) + len(config.DevicesOf[opcua.Device](running)) + len(config.DevicesOf[mqtt.Device](running))
	if ndev != 4 {
		t.Fatalf("%d typed devices in the running configuration, want 4", ndev)
	}
	noPointSpecs(t, running, "running")
	if h.active("p1_fast") || h.active("p2_fast") {
		t.Fatal("a speed rule is active at speed 30")
	}

	// press1's speed point, and only it, gets a scale.
	speed := fmt.Sprintf("{name: speed, table: holding, address: %d, type: uint16}", plantsim.HRSpeed)
	i := strings.Index(text, "name: press1")
	j := i + strings.Index(text[i:], speed)
	if i < 0 || j < i || strings.Index(text[i:], "name: press2") < j-i {
		t.Fatalf("no speed point of press1 in\n%s", text)
	}
	scaled := text[:j] + strings.Replace(text[j:], "type: uint16}", "type: uint16, scale: 2}", 1)
	h.reload(scaled)
	if v, _ := h.metric("ferry_config_reload_success"); v != 1 {
		t.Fatalf("the reload failed: %q", h.logs.lines("reload refused"))
	}
	groups := h.logs.lines("device groups changed")
	press1 := "modbus tcp://" + p.Presses[0].Addr
	if len(groups) != 1 || !strings.Contains(groups[0], `stopped="[`+press1+`]"`) || !strings.Contains(groups[0], `started="[`+press1+`]"`) {
		t.Errorf("device group changes: %q, want one: press1's link stopped and started", groups)
	}
	waitFor(t, 20*time.Second, "press1's speed read at scale 2", func() bool { return h.active("p1_fast") })
	if h.active("p2_fast") {
		t.Error("press2's speed is scaled too")
	}
	noPointSpecs(t, h.d.curCfg.Load(), "after the reload")

	// The same file again: nothing changed, nothing restarts.
	h.reload(scaled)
	if groups := h.logs.lines("device groups changed"); len(groups) != 1 {
		t.Errorf("a reload of the same file changed device groups: %q", groups[1:])
	}
}

// noPointSpecs fails t for each device of cfg whose typed spec still holds
// its points (a Points field that is not nil, or none at all).
func noPointSpecs(t *testing.T, cfg *config.Config, when string) {
	t.Helper()
	for _, dev := range cfg.Devices {
		if pts := reflect.ValueOf(dev.Spec).FieldByName("Points"); !pts.IsValid() || !pts.IsNil() {
			t.Errorf("%s: device %s keeps points in its spec: %+v", when, dev.Name, dev.Spec)
		}
	}
}
