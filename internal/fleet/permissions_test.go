package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// GatewayPermissions are the NATS permissions of the user of gateway
// site.gw with the default buckets and subjects: what docs/fleet.md
// shows as a server configuration block.
func GatewayPermissions(site, gw string) *server.Permissions {
	key := Key(site, gw)
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			// Open the buckets.
			"$JS.API.STREAM.INFO.KV_" + DefaultConfigBucket,
			"$JS.API.STREAM.INFO.KV_" + DefaultStatusBucket,
			// Watch its own config key and the site key: consumers
			// filtered on exactly those keys.
			"$JS.API.CONSUMER.CREATE.KV_" + DefaultConfigBucket + ".*.$KV." + DefaultConfigBucket + "." + key,
			"$JS.API.CONSUMER.CREATE.KV_" + DefaultConfigBucket + ".*.$KV." + DefaultConfigBucket + "." + site,
			"$JS.FC.KV_" + DefaultConfigBucket + ".>",
			// Write its own status key.
			"$KV." + DefaultStatusBucket + "." + key,
			// Publish its own telemetry, alerts and catalog.
			"ferry." + key + ".>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			// Its own inboxes only (InboxPrefix).
			InboxPrefix(site, gw) + ".>",
		}},
	}
}

// TestPermissions runs a nats-server whose gateway users have
// GatewayPermissions: gateway A works fully (its agent watches its
// config key and writes its status; it publishes its telemetry) and can
// neither read B's config, nor write B's status, nor publish as B, nor
// listen to B's inboxes.
func TestPermissions(t *testing.T) {
	srv := testpeer.NATS(t, func(o *server.Options) {
		o.Users = []*server.User{
			{Username: "admin", Password: "admin"},
			{Username: "gwA", Password: "a", Permissions: GatewayPermissions("s", "gwA")},
			{Username: "gwB", Password: "b", Permissions: GatewayPermissions("s", "gwB")},
		}
	})
	ctx := context.Background()
	_, js := srv.Connect(nats.UserInfo("admin", "admin"))
	cfgKV, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: DefaultConfigBucket, History: 8})
	if err != nil {
		t.Fatal(err)
	}
	stKV, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: DefaultStatusBucket})
	if err != nil {
		t.Fatal(err)
	}
	secret := "rules: [] # B's own"
	for gw, text := range map[string]string{"gwA": "rules: []", "gwB": secret} {
		v, _ := (&Bundle{Format: BundleFormat, Revision: 1, Files: map[string]string{MainFile: text}}).Encode()
		if _, err := cfgKV.Put(ctx, Key("s", gw), v); err != nil {
			t.Fatal(err)
		}
	}

	// A's agent, connected as gwA: it gets its bundle and reports.
	store, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	cfg := DefaultConfig()
	cfg.Heartbeat = time.Second
	a, err := New(cfg, Options{
		Site: "s", Gateway: "gwA",
		Connect: func() (*nats.Conn, error) {
			return nats.Connect(srv.URL(), nats.UserInfo("gwA", "a"), nats.CustomInboxPrefix(InboxPrefix("s", "gwA")))
		},
		Store: store,
		Hooks: Hooks{
			Prepare: func(dir string) (func() error, error) {
				mu.Lock()
				got = append(got, dir)
				mu.Unlock()
				return func() error { return nil }, nil
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
	testutil.Eventually(t, 20*time.Second, "A's status applied", func() error {
		e, err := stKV.Get(ctx, Key("s", "gwA"))
		if err != nil {
			return err
		}
		var st Status
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			return err
		}
		if st.Last.State != StateApplied || st.Running == nil || st.Running.Revision != 1 {
			return fmt.Errorf("status %+v", st.Last)
		}
		return nil
	})
	// A change of A's key reaches it through the watch.
	v2, _ := (&Bundle{Format: BundleFormat, Revision: 2, Files: map[string]string{MainFile: "rules: [] # 2"}}).Encode()
	if _, err := cfgKV.Put(ctx, Key("s", "gwA"), v2); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "A to apply revision 2", func() error {
		if _, running := a.Result(); running == nil || running.Revision != 2 {
			return fmt.Errorf("running %+v", running)
		}
		return nil
	})

	// A's own client, as gwA.
	var errMu sync.Mutex
	var asyncErrs []string
	nc, err := nats.Connect(srv.URL(), nats.UserInfo("gwA", "a"), nats.CustomInboxPrefix(InboxPrefix("s", "gwA")),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			errMu.Lock()
			asyncErrs = append(asyncErrs, err.Error())
			errMu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ajs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 2*time.Second) }
	akv, err := func() (jetstream.KeyValue, error) {
		c, cancel := short()
		defer cancel()
		return ajs.KeyValue(c, DefaultConfigBucket)
	}()
	if err != nil {
		t.Fatalf("A cannot open the config bucket: %v", err)
	}
	c, cancel := short()
	if e, err := akv.Get(c, Key("s", "gwB")); err == nil {
		t.Errorf("A read B's config: %q", e.Value())
	}
	cancel()
	c, cancel = short()
	if w, err := akv.Watch(c, Key("s", "gwB")); err == nil {
		select {
		case e := <-w.Updates():
			if e != nil {
				t.Errorf("A watched B's config: %q", e.Value())
			}
		case <-c.Done():
		}
		w.Stop()
	}
	cancel()
	c, cancel = short()
	if w, err := akv.Watch(c, "s.>"); err == nil {
		select {
		case e := <-w.Updates():
			if e != nil {
				t.Errorf("A watched the site's keys: %s", e.Key())
			}
		case <-c.Done():
		}
		w.Stop()
	}
	cancel()
	askv, err := func() (jetstream.KeyValue, error) {
		c, cancel := short()
		defer cancel()
		return ajs.KeyValue(c, DefaultStatusBucket)
	}()
	if err != nil {
		t.Fatalf("A cannot open the status bucket: %v", err)
	}
	c, cancel = short()
	if _, err := askv.Put(c, Key("s", "gwB"), []byte(`{"last":{"state":"applied"}}`)); err == nil {
		t.Error("A wrote B's status")
	}
	cancel()
	if _, err := stKV.Get(ctx, Key("s", "gwB")); err == nil {
		t.Error("B's status key exists: A wrote it")
	}
	// Listening to B's inboxes, or to every inbox, is refused.
	for _, subj := range []string{InboxPrefix("s", "gwB") + ".>", "_INBOX.>"} {
		if _, err := nc.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
	}
	// Telemetry: A's subjects arrive, B's are refused.
	adm, err := nats.Connect(srv.URL(), nats.UserInfo("admin", "admin"))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	sub, err := adm.SubscribeSync("ferry.s.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := adm.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{"ferry.s.gwB.telemetry.press1", "ferry.s.gwA.telemetry.press1"} {
		if err := nc.Publish(subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil || m.Subject != "ferry.s.gwA.telemetry.press1" {
		t.Fatalf("first message seen: %v %v, want A's telemetry only", m, err)
	}
	if m, err := sub.NextMsg(300 * time.Millisecond); err == nil {
		t.Errorf("a second message: %s", m.Subject)
	}
	testutil.Eventually(t, 5*time.Second, "the violations reported to A", func() error {
		errMu.Lock()
		defer errMu.Unlock()
		all := strings.Join(asyncErrs, "\n")
		for _, want := range []string{
			`Subscription to "` + InboxPrefix("s", "gwB") + `.>"`,
			`Subscription to "_INBOX.>"`,
			`Publish to "ferry.s.gwB.telemetry.press1"`,
		} {
			if !strings.Contains(all, want) {
				return fmt.Errorf("no %s in %q", want, all)
			}
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Errorf("A's agent prepared %d bundles, want 2", len(got))
	}
}
