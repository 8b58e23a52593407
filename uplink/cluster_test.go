package uplink

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// freePorts returns n distinct ports nothing listens on now. A cluster's
// routes must be known before its servers start. All n are held open
// together, so that the kernel cannot hand out one port twice.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// freePort returns a port nothing listens on now.
func freePort(t testing.TB) int {
	t.Helper()
	return freePorts(t, 1)[0]
}

// startCluster starts n JetStream servers clustered with each other and
// waits until they have elected the JetStream meta leader.
//
// The cluster's name is its own, so that routes can never join the
// cluster of another test process whose ports were once these. When a
// port picked free was taken before its server bound it, the cluster
// starts again on new ports.
func startCluster(t testing.TB, n int) []*testServer {
	t.Helper()
	name := fmt.Sprintf("ferry-test-%08x", rand.Uint32())
	for attempt := 1; ; attempt++ {
		servers, err := tryStartCluster(t, name, n)
		if err == nil {
			waitMetaLeader(t, servers, 30*time.Second)
			return servers
		}
		if attempt == 3 || !errors.Is(err, errPortTaken) {
			t.Fatal(err)
		}
		t.Logf("cluster attempt %d: %v", attempt, err)
	}
}

func tryStartCluster(t testing.TB, name string, n int) ([]*testServer, error) {
	t.Helper()
	ports := freePorts(t, n)
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	servers := make([]*testServer, n)
	for i := range servers {
		servers[i] = newTestServer(t, func(o *natsserver.Options) {
			o.ServerName = fmt.Sprintf("S%d", i+1)
			o.Cluster = natsserver.ClusterOpts{Name: name, Host: "127.0.0.1", Port: ports[i]}
			o.Routes = routes
		})
		if err := servers[i].tryStart(); err != nil {
			for _, s := range servers[:i] {
				s.shutdown()
			}
			return nil, err
		}
	}
	return servers, nil
}

// waitMetaLeader waits until a client of the cluster gets answers from
// the JetStream API, which takes a meta leader.
func waitMetaLeader(t testing.TB, servers []*testServer, timeout time.Duration) {
	t.Helper()
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.URL)
	}
	_, js := jsClient(t, strings.Join(urls, ","))
	var err error
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var state []string
	for _, s := range servers {
		state = append(state, fmt.Sprintf("%s: meta leader %v, current %v, routes %d, log:\n%s",
			s.opts.ServerName, s.srv.JetStreamIsLeader(), s.srv.JetStreamIsCurrent(), s.srv.NumRoutes(), s.log))
	}
	t.Fatalf("no JetStream meta leader after %v (%v):\n%s", timeout, err, strings.Join(state, "\n"))
}

