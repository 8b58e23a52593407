package gateway

import (
	"os"
	"path/filepath"
	"testing"
)

// TestEveryProtocolRuns holds the two halves of groups.go together: each
// entry of Protocols loads a device whose Spec groupSpecs switches on and
// newGroupDriver builds a driver for. A protocol added to the table but
// not to the switch would load and then never run.
func TestEveryProtocolRuns(t *testing.T) {
	// A device entry's block and points, by protocol.
	entries := map[string]string{
		"modbus": "modbus: {url: \"tcp://127.0.0.1:502\"}\n    points: [{name: p, table: holding, address: 1}]",
		"opcua":  "opcua: {endpoint: \"opc.tcp://127.0.0.1:4840\"}",
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
		})
	}
}
