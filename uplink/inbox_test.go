package uplink

import (
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// TestInboxPrefix runs the uplink as a NATS user that may subscribe to
// its own inboxes only (_INBOX.SITE.GATEWAY.>, docs/fleet.md): its
// acknowledgements must come back there, or nothing would ever be acked.
// A second gateway's user cannot listen to them.
func TestInboxPrefix(t *testing.T) {
	if got := InboxPrefix("lyon", "gw1"); got != "_INBOX.lyon.gw1" {
		t.Fatalf("InboxPrefix = %q", got)
	}
	if got := InboxPrefix("", "gw1"); got != "_INBOX.gw1" {
		t.Fatalf("InboxPrefix without a site = %q", got)
	}
	perms := func(gw string) *natsserver.Permissions {
		return &natsserver.Permissions{
			Publish: &natsserver.SubjectPermission{Allow: []string{
				"$JS.API.>", "ferry.lyon." + gw + ".>",
			}},
			Subscribe: &natsserver.SubjectPermission{Allow: []string{
				InboxPrefix("lyon", gw) + ".>",
			}},
		}
	}
	srv := testpeer.NATS(t, func(o *natsserver.Options) {
		o.Users = []*natsserver.User{
			{Username: "admin", Password: "admin"},
			{Username: "gw1", Password: "p1", Permissions: perms("gw1")},
			{Username: "gw2", Password: "p2", Permissions: perms("gw2")},
		}
	})
	_, js := srv.Connect(nats.UserInfo("admin", "admin"))

	// gw2 may not listen to gw1's inboxes.
	errs := make(chan error, 4)
	nc2, err := nats.Connect(srv.URL(), nats.UserInfo("gw2", "p2"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	if _, err := nc2.SubscribeSync(InboxPrefix("lyon", "gw1") + ".>"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if err == nil {
			t.Fatal("no permissions violation for gw2 subscribing to gw1's inboxes")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not refuse gw2's subscription to gw1's inboxes")
	}

	cfg := testConfig(srv.URL())
	cfg.User = "gw1"
	cfg.Password = "p1"
	src := newMemSource("gw1")
	var recs []ferry.Record
	t0 := time.Now()
	for i := range 20 {
		recs = append(recs, src.addScans("v", "press3", scan("press3", t0.Add(time.Duration(i)*time.Millisecond), 5, float64(i))))
	}
	u := newTestUplink(t, cfg, src, prometheus.NewRegistry())
	runUplink(t, u, src)
	src.waitEmpty(t, 20*time.Second)
	checkExactlyOnce(t, streamMsgs(t, js, cfg.Stream), recs)
}
