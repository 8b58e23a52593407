package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/fleet"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

const fleetMain = `devices_dir: devices.d
rules:
  - {name: hot, when: "press1.oil_temp > %s", severity: warning}
`

const fleetDevices = `devices:
  - name: press1
    modbus: {url: "tcp://127.0.0.1:1502", unit: 1}
    points:
      - {name: oil_temp, table: holding, address: 0, type: %s}
`

func writeBundleDir(t *testing.T, limit, typ string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "devices.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, filepath.Join(dir, "ferry.yaml"), strings.Replace(fleetMain, "%s", limit, 1))
	testutil.WriteFile(t, filepath.Join(dir, "devices.d", "press.yaml"), strings.Replace(fleetDevices, "%s", typ, 1))
	return dir
}

// TestFleetCLI drives push, status, diff, rollback and watch against a
// real nats-server.
func TestFleetCLI(t *testing.T) {
	srv := testpeer.NATS(t)
	_, js := srv.Connect()
	ctx := context.Background()
	conn := []string{"-server", srv.URL()}
	fl := func(sub string, args ...string) (int, string, string) {
		return run(t, append(append([]string{"fleet", sub}, conn...), args...)...)
	}

	// Invalid: refused locally with the place of the error, nothing
	// written.
	code, _, errOut := fl("push", "-site", "test", "-gateway", "gw1", writeBundleDir(t, "80", "flaot32"))
	if code != 1 || !strings.Contains(errOut, "devices.d/press.yaml:5:") || !strings.Contains(errOut, "nothing pushed") {
		t.Fatalf("invalid push: code %d, stderr %s", code, errOut)
	}
	kv, err := js.KeyValue(ctx, fleet.DefaultConfigBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "test.gw1"); err == nil {
		t.Fatal("an invalid bundle was written")
	}
	// A local-only setting: refused.
	bad := writeBundleDir(t, "80", "float32")
	testutil.WriteFile(t, filepath.Join(bad, "ferry.yaml"), "data_dir: /tmp\n"+strings.Replace(fleetMain, "%s", "80", 1))
	if code, _, errOut := fl("push", "-site", "test", "-gateway", "gw1", bad); code != 1 || !strings.Contains(errOut, "data_dir: is local-only") {
		t.Fatalf("local-only push: code %d, stderr %s", code, errOut)
	}

	code, out, errOut := fl("push", "-site", "test", "-gateway", "gw1", "-m", "first", writeBundleDir(t, "80", "float32"))
	if code != 0 || !strings.Contains(out, "pushed test.gw1: bundle revision 1, key revision 1, 2 files") {
		t.Fatalf("push: code %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = fl("push", "-site", "test", "-gateway", "gw1", "-expect", "1", writeBundleDir(t, "90", "float32"))
	if code != 0 || !strings.Contains(out, "bundle revision 2, key revision 2") {
		t.Fatalf("second push: code %d\n%s%s", code, out, errOut)
	}
	// Compare-and-set: an operator who read revision 1 cannot overwrite
	// revision 2.
	code, _, errOut = fl("push", "-site", "test", "-gateway", "gw1", "-expect", "1", writeBundleDir(t, "95", "float32"))
	if code != 1 || !strings.Contains(errOut, "at key revision 2, not 1") {
		t.Fatalf("stale push: code %d, stderr %s", code, errOut)
	}

	// Status as two gateways wrote it: gw1 running revision 1, gw2 silent
	// for an hour.
	st, err := js.KeyValue(ctx, fleet.DefaultStatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	putStatus := func(gw string, s fleet.Status) {
		s.Gateway, s.Site, s.Heartbeat = gw, "test", 1
		b, _ := json.Marshal(s)
		if _, err := st.Put(ctx, "test."+gw, b); err != nil {
			t.Fatal(err)
		}
	}
	first := fleet.Applied{Revision: 1, State: fleet.StateApplied, Time: now, Hash: "h1"}
	putStatus("gw1", fleet.Status{Time: now, Running: &first, Last: first, Health: fleet.Health{Devices: map[string]int{"connected": 1}, Uplink: fleet.UplinkHealth{Configured: true, Connected: true}}})
	putStatus("gw2", fleet.Status{Time: now.Add(-time.Hour), Last: fleet.Applied{State: fleet.StateLocal}})
	code, out, _ = fl("status", "-site", "test")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 {
		t.Fatalf("status: code %d\n%s", code, out)
	}
	if f := strings.Fields(lines[1]); f[1] != "gw1" || f[2] != "applied" || f[3] != "2" || f[4] != "1" || !strings.Contains(lines[1], " no ") {
		t.Errorf("gw1 line: %q", lines[1])
	}
	if f := strings.Fields(lines[2]); f[1] != "gw2" || f[2] != "local" || f[len(f)-1] != "yes" {
		t.Errorf("gw2 line: %q", lines[2])
	}

	// diff: desired revision 2 against the running revision 1.
	code, out, _ = fl("diff", "test.gw1")
	if code != 0 || !strings.Contains(out, "desired: bundle revision 2") || !strings.Contains(out, `-  - {name: hot, when: "press1.oil_temp > 80"`) || !strings.Contains(out, `+  - {name: hot, when: "press1.oil_temp > 90"`) {
		t.Fatalf("diff: code %d\n%s", code, out)
	}

	// watch prints the current value, then the rollback's write.
	var wout testutil.SyncBuffer
	wdone := make(chan int, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		wdone <- runMain(wctx, append(append([]string{"fleet", "watch"}, conn...), "-n", "2"), &wout, &bytes.Buffer{})
	}()
	testutil.Eventually(t, 10*time.Second, "watch to print the current value", func() error {
		if !strings.Contains(wout.String(), "config test.gw1 key revision 2 put bundle revision 2") {
			return fmt.Errorf("watch printed %q", wout.String())
		}
		return nil
	})
	code, out, errOut = fl("rollback", "-site", "test", "gw1")
	if code != 0 || !strings.Contains(out, "rolled test.gw1 back to the files of key revision 1: bundle revision 3, key revision 3") {
		t.Fatalf("rollback: code %d\n%s%s", code, out, errOut)
	}
	e, err := kv.Get(ctx, "test.gw1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := fleet.DecodeBundle(e.Value(), 0)
	if err != nil || b.Revision != 3 || !strings.Contains(b.Files["ferry.yaml"], "> 80") {
		t.Fatalf("after rollback: %+v %v", b, err)
	}
	select {
	case c := <-wdone:
		if c != 0 || !strings.Contains(wout.String(), "config test.gw1 key revision 3 put bundle revision 3 rollback to key revision 1") {
			t.Fatalf("watch: code %d\n%s", c, wout.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("watch did not print the rollback")
	}
	// A rollback to a revision not in the history.
	if code, _, errOut := fl("rollback", "-site", "test", "gw1", "99"); code != 1 || !strings.Contains(errOut, "not in its history") {
		t.Fatalf("rollback 99: code %d %s", code, errOut)
	}
}
