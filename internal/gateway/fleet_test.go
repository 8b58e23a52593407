package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry/internal/fleet"
	"github.com/ferry-edge/ferry/internal/plantsim"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/internal/web"
)

// fleetRig is a gateway in fleet mode against a simulated plant whose
// NATS server holds the fleet buckets.
type fleetRig struct {
	t           *testing.T
	p           *plantsim.Plant
	h           *harness
	path        string
	cfgKV, stKV jetstream.KeyValue
	key         string
}

const fleetBlock = "fleet: {readiness_window: 3s, heartbeat: 1s, max_bundle_bytes: 8KiB}\n"

// startFleetRig starts a plant with one press, creates the buckets and
// runs a gateway whose local file configures press1 and fleet mode.
func startFleetRig(t *testing.T) *fleetRig {
	t.Helper()
	p := startPlant(t, 1)
	r := &fleetRig{t: t, p: p, key: fleet.Key("test", gatewayID)}
	r.createBuckets()
	r.path = filepath.Join(t.TempDir(), "ferry.yaml")
	testutil.WriteFile(t, r.path, plantConfig{DataDir: t.TempDir(), Uplink: true, Extra: fleetBlock}.yaml(p))
	r.h = startDaemon(t, r.path)
	waitFor(t, 20*time.Second, "press1 connected", func() bool { return r.h.status("press1").Connected })
	return r
}

func (r *fleetRig) createBuckets() {
	_, js := testpeer.Connect(r.t, r.p.NATS.URL)
	ctx := context.Background()
	var err error
	if r.cfgKV, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: fleet.DefaultConfigBucket, History: 16, MaxValueSize: 64 << 10}); err != nil {
		r.t.Fatal(err)
	}
	if r.stKV, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: fleet.DefaultStatusBucket}); err != nil {
		r.t.Fatal(err)
	}
}

// bundleMain is a bundle's ferry.yaml: press1 at addr, with rule.
func bundleMain(addr, rule string) string {
	return fmt.Sprintf(`devices:
  - name: press1
    modbus: {url: "tcp://%s", unit: 1, interval: 100ms, timeout: 500ms}
    points:
      - {name: oil_temp, table: holding, address: %d, type: float32}
rules:
  - {name: %s, when: "press1.oil_temp > 1000", severity: warning}
alerts: {log: {enabled: true}}
`, addr, plantsim.HROilTemp, rule)
}

// push writes a bundle to the gateway's key and returns the value.
func (r *fleetRig) push(rev uint64, main string) []byte {
	r.t.Helper()
	b := &fleet.Bundle{Format: fleet.BundleFormat, Revision: rev, Files: map[string]string{"ferry.yaml": main}}
	v, err := b.Encode()
	if err != nil {
		r.t.Fatal(err)
	}
	r.put(v)
	return v
}

func (r *fleetRig) put(v []byte) {
	r.t.Helper()
	if _, err := r.cfgKV.Put(context.Background(), r.key, v); err != nil {
		r.t.Fatal(err)
	}
}

// status reads the gateway's status key.
func (r *fleetRig) status() (fleet.Status, error) {
	var st fleet.Status
	e, err := r.stKV.Get(context.Background(), r.key)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(e.Value(), &st)
}

// waitResult waits for a status whose last result, written after since,
// is in state and holds reason.
func (r *fleetRig) waitResult(since time.Time, state, reason string) fleet.Status {
	r.t.Helper()
	var st fleet.Status
	testutil.Eventually(r.t, 30*time.Second, "status "+state+" "+reason, func() error {
		var err error
		if st, err = r.status(); err != nil {
			return err
		}
		if st.Last.Time.Before(since) || st.Last.State != state || !strings.Contains(st.Last.Reason, reason) {
			return fmt.Errorf("last = %+v", st.Last)
		}
		return nil
	})
	return st
}

func (r *fleetRig) version() string { return r.h.d.curCfg.Load().Version }