// waitStreamCurrent waits until the stream has a leader among the
// running servers and every replica on a running server is current: the
// cluster has finished electing after a node went away or came back.
func waitStreamCurrent(t testing.TB, servers []*testServer, stream string, timeout time.Duration) {
	t.Helper()
	var urls []string
	running := map[string]bool{}
	for _, s := range servers {
		if s.srv != nil {
			urls = append(urls, s.URL)
			running[s.opts.ServerName] = true
		}
	}
	_, js := jsClient(t, strings.Join(urls, ","), nats.MaxReconnects(-1))
	var state string
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := js.Stream(ctx, stream)
		cancel()
		switch {
		case err != nil:
			state = err.Error()
		case s.CachedInfo().Cluster == nil:
			t.Fatalf("stream %s is not clustered", stream)
		default:
			ci := s.CachedInfo().Cluster
			state = fmt.Sprintf("leader %q", ci.Leader)
			ok := running[ci.Leader]
			for _, r := range ci.Replicas {
				state += fmt.Sprintf(", %s current=%v offline=%v lag=%d", r.Name, r.Current, r.Offline, r.Lag)
				ok = ok && (!running[r.Name] || r.Current)
			}
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s not current on the running servers after %v: %s", stream, timeout, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClusterFailover drains into an R3 stream of a three-node cluster and
// kills the stream's leader in the middle: every record arrives exactly
// once.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster failover takes a leader election")
	}
	servers := startCluster(t, 3)
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.URL)
	}

	src := newMemSource("gw1")
	const backlog = 4000
	for i := range backlog {
		src.addScans("v", "press3", scan("press3", time.Now(), 8, float64(i)))
	}
	reg := prometheus.NewRegistry()
	cfg := testConfig(urls[0])
	cfg.URLs = urls
	cfg.Replicas = 3
	cfg.AckTimeout = time.Second
	cfg.ConnectTimeout = time.Second
	cfg.MaxInflight = 256
	u := newTestUplink(t, cfg, src, reg)
	runUplink(t, u, src)

	waitFor(t, 30*time.Second, "drain under way", func() bool { return metric(t, reg, "ferry_uplink_acked_total") > 500 })
	var leader *testServer
	for _, s := range servers {
		if s.srv.JetStreamIsStreamLeader(natsserver.DEFAULT_GLOBAL_ACCOUNT, "FERRY") {
			leader = s
		}
	}
	if leader == nil {
		t.Fatal("no stream leader")
	}
	leader.shutdown()
	acked := metric(t, reg, "ferry_uplink_acked_total")
	// Keep buffering while the cluster elects a new leader.
	for i := range 100 {
		src.addScans("v", "env", scan("env", time.Now(), 2, float64(i)))
	}
	waitFor(t, 30*time.Second, "drain after the election", func() bool { return metric(t, reg, "ferry_uplink_acked_total") > acked+500 })
	if acked >= backlog {
		t.Errorf("the drain had finished (%v acked) before the leader was killed", acked)
	}

	// Bring the node back, then kill the server the uplink is connected
	// to (unless that was the leader): the client fails over.
	leader.start()
	waitFor(t, 30*time.Second, "restarted node current", func() bool { return leader.srv.JetStreamIsCurrent() })
	waitStreamCurrent(t, servers, "FERRY", 30*time.Second)
	var conn *testServer
	for _, s := range servers {
		cz, err := s.srv.Connz(&natsserver.ConnzOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cz.Conns {
			if c.Name == "ferry gw1" {
				conn = s
			}
		}
	}
	if conn != nil && conn != leader {
		conn.shutdown()
		for i := range 100 {
			src.addScans("v", "env", scan("env", time.Now(), 2, float64(100+i)))
		}
	}
	src.waitEmpty(t, 60*time.Second)

	// The client reads from the running servers once they have elected
	// the stream's leader (and the meta leader, which StreamInfo needs).
	waitStreamCurrent(t, servers, "FERRY", 30*time.Second)
	var alive []string
	for _, s := range servers {
		if s.srv != nil {
			alive = append(alive, s.URL)
		}
	}
	_, js2 := jsClient(t, strings.Join(alive, ","), nats.MaxReconnects(-1))
	checkExactlyOnce(t, streamMsgs(t, js2, "FERRY"), src.records())
	connName := "none (it was the leader)"
	if conn != nil && conn != leader {
		connName = conn.opts.ServerName
	}
	t.Logf("killed leader %s after %v acks, then the uplink's server %s; reconnects %v; duplicates dropped: %v; errors: timeout %v, disconnected %v, no_stream %v; released %v",
		leader.opts.ServerName, acked, connName, metric(t, reg, "ferry_uplink_reconnects_total"), metric(t, reg, "ferry_uplink_duplicates_total"),
		metric(t, reg, "ferry_uplink_errors_total", "reason", "timeout"),
		metric(t, reg, "ferry_uplink_errors_total", "reason", "disconnected"),
		metric(t, reg, "ferry_uplink_errors_total", "reason", "no_stream"),
		metric(t, reg, "ferry_uplink_released_total"))
}
