package testpeer

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry/internal/testutil"
)

// Hub is the cloud side of the topology plants use: JetStream servers in
// one JetStream domain, each with a leafnode listener that site servers
// connect to.
type Hub struct {
	Servers []*NATSServer
	Domain  string
}

// NATSHub starts a hub of n nodes (clustered when n > 1, as NATSCluster
// does) in JetStream domain domain, each listening for leaf nodes on
// 127.0.0.1 on a port the server picks and reports (nats-server cannot
// take a listener handed over open). Each mod is applied to each node.
func NATSHub(t testing.TB, n int, domain string, mods ...func(*server.Options)) *Hub {
	t.Helper()
	ms := append([]func(*server.Options){func(o *server.Options) {
		o.JetStreamDomain = domain
		o.LeafNode.Host = "127.0.0.1"
		o.LeafNode.Port = server.RANDOM_PORT
		// A site learns no other leafnode URL than the ones it is
		// given: its link goes through the test's proxies only.
		o.LeafNode.NoAdvertise = true
	}}, mods...)
	h := &Hub{Domain: domain}
	if n > 1 {
		h.Servers = NATSCluster(t, n, ms...)
		return h
	}
	h.Servers = []*NATSServer{NATS(t, append(ms, func(o *server.Options) { o.ServerName = "hub-" + domain })...)}
	return h
}

// URLs returns the client URLs of the running nodes, comma separated.
func (h *Hub) URLs() string { return URLs(h.Servers) }

// LeafAddrs returns the "host:port" of each running node's leafnode
// listener.
func (h *Hub) LeafAddrs(t testing.TB) []string {
	t.Helper()
	var addrs []string
	for _, s := range h.Servers {
		srv := s.Server()
		if srv == nil {
			continue
		}
		v, err := srv.Varz(nil)
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, net.JoinHostPort(v.LeafNode.Host, strconv.Itoa(v.LeafNode.Port)))
	}
	return addrs
}

// JetStream connects a client to the hub with a JetStream context of the
// hub's domain; the connection is closed when the test ends.
func (h *Hub) JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	return DomainJetStream(t, h.URLs(), h.Domain)
}

// Site is a site server: a JetStream server with its own domain that is
// a leaf node of a hub. Its link to the hub goes through one proxy per
// hub node, so that a test can take the link down (HubDown) and bring it
// back (HubUp) while the site and the hub both keep running.
type Site struct {
	*NATSServer
	Domain  string
	proxies []*testutil.Proxy
}

// NATSSite starts a site server in JetStream domain domain, a leaf node
// of hub (through the proxies), and waits until the leaf link is up.
// The site retries a lost link every 100ms. Each mod may change the
// options first.
func NATSSite(t testing.TB, hub *Hub, domain string, mods ...func(*server.Options)) *Site {
	t.Helper()
	s := &Site{Domain: domain}
	remote := &server.RemoteLeafOpts{}
	for _, addr := range hub.LeafAddrs(t) {
		p := testutil.NewProxy(t, addr)
		t.Cleanup(p.Close)
		s.proxies = append(s.proxies, p)
		remote.URLs = append(remote.URLs, &url.URL{Scheme: "nats", Host: p.Addr()})
	}
	if len(remote.URLs) == 0 {
		t.Fatal("the hub has no running node")
	}
	ms := append([]func(*server.Options){func(o *server.Options) {
		o.ServerName = "site-" + domain
		o.JetStreamDomain = domain
		o.LeafNode.ReconnectInterval = 100 * time.Millisecond
		o.LeafNode.Remotes = []*server.RemoteLeafOpts{remote}
	}}, mods...)
	s.NATSServer = NATS(t, ms...)
	s.WaitLinked(t, true, 30*time.Second)
	return s
}

// Linked reports whether the site has a leafnode connection to the hub.
func (s *Site) Linked() bool {
	srv := s.Server()
	return srv != nil && srv.NumLeafNodes() > 0
}

// WaitLinked waits until the link is up (or down, with up false).
func (s *Site) WaitLinked(t testing.TB, up bool, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, fmt.Sprintf("site %s linked to the hub: %v", s.Domain, up), func() error {
		if s.Linked() != up {
			return fmt.Errorf("linked %v:\n%s", s.Linked(), s.Log())
		}
		return nil
	})
}

// HubDown cuts the site's link to the hub and refuses it until HubUp, and
// waits until the site has seen the link go.
func (s *Site) HubDown(t testing.TB) {
	t.Helper()
	for _, p := range s.proxies {
		p.Refuse.Store(true)
		p.Cut()
	}
	s.WaitLinked(t, false, 30*time.Second)
}

// HubUp lets the site link to the hub again and waits until it has.
func (s *Site) HubUp(t testing.TB) {
	t.Helper()
	for _, p := range s.proxies {
		p.Refuse.Store(false)
	}
	s.WaitLinked(t, true, 30*time.Second)
}

// JetStream connects a client to the site with a JetStream context of the
// site's domain; the connection is closed when the test ends.
func (s *Site) JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	return DomainJetStream(t, s.URL(), s.Domain)
}

// DomainJetStream connects a client to url (servers comma separated) with
// a JetStream context of domain; the connection is closed when the test
// ends.
func DomainJetStream(t testing.TB, url, domain string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, domain)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
