package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestOPCUABrowseYAML: browse shows data types (not the node class), and
// -yaml writes a device map that validates as it is and that ferry read
// reads.
func TestOPCUABrowseYAML(t *testing.T) {
	srv := testpeer.OPCUAServer(t, testpeer.UANone(), testpeer.UANamespace("urn:test"))
	srv.Add(time.Now(), "Pressure", 4.5, "Oil Temp", float32(59.95636), "Strokes", int32(1200), "Running", true, "Recipe", "R-7")
	dir := t.TempDir()
	base := []string{"opcua", "browse", "-data-dir", filepath.Join(dir, "data"), "-security-policy", "None", "-allow-insecure", "-timeout", "5s"}

	const folder = "nsu=urn:test;i=85"
	code, out, errOut := run(t, append(base, srv.Endpoint(), folder)...)
	if code != 0 {
		t.Fatalf("browse: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"Pressure     Double", "Oil Temp     Float", "Strokes      Int32", "Running      Boolean", "Recipe       String"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "VariableNode") {
		t.Errorf("DATA TYPE shows the node class:\n%s", out)
	}

	// Two levels from the Objects folder reach the same variables,
	// shown with their path.
	code, out, errOut = run(t, append(base, "-depth", "2", srv.Endpoint())...)
	if code != 0 || !strings.Contains(out, "urn:test/Oil Temp") {
		t.Errorf("-depth 2: exit %d: %s\n%s", code, errOut, out)
	}

	code, out, errOut = run(t, append(base, "-yaml", "-name", "press", srv.Endpoint(), folder)...)
	if code != 0 {
		t.Fatalf("browse -yaml: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		`- {name: oil_temp, node: "nsu=urn:test;s=Oil Temp"}  # Float (float)`,
		`- {name: strokes, node: "nsu=urn:test;s=Strokes"}  # Int32 (int)`,
		"allow_insecure: true",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("device map lacks %q:\n%s", want, out)
		}
	}
	devDir := filepath.Join(dir, "devices.d")
	os.MkdirAll(devDir, 0o755)
	testutil.WriteFile(t, filepath.Join(devDir, "press.yaml"), out)
	cfg := filepath.Join(dir, "ferry.yaml")
	testutil.WriteFile(t, cfg, fmt.Sprintf("gateway: {id: gw}\ndata_dir: %q\ndevices_dir: devices.d\nhttp: {listen: \"off\"}\n", filepath.Join(dir, "data")))
	if code, out, errOut := run(t, "validate", "-config", cfg); code != 0 || !strings.Contains(out, "1 devices, 5 points") {
		t.Fatalf("validate the browse output: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = run(t, "read", "-config", cfg, "-timeout", "10s")
	if code != 0 {
		t.Fatalf("read the browsed device: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"press   oil_temp  59.95636", "press   strokes   1200", "press   recipe    R-7"} {
		if !strings.Contains(out, want) {
			t.Errorf("read lacks %q:\n%s", want, out)
		}
	}
	if code, _, _ := run(t, append(base, "-depth", "0", srv.Endpoint())...); code != 2 {
		t.Errorf("-depth 0: exit %d, want 2", code)
	}
}
