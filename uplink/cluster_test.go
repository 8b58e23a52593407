package uplink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// waitStreamCurrent waits until the stream has a leader among the
// running servers and every replica on a running server is current: the
// cluster has finished electing after a node went away or came back.
func waitStreamCurrent(t testing.TB, servers []*testpeer.NATSServer, stream string, timeout time.Duration) {
	t.Helper()
	running := map[string]bool{}
	for _, s := range servers {
		if s.Running() {
			running[s.Name()] = true
		}
	}
	_, js := testpeer.Connect(t, testpeer.URLs(servers), nats.MaxReconnects(-1))
	testutil.Eventually(t, timeout, "stream "+stream+" current on the running servers", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		ci := s.CachedInfo().Cluster
		if ci == nil {
			return fmt.Errorf("stream %s is not clustered", stream)
		}
		state := fmt.Sprintf("leader %q", ci.Leader)
		ok := running[ci.Leader]
		for _, r := range ci.Replicas {
			state += fmt.Sprintf(", %s current=%v offline=%v lag=%d", r.Name, r.Current, r.Offline, r.Lag)
			ok = ok && (!running[r.Name] || r.Current)
		}
		if !ok {
			return errors.New(state)
		}
		return nil
	})
}

// TestClusterFailover drains into an R3 stream of a three-node cluster and
// kills the stream's leader in the middle: every record arrives exactly
// once.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster failover takes a leader election")
	}
	servers := testpeer.NATSCluster(t, 3)
	urls := strings.Split(testpeer.URLs(servers), ",")

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
	var leader *testpeer.NATSServer
	for _, s := range servers {
		if s.Server().JetStreamIsStreamLeader(natsserver.DEFAULT_GLOBAL_ACCOUNT, "FERRY") {
			leader = s
		}
	}
	if leader == nil {
		t.Fatal("no stream leader")
	}
	leader.Shutdown()
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
	leader.Start()
	waitFor(t, 30*time.Second, "restarted node current", func() bool { return leader.Server().JetStreamIsCurrent() })
	waitStreamCurrent(t, servers, "FERRY", 30*time.Second)
	var conn *testpeer.NATSServer
	for _, s := range servers {
		cz, err := s.Server().Connz(&natsserver.ConnzOptions{})
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
		conn.Shutdown()
		for i := range 100 {
			src.addScans("v", "env", scan("env", time.Now(), 2, float64(100+i)))
		}
	}
	src.waitEmpty(t, 60*time.Second)

	// The client reads from the running servers once they have elected
	// the stream's leader (and the meta leader, which StreamInfo needs).
	waitStreamCurrent(t, servers, "FERRY", 30*time.Second)
	_, js2 := testpeer.Connect(t, testpeer.URLs(servers), nats.MaxReconnects(-1))
	checkExactlyOnce(t, streamMsgs(t, js2, "FERRY"), src.records())
	connName := "none (it was the leader)"
	if conn != nil && conn != leader {
		connName = conn.Name()
	}
	t.Logf("killed leader %s after %v acks, then the uplink's server %s; reconnects %v; duplicates dropped: %v; errors: timeout %v, disconnected %v, no_stream %v; released %v",
		leader.Name(), acked, connName, metric(t, reg, "ferry_uplink_reconnects_total"), metric(t, reg, "ferry_uplink_duplicates_total"),
		metric(t, reg, "ferry_uplink_errors_total", "reason", "timeout"),
		metric(t, reg, "ferry_uplink_errors_total", "reason", "disconnected"),
		metric(t, reg, "ferry_uplink_errors_total", "reason", "no_stream"),
		metric(t, reg, "ferry_uplink_released_total"))
}
