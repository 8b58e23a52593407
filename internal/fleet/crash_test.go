package fleet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// The kill -9 test runs this test binary again as a child: with
// childDirEnv set, TestMain runs an agent instead of the tests.
const (
	childDirEnv  = "FERRY_FLEET_CHILD_DIR"
	childNATSEnv = "FERRY_FLEET_CHILD_NATS"
	crashFiles   = 24
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(childDirEnv); dir != "" {
		if err := runChild(dir, os.Getenv(childNATSEnv)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild runs an agent on the store in dir against the server at url
// until it is killed. Its Prepare checks that the staged bundle is whole,
// as the loader would find it, and its apply prints the generation.
func runChild(dir, url string) error {
	store, err := OpenStore(dir)
	if err != nil {
		return err
	}
	cfg := DefaultConfig()
	cfg.Heartbeat, cfg.ReadinessWindow = time.Second, time.Second
	a, err := New(cfg, Options{
		Site: "s", Gateway: "g",
		Connect: func() (*nats.Conn, error) { return nats.Connect(url) },
		Store:   store,
		Hooks: Hooks{
			Prepare: func(d string) (func() error, error) {
				if d == "" {
					return func() error { return nil }, nil
				}
				gen, err := testutil.OneGeneration(d, crashFiles)
				if err != nil {
					return nil, err
				}
				return func() error { fmt.Printf("applied %d\n", gen); return nil }, nil
			},
			Gate:   func() func() error { return func() error { return nil } },
			Health: func() Health { return Health{} },
		},
	})
	if err != nil {
		return err
	}
	return a.Run(context.Background())
}

// crashBundle is generation gen of the test's bundle: crashFiles files,
// each naming the generation.
func crashBundle(gen uint64) *Bundle {
	b := &Bundle{Format: BundleFormat, Revision: gen, Files: map[string]string{}}
	pad := strings.Repeat("# padding\n", 400)
	b.Files[MainFile] = fmt.Sprintf("# gen %d\n%s", gen, pad)
	for i := 1; i < crashFiles; i++ {
		b.Files[fmt.Sprintf("devices.d/f%02d.yaml", i)] = fmt.Sprintf("# gen %d\n%s", gen, pad)
	}
	return b
}

// TestKillDuringApply kills an agent (a child process, kill -9) at random
// moments while bundles are pushed to it as fast as it applies them, and
// restarts it: each time, the state names a last-known-good bundle that
// is whole and of one generation, never older than before the kill.
func TestKillDuringApply(t *testing.T) {
	srv := testpeer.NATS(t)
	_, js := srv.Connect()
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: DefaultConfigBucket})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: DefaultStatusBucket}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	child := testpeer.NewChild(t, os.Args[0], "-test.run=^$")
	child.Env = []string{childDirEnv + "=" + dir, childNATSEnv + "=" + srv.URL()}

	pushCtx, stopPush := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for gen := uint64(1); pushCtx.Err() == nil; gen++ {
			v, _ := crashBundle(gen).Encode()
			if _, err := kv.Put(pushCtx, Key("s", "g"), v); err != nil && pushCtx.Err() == nil {
				t.Errorf("push: %v", err)
				return
			}
			// Paces the load: a new revision about every 5ms.
			time.Sleep(5 * time.Millisecond)
		}
	}()
	defer func() { stopPush(); wg.Wait() }()

	store, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	kills := 0
	for i := 0; i < 15; i++ {
		child.Start()
		testutil.Eventually(t, 20*time.Second, "the child to apply a bundle", func() error {
			if !strings.Contains(child.RunLog(), "applied ") {
				return fmt.Errorf("no apply yet")
			}
			return nil
		})
		// The kill's timing is what is under test: anywhere within the
		// next applies.
		time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
		if err := child.Kill(); !testpeer.Killed(err) {
			t.Fatalf("kill: %v (the child exited by itself?)", err)
		}
		kills++
		st, err := store.State()
		if err != nil {
			t.Fatalf("after kill %d: %v", kills, err)
		}
		if st.LKG == nil {
			t.Fatalf("after kill %d: no last-known-good", kills)
		}
		gen, err := testutil.OneGeneration(store.Dir(st.LKG.Hash), crashFiles)
		if err != nil {
			t.Fatalf("after kill %d: %v", kills, err)
		}
		if gen != st.LKG.Revision || gen < last {
			t.Fatalf("after kill %d: generation %d, state revision %d, before %d", kills, gen, st.LKG.Revision, last)
		}
		last = gen
	}
	t.Logf("%d kills, last-known-good reached generation %d", kills, last)
}
