package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

const cliOperatorPwd = "open sesame"

// writeConfig renders a configuration with one Modbus device, press, on
// the server at mbAddr, with the given points (YAML flow mappings) and
// commands enabled, and an operator credential on the API.
func writeConfig(t *testing.T, dir, mbAddr string, points ...string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(cliOperatorPwd), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "gateway: {id: gw1, site: test}\ndata_dir: %s\n", filepath.Join(dir, "data"))
	fmt.Fprintf(&b, "http: {listen: \"127.0.0.1:0\", operator: {username: op, password_hash: %q}}\n", hash)
	b.WriteString("commands: {enabled: true}\n")
	fmt.Fprintf(&b, "devices:\n  - name: press\n    modbus: {url: \"tcp://%s\", unit: 1, interval: 100ms, timeout: 1s}\n    points:\n", mbAddr)
	for _, p := range points {
		fmt.Fprintf(&b, "      - %s\n", p)
	}
	path := filepath.Join(dir, "ferry.yaml")
	testutil.WriteFile(t, path, b.String())
	return path
}

var listeningRE = regexp.MustCompile(`msg="http listening" [^\n]*?addr=(\S+) scheme=(\w+)`)

// runDaemon runs `ferry run -config path` in this process until the test
// ends and returns its API's base URL.
func runDaemon(t *testing.T, path string) string {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- runMain(ctx, []string{"run", "-config", path}, logs, logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Error("ferry run did not stop")
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs.String())
		}
	})
	var base string
	testutil.Eventually(t, 30*time.Second, "ferry's http listener", func() error {
		m := listeningRE.FindStringSubmatch(logs.String())
		if m == nil {
			return errors.New(`no "http listening" line yet`)
		}
		base = m[2] + "://" + m[1]
		return nil
	})
	return base
}

// TestWriteCLIRefusals: `ferry write` reports the gateway's refusal with
// its reason and exit status 1, and refuses to run without the operator's
// password; nothing reaches the Modbus server.
func TestWriteCLIRefusals(t *testing.T) {
	bank := &testpeer.RegBank{}
	mb := testpeer.ModbusServer(t, bank)
	dir := t.TempDir()
	path := writeConfig(t, dir, mb.Addr(), "{name: speed, table: holding, address: 0, type: uint16}")
	base := runDaemon(t, path)

	t.Setenv(operatorPasswordEnv, cliOperatorPwd)
	code, out, errOut := run(t, "write", "-config", path, "-url", base, "press", "speed", "5")
	if code != 1 || !strings.Contains(out, "refused: point press.speed is not writable") {
		t.Fatalf("not writable: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = run(t, "write", "-config", path, "-url", base, "-json", "-id", "x1", "press", "nosuch", "5")
	if code != 1 || !strings.Contains(out, `"status": "refused"`) || !strings.Contains(out, `"id": "x1"`) {
		t.Fatalf("unknown point: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	t.Setenv(operatorPasswordEnv, "wrong")
	if code, _, errOut := run(t, "write", "-config", path, "-url", base, "press", "speed", "5"); code != 1 || !strings.Contains(errOut, "401 Unauthorized") {
		t.Fatalf("wrong password: exit %d, stderr %q", code, errOut)
	}
	t.Setenv(operatorPasswordEnv, "")
	if code, _, errOut := run(t, "write", "-config", path, "-url", base, "press", "speed", "5"); code != 2 || !strings.Contains(errOut, "no operator password") {
		t.Fatalf("no password: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := run(t, "write", "-config", path, "press", "speed"); code != 2 || !strings.Contains(errOut, "want DEVICE POINT VALUE") {
		t.Fatalf("two arguments: exit %d, stderr %q", code, errOut)
	}
	if w := bank.Writes(); len(w) != 0 {
		t.Fatalf("the Modbus server took writes: %+v", w)
	}
}

func TestValueJSON(t *testing.T) {
	for in, want := range map[string]string{
		"42": "42", "-1.5": "-1.5", "true": "true", "RECIPE_A": `"RECIPE_A"`, `"123"`: `"123"`, "1e400x": `"1e400x"`, "[1]": `"[1]"`,
	} {
		if got := string(valueJSON(in)); got != want {
			t.Errorf("valueJSON(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestWriteCLI: `ferry write` writes through the running daemon to a real
// Modbus server (the register holds the value), prints the read back,
// and a repeat of its -id writes nothing.
func TestWriteCLI(t *testing.T) {
	bank := &testpeer.RegBank{}
	mb := testpeer.ModbusServer(t, bank)
	dir := t.TempDir()
	path := writeConfig(t, dir, mb.Addr(), "{name: setpoint, table: holding, address: 4, type: int16, scale: 0.5, write: {min: -100, max: 100}}")
	base := runDaemon(t, path)
	pwFile := filepath.Join(dir, "operator.pw")
	testutil.WriteFile(t, pwFile, cliOperatorPwd+"\n")

	code, out, errOut := run(t, "write", "-config", path, "-url", base, "-password-file", pwFile, "-id", "cli1", "press", "setpoint", "-12.5")
	if code != 0 || strings.TrimSpace(out) != "done (read back -12.5)" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if !strings.Contains(errOut, "command cli1: write press.setpoint = -12.5") {
		t.Errorf("stderr %q", errOut)
	}
	if v := int16(bank.Reg(4)); v != -25 {
		t.Fatalf("register 4 = %d, want -25 (-12.5 / 0.5)", v)
	}
	code, out, _ = run(t, "write", "-config", path, "-url", base, "-password-file", pwFile, "-id", "cli1", "press", "setpoint", "-12.5")
	if code != 0 || !strings.Contains(out, "done") || len(bank.Writes()) != 1 {
		t.Fatalf("repeat: exit %d, stdout %q, %d writes", code, out, len(bank.Writes()))
	}
}
