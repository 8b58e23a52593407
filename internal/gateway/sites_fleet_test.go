package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry/internal/fleet"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestFleetThroughLeaf: the fleet buckets live at the hub (JetStream
// domain "hub"); a gateway connected only to its site's nats-server (a
// leaf node of the hub, domain "lyon") reaches them with fleet.domain:
// hub. A bundle pushed at the hub is applied by the gateway, and its
// status comes back to the hub's status bucket. With the hub link down the
// gateway keeps running (and shipping to the site); a bundle pushed at the
// hub meanwhile is applied once the link returns.
func TestFleetThroughLeaf(t *testing.T) {
	if testing.Short() {
		t.Skip("a hub, a site and a gateway")
	}
	hub := testpeer.NATSHub(t, 1, "hub")
	site := testpeer.NATSSite(t, hub, "lyon")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := site.JetStream(t).CreateStream(ctx, jetstream.StreamConfig{
		Name: "SITE", Subjects: []string{"ferry.lyon.>"}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	hjs := hub.JetStream(t)
	cfgKV, err := hjs.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: fleet.DefaultConfigBucket, History: 16, MaxValueSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	stKV, err := hjs.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: fleet.DefaultStatusBucket})
	if err != nil {
		t.Fatal(err)
	}

	p := startPlant(t, 1)
	pr := p.Presses[0]
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	testutil.WriteFile(t, path, siteConfig("gw1", t.TempDir(), pr, site.URL())+
		"fleet: {domain: hub, readiness_window: 5s, heartbeat: 1s}\n")
	h := startDaemon(t, path)
	waitFor(t, 20*time.Second, "press connected", func() bool { return h.status(pr.Name).Connected })

	key := fleet.Key("lyon", "gw1")
	push := func(rev uint64, rule string) {
		t.Helper()
		main := fmt.Sprintf(`devices:
  - name: %s
    modbus: {url: "tcp://%s", unit: 1, interval: 100ms, timeout: 500ms}
    points:
      - {name: oil_temp, table: holding, address: 0, type: float32}
rules:
  - {name: %s, when: "%s.oil_temp > 1000", severity: warning}
`, pr.Name, pr.Addr, rule, pr.Name)
		b := &fleet.Bundle{Format: fleet.BundleFormat, Revision: rev, Files: map[string]string{"ferry.yaml": main}}
		v, err := b.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cfgKV.Put(ctx, key, v); err != nil {
			t.Fatal(err)
		}
	}
	applied := func(rev uint64, rule string) {
		t.Helper()
		testutil.Eventually(t, 40*time.Second, fmt.Sprintf("revision %d applied, status at the hub", rev), func() error {
			e, err := stKV.Get(ctx, key)
			if err != nil {
				return err
			}
			var st fleet.Status
			if err := json.Unmarshal(e.Value(), &st); err != nil {
				return err
			}
			if st.Last.State != fleet.StateApplied || st.Running == nil || st.Running.Revision != rev {
				return fmt.Errorf("status at the hub: last %+v, running %+v", st.Last, st.Running)
			}
			if rules := h.d.curCfg.Load().Rules; len(rules) != 1 || rules[0].Name != rule {
				return fmt.Errorf("rules running: %+v", rules)
			}
			return nil
		})
	}

	push(1, "r1")
	applied(1, "r1")

	// The hub link goes down: the gateway carries on; a bundle pushed at
	// the hub waits there and is applied when the link returns.
	site.HubDown(t)
	site.WaitLinked(t, false, 10*time.Second)
	push(2, "r2")
	testutil.Never(t, 2*time.Second, "a bundle applied while the hub is unreachable", func() bool {
		rules := h.d.curCfg.Load().Rules
		return len(rules) == 1 && rules[0].Name == "r2"
	})
	if !h.status(pr.Name).Connected {
		t.Error("the device went down with the hub link")
	}
	site.HubUp(t)
	site.WaitLinked(t, true, 20*time.Second)
	applied(2, "r2")
}
