package fleet

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestDomain: with fleet.domain set, the agent reaches buckets that live
// in that JetStream domain (as a hub's, through a leaf node), here on a
// single server whose JetStream domain is "hub".
func TestDomain(t *testing.T) {
	srv := testpeer.NATS(t, func(o *server.Options) { o.JetStreamDomain = "hub" })
	nc, _ := srv.Connect()
	js, err := jetstream.NewWithDomain(nc, "hub")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cfgKV, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: DefaultConfigBucket})
	if err != nil {
		t.Fatal(err)
	}
	stKV, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: DefaultStatusBucket})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := (&Bundle{Format: BundleFormat, Revision: 1, Files: map[string]string{MainFile: "rules: []\n"}}).Encode()
	if _, err := cfgKV.Put(ctx, Key("s", "g"), v); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		mod    func(*Config)
		reachs bool
	}{
		{"domain", func(c *Config) { c.Domain = "hub" }, true},
		{"api prefix", func(c *Config) { c.APIPrefix = "$JS.hub.API" }, true},
		{"wrong domain", func(c *Config) { c.Domain = "elsewhere" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := stKV.Purge(ctx, Key("s", "g")); err != nil {
				t.Fatal(err)
			}
			cfg := DefaultConfig()
			tc.mod(&cfg)
			applied := make(chan struct{}, 1)
			a, err := New(cfg, Options{
				Site: "s", Gateway: "g",
				Connect: func() (*nats.Conn, error) { return nats.Connect(srv.URL()) },
				Store:   mustStore(t),
				Hooks: Hooks{
					Prepare: func(string) (func() error, error) {
						return func() error { applied <- struct{}{}; return nil }, nil
					},
					Gate:   func() func() error { return func() error { return nil } },
					Health: func() Health { return Health{} },
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- a.Run(runCtx) }()
			defer testutil.StopRun(t, stop, done, 10*time.Second)
			if !tc.reachs {
				testutil.Never(t, 2*time.Second, "an agent of another domain applied", func() bool { return len(applied) > 0 })
				return
			}
			testutil.Eventually(t, 20*time.Second, "the status in the hub domain", func() error {
				e, err := stKV.Get(ctx, Key("s", "g"))
				if err != nil {
					return err
				}
				if len(applied) == 0 {
					return fmt.Errorf("not applied; status %s", e.Value())
				}
				return nil
			})
		})
	}
}

func mustStore(t *testing.T) *Store {
	t.Helper()
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}
