package uplink

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry/internal/testpeer"
)

// TestDomain ships through a site server that is a leaf node of a hub, to
// a stream in the hub's JetStream domain, named by domain or by
// api_prefix. The site runs JetStream of its own (domain "site"), so a
// stream lookup without the option asks the site, not the hub.
func TestDomain(t *testing.T) {
	tests := []struct {
		name string
		set  func(*NATSConfig)
	}{
		{"domain", func(c *NATSConfig) { c.Domain = "hub" }},
		{"api_prefix", func(c *NATSConfig) { c.APIPrefix = "$JS.hub.API" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := testpeer.NATSHub(t, 1, "hub")
			site := testpeer.NATSSite(t, hub, "site")

			src := newMemSource("gw1")
			for i := range 50 {
				src.addScans("v", "press3", scan("press3", time.Now(), 4, float64(i)))
			}
			src.addAlert("v", alert(1))
			reg := prometheus.NewRegistry()
			cfg := testConfig(site.URL()) // create_stream: the uplink creates it, in the hub
			tt.set(&cfg)
			u := newTestUplink(t, cfg, src, reg)
			runUplink(t, u, src)
			src.waitEmpty(t, 20*time.Second)

			checkExactlyOnce(t, streamMsgs(t, hub.JetStream(t), "FERRY"), src.records())
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := site.JetStream(t).Stream(ctx, "FERRY"); !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Errorf("stream FERRY in the site's domain: err %v, want %v", err, jetstream.ErrStreamNotFound)
			}
		})
	}

	// Without the option, the uplink looks the stream up in the domain of
	// the server it is connected to: the site's, which has none.
	t.Run("none", func(t *testing.T) {
		hub := testpeer.NATSHub(t, 1, "hub")
		site := testpeer.NATSSite(t, hub, "site")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := hub.JetStream(t).CreateStream(ctx, jetstream.StreamConfig{Name: "FERRY", Subjects: []string{"ferry.>"}}); err != nil {
			t.Fatal(err)
		}
		src := newMemSource("gw1")
		src.addAlert("v", alert(1))
		reg := prometheus.NewRegistry()
		cfg := testConfig(site.URL())
		cfg.CreateStream = false
		u := newTestUplink(t, cfg, src, reg)
		runUplink(t, u, src)
		waitFor(t, 10*time.Second, "stream not found", func() bool { return errors.Is(u.Err(), ErrStreamNotFound) })
		if p, _ := src.state(); p != 1 {
			t.Errorf("%d records pending, want 1: nothing is published before the stream is found", p)
		}
	})
}
