package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry/internal/fleet"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

const fleetE2EDevices = 12

// fleetE2EBundle is generation gen: a main file and fleetE2EDevices
// device files, each naming gen.
func fleetE2EBundle(gen uint64, down string) *fleet.Bundle {
	b := &fleet.Bundle{Format: fleet.BundleFormat, Revision: gen, Files: map[string]string{
		"ferry.yaml": fmt.Sprintf("# gen %d\ndevices_dir: devices.d\n", gen),
	}}
	for i := range fleetE2EDevices {
		b.Files[fmt.Sprintf("devices.d/d%02d.yaml", i)] = fmt.Sprintf(`# gen %d
devices:
  - name: d%02d
    description: gen %d
    modbus: {url: "tcp://%s", unit: 1, interval: 1s, timeout: 200ms}
    points:
      - {name: p, table: holding, address: 0}
`, gen, i, gen, down)
	}
	return b
}

// apiFleet reads the fleet part of ferry's /api/status.
func apiFleet(base string) (*struct {
	Revision uint64 `json:"revision"`
	Last     string `json:"last"`
}, error) {
	code, body, err := httpGet(base + "/api/status")
	if err != nil || code != 200 {
		return nil, fmt.Errorf("/api/status: %d %v", code, err)
	}
	var st struct {
		Fleet *struct {
			Revision uint64 `json:"revision"`
			Last     string `json:"last"`
		} `json:"fleet"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Fleet == nil {
		return nil, fmt.Errorf("/api/status without fleet: %v %s", err, body)
	}
	return st.Fleet, nil
}

// TestFleetKillDuringApplyBinary runs the ferry binary in fleet mode while
// bundles of many files are pushed to it back to back, and kills it
// (kill -9) at random moments: after each kill the last-known-good bundle
// on disk is whole and of one generation, never older than before, and
// the restarted gateway boots on it (its API says so) before it goes on
// to the newest.
func TestFleetKillDuringApplyBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the ferry binary")
	}
	bin := buildFerry(t)
	srv := testpeer.NATS(t)
	_, js := srv.Connect()
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: fleet.DefaultConfigBucket, History: 4})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: fleet.DefaultStatusBucket}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "ferry.yaml")
	testutil.WriteFile(t, cfg, fmt.Sprintf(`gateway: {id: gw1, site: s1}
data_dir: %s
http: {listen: "127.0.0.1:0"}
uplink:
  nats: {urls: ["%s"], stream: FLEETE2E, create_stream: true, reconnect_max: 500ms, connect_timeout: 1s}
fleet: {readiness_window: 5s, heartbeat: 1s}
`, data, srv.URL()))
	down := testpeer.DownAddr(t)

	var pushed atomic.Uint64
	pushCtx, stopPush := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for gen := uint64(1); pushCtx.Err() == nil; gen++ {
			v, _ := fleetE2EBundle(gen, down).Encode()
			if _, err := kv.Put(pushCtx, fleet.Key("s1", "gw1"), v); err != nil {
				if pushCtx.Err() == nil {
					t.Errorf("push: %v", err)
				}
				return
			}
			pushed.Store(gen)
			// Paces the pushes: about as fast as the gateway applies them.
			time.Sleep(time.Duration(20+rand.IntN(60)) * time.Millisecond)
		}
	}()
	stopped := false
	defer func() {
		if !stopped {
			stopPush()
			wg.Wait()
		}
	}()

	f := testpeer.NewChild(t, bin, "run", "-config", cfg)
	store, err := fleet.OpenStore(data)
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for kill := 1; kill <= 6; kill++ {
		f.Start()
		base := httpBase(t, f)
		// It boots on the last-known-good of the previous kill.
		if last > 0 {
			fl, err := apiFleet(base)
			if err != nil {
				t.Fatal(err)
			}
			if fl.Revision < last {
				t.Fatalf("restart %d: boots on revision %d, older than the last-known-good %d", kill, fl.Revision, last)
			}
		}
		eventually(t, 60*time.Second, "a newer bundle applied", func() error {
			fl, err := apiFleet(base)
			if err != nil {
				return err
			}
			if fl.Revision <= last {
				return fmt.Errorf("running revision %d, last %s", fl.Revision, fl.Last)
			}
			return nil
		})
		// The kill's moment is what is under test.
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		if err := f.Kill(); !testpeer.Killed(err) {
			t.Fatalf("kill %d: %v", kill, err)
		}
		st, err := store.State()
		if err != nil || st.LKG == nil {
			t.Fatalf("after kill %d: state %+v, %v", kill, st, err)
		}
		gen, err := testutil.OneGeneration(store.Dir(st.LKG.Hash), fleetE2EDevices+1)
		if err != nil {
			t.Fatalf("after kill %d: %v", kill, err)
		}
		if gen != st.LKG.Revision || gen < last {
			t.Fatalf("after kill %d: last-known-good generation %d, state revision %d, before %d", kill, gen, st.LKG.Revision, last)
		}
		last = gen
	}
	// Offline of new pushes: the restarted gateway catches up with the
	// newest bundle.
	stopPush()
	wg.Wait()
	stopped = true
	f.Start()
	base := httpBase(t, f)
	newest := pushed.Load()
	eventually(t, 60*time.Second, "the newest bundle applied", func() error {
		fl, err := apiFleet(base)
		if err != nil {
			return err
		}
		if fl.Revision != newest || fl.Last != "applied" {
			return fmt.Errorf("running revision %d (%s), want %d", fl.Revision, fl.Last, newest)
		}
		return nil
	})
	stopFerry(t, f)
	t.Logf("6 kills; last-known-good generations reached %d; %d pushed", last, newest)
}
