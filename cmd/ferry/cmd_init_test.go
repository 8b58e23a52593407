package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInit: ferry init writes a configuration that validates (every
// protocol's example device and the example rule included) and refuses to
// overwrite anything.
func TestInit(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := run(t, "init", "-data-dir", filepath.Join(dir, "data"), dir)
	if code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut)
	}
	for _, f := range []string{"ferry.yaml", "devices.d/modbus-example.yaml", "devices.d/opcua-example.yaml", "devices.d/mqtt-example.yaml"} {
		if !strings.Contains(out, filepath.Join(dir, f)) {
			t.Errorf("output does not name %s:\n%s", f, out)
		}
	}
	code, out, errOut = run(t, "validate", "-config", filepath.Join(dir, "ferry.yaml"))
	if code != 0 || !strings.Contains(out, "ok: 3 devices, 6 points, 1 rules") {
		t.Fatalf("validate the init output: exit %d\n%s\n%s", code, out, errOut)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "ferry.yaml"))
	os.Remove(filepath.Join(dir, "devices.d/mqtt-example.yaml"))
	code, _, errOut = run(t, "init", dir)
	if code != 1 || !strings.Contains(errOut, "ferry.yaml exists: ferry init never overwrites") {
		t.Errorf("second init: exit %d, %q", code, errOut)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "ferry.yaml"))
	if string(before) != string(after) {
		t.Error("a refused init changed ferry.yaml")
	}
	if _, err := os.Stat(filepath.Join(dir, "devices.d/mqtt-example.yaml")); err == nil {
		t.Error("a refused init wrote a file")
	}
}
