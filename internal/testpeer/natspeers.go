package testpeer

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/testutil"
)

// WaitClusterPeers waits until the JetStream meta leader of servers counts
// every running node as a peer (online, with JetStream, its stats
// received). A meta leader is elected by a quorum, before the last node
// has reported: until then an R3 stream cannot be placed ("no suitable
// peers for placement", on a loaded machine for seconds).
func WaitClusterPeers(t testing.TB, servers []*NATSServer, timeout time.Duration) {
	t.Helper()
	err := testutil.Poll(timeout, func() error {
		running := 0
		var peers []string
		for _, s := range servers {
			srv := s.Server()
			if srv == nil {
				continue
			}
			running++
			if srv.JetStreamIsLeader() {
				peers = srv.JetStreamClusterPeers()
			}
		}
		if peers == nil {
			return fmt.Errorf("no meta leader")
		}
		if len(peers) != running {
			sort.Strings(peers)
			return fmt.Errorf("the meta leader counts %d peers %v of %d running nodes", len(peers), peers, running)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("JetStream cluster peers: %v", err)
	}
}
