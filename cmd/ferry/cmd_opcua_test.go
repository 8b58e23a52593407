package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/testpeer"
)

// startUAServer runs a gopcua server (security None) with one variable,
// Pressure, in namespace urn:test.
func startUAServer(t *testing.T) string {
	t.Helper()
	srv := testpeer.OPCUAServer(t, testpeer.UANone(), testpeer.UANamespace("urn:test"))
	srv.Add(time.Now(), "Pressure", 4.5)
	return srv.Endpoint()
}

func TestOPCUABrowse(t *testing.T) {
	ep := startUAServer(t)
	dir := t.TempDir()
	code, _, errOut := run(t, "opcua", "browse", "-data-dir", dir, "-timeout", "5s", ep, "nsu=urn:test;i=85")
	if code != 1 || !strings.Contains(errOut, "-security-policy None -allow-insecure") {
		t.Errorf("None without -allow-insecure: exit %d, stderr %q", code, errOut)
	}
	code, out, errOut := run(t, "opcua", "browse", "-data-dir", dir, "-security-policy", "None", "-allow-insecure", "-timeout", "5s", ep, "nsu=urn:test;i=85")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"(None/None)", "ns=1  urn:test", "ns=1;s=Pressure", "Variable", "4.5"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if code, _, errOut := run(t, "opcua", "browse", ep, "x=1"); code == 0 || !strings.Contains(errOut, "is not one of i, s, g, b") {
		t.Errorf("bad node: exit %d, %q", code, errOut)
	}
	if code, _, _ := run(t, "opcua", "frob"); code != 2 {
		t.Errorf("unknown subcommand: exit %d", code)
	}
}

func TestPKICommands(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := run(t, "pki", "list", "-data-dir", dir)
	if code != 0 || !strings.Contains(out, "none yet") || !strings.Contains(out, "(none)") {
		t.Fatalf("empty list: %d %q %q", code, out, errOut)
	}
	code, out, errOut = run(t, "pki", "own", "-data-dir", dir, "-app-uri", "urn:ferry:gw9")
	if code != 0 || !strings.Contains(out, "urn:ferry:gw9") {
		t.Fatalf("own: %d %q %q", code, out, errOut)
	}
	// Trust a certificate from rejected/: it moves to trusted/.
	rejected := filepath.Join(dir, "pki", "rejected")
	os.MkdirAll(rejected, 0o755)
	own, _ := os.ReadFile(filepath.Join(dir, "pki", "own", "cert.der"))
	src := filepath.Join(rejected, "x.der")
	os.WriteFile(src, own, 0o644)
	code, out, errOut = run(t, "pki", "trust", "-data-dir", dir, src)
	if code != 0 || !strings.Contains(out, filepath.Join(dir, "pki", "trusted")) {
		t.Fatalf("trust: %d %q %q", code, out, errOut)
	}
	code, out, _ = run(t, "pki", "list", "-data-dir", dir)
	if code != 0 || !strings.Contains(out, `"ferry"`) || strings.Count(out, "thumbprint") != 2 {
		t.Errorf("list:\n%s", out)
	}
	if code, _, errOut := run(t, "pki", "trust", "-data-dir", dir, "/nonexistent.der"); code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing file: %d %q", code, errOut)
	}
	if code, _, _ := run(t, "pki"); code != 2 {
		t.Errorf("no subcommand: %d", code)
	}
}