// TestFleetApplyRefuseRollBack drives one gateway through every outcome
// of a pushed bundle, with a real nats-server and Modbus peer: applied
// (kept as last-known-good), refused (invalid, local-only, oversize,
// replay: nothing changes) and rolled back (a device pointed at a closed
// port is not Good again within the readiness window).
func TestFleetApplyRefuseRollBack(t *testing.T) {
	r := startFleetRig(t)
	addr := r.p.Presses[0].Addr
	// The status is written again when the uplink connects.
	testutil.Eventually(t, 30*time.Second, "a status of the local file, uplink connected", func() error {
		st, err := r.status()
		if err != nil {
			return err
		}
		if st.Last.State != fleet.StateLocal || st.Running != nil || st.Version != "test" || st.Devices["connected"] != 1 || !st.Uplink.Connected || st.Gateway != gatewayID {
			return fmt.Errorf("status = %+v", st)
		}
		return nil
	})

	t0 := time.Now()
	v1 := r.push(1, bundleMain(addr, "r1"))
	st := r.waitResult(t0, fleet.StateApplied, "")
	if st.Running == nil || st.Running.Revision != 1 || st.ConfigVersion != r.version() {
		t.Fatalf("after rev 1: %+v", st)
	}
	if rules := r.h.d.curCfg.Load().Rules; len(rules) != 1 || rules[0].Name != "r1" {
		t.Fatalf("rules = %+v", rules)
	}
	applied := r.version()
	// The API (and the console, from /api/health) shows fleet mode.
	code, body := r.h.get("/api/status")
	var api struct{ Fleet web.FleetStatus }
	if err := json.Unmarshal([]byte(body), &api); code != 200 || err != nil || api.Fleet.Key != "test.gw1" || api.Fleet.Revision != 1 || api.Fleet.Last != "applied" {
		t.Fatalf("/api/status: %d %v %s", code, err, body)
	}

	refusals := []struct {
		name, main, reason string
		value              []byte
	}{
		{name: "invalid", main: strings.Replace(bundleMain(addr, "r2"), "float32", "flaot32", 1), reason: "ferry.yaml:5:"},
		{name: "local-only", main: bundleMain(addr, "r2") + "data_dir: /tmp/elsewhere\n", reason: "data_dir: is local-only"},
		{name: "unknown key", main: bundleMain(addr, "r2") + "rulez: []\n", reason: "rulez: unknown field"},
		{name: "oversize", value: []byte(`{"format":"ferry.bundle/v1","revision":9,"comment":"` + strings.Repeat("x", 9<<10) + `","files":{"ferry.yaml":""}}`), reason: "over the limit"},
		{name: "not a bundle", value: []byte(`{"format":"ferry.bundle/v1","revision":9,"files":{"ferry.yaml":""},"data_dir":"/"}`), reason: "unknown field"},
	}
	for i, tc := range refusals {
		t0 := time.Now()
		if tc.value != nil {
			r.put(tc.value)
		} else {
			r.push(uint64(2+i), tc.main)
		}
		st := r.waitResult(t0, fleet.StateRefused, tc.reason)
		if r.version() != applied || st.Running == nil || st.Running.Revision != 1 {
			t.Fatalf("%s: the running configuration changed: %s, running %+v", tc.name, r.version(), st.Running)
		}
	}

	// A device at a closed port: applied, not ready, rolled back.
	closed := testpeer.Reserve(t)
	t0 = time.Now()
	r.push(10, bundleMain(closed.Addr(), "r10"))
	st = r.waitResult(t0, fleet.StateRolledBack, "device press1")
	if r.version() != applied || st.Running.Revision != 1 {
		t.Fatalf("not rolled back: version %s (want %s), running %+v", r.version(), applied, st.Running)
	}
	waitFor(t, 20*time.Second, "press1 connected again", func() bool { return r.h.status("press1").Connected })

	// A good revision, then the old value of revision 1 written again: a
	// replay, refused.
	t0 = time.Now()
	r.push(11, bundleMain(addr, "r11"))
	r.waitResult(t0, fleet.StateApplied, "")
	applied = r.version()
	t0 = time.Now()
	r.put(v1)
	st = r.waitResult(t0, fleet.StateRefused, "revision 1 is older than the applied revision 11")
	if r.version() != applied || st.Running.Revision != 11 {
		t.Fatalf("replay changed the gateway: %s %+v", r.version(), st.Running)
	}
}

// TestFleetBootsOnLastKnownGoodOffline: a gateway that applied a bundle
// starts again on it with its NATS server gone.
func TestFleetBootsOnLastKnownGoodOffline(t *testing.T) {
	r := startFleetRig(t)
	t0 := time.Now()
	r.push(1, bundleMain(r.p.Presses[0].Addr, "from_fleet"))
	r.waitResult(t0, fleet.StateApplied, "")
	applied := r.version()
	if err := r.h.stop(); err != nil {
		t.Fatal(err)
	}
	r.p.NATS.Shutdown()

	h := startDaemon(t, r.path)
	cfg := h.d.curCfg.Load()
	if cfg.Version != applied || len(cfg.Rules) != 1 || cfg.Rules[0].Name != "from_fleet" {
		t.Fatalf("booted on version %s rules %+v, want the last-known-good %s", cfg.Version, cfg.Rules, applied)
	}
	waitFor(t, 20*time.Second, "press1 connected", func() bool { return h.status("press1").Connected })
	// SIGHUP in fleet mode reloads the local file with the bundle.
	h.d.Reload(r.path)
	if v := h.d.curCfg.Load().Version; v != applied {
		t.Fatalf("after a reload: version %s, want %s", v, applied)
	}
}
