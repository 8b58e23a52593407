package testpeer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/testutil"
)

// BuildNATSServer builds nats-server from the module graph (the version
// of go.mod) into the test's temp directory and returns its path: the
// real server as a child process, for the tests that pause it (SIGSTOP),
// copy its store and roll it back.
func BuildNATSServer(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "nats-server")
	cmd := exec.Command("go", "build", "-o", out, "github.com/nats-io/nats-server/v2")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build nats-server: %v\n%s", err, b)
	}
	return out
}

// NATSProc is nats-server run as a child process with JetStream on a
// directory of the test's. It binds its own ports the first time (-1) and
// reads them from its ports file; a restart binds the same ones (they
// were the server's own until it stopped, never picked by opening and
// closing a listener). A node of a cluster is started with the cluster
// ports of the nodes it routes to.
type NATSProc struct {
	t    testing.TB
	bin  string
	name string
	dir  string // the ports file and the config live here
	// Store is the JetStream store directory.
	Store string
	// SyncInterval is the jetstream sync_interval ("2m" is the server's
	// default, "always" syncs every write).
	SyncInterval string
	// Cluster is the cluster's name ("" for a server alone); Routes the
	// cluster addresses ("127.0.0.1:port") of the other nodes.
	Cluster string
	Routes  []string

	port, clusterPort int
	proc              *Proc
}

// NewNATSProc prepares a server named name; Start runs it.
func NewNATSProc(t testing.TB, bin, name string) *NATSProc {
	t.Helper()
	dir := t.TempDir()
	return &NATSProc{t: t, bin: bin, name: name, dir: dir, Store: filepath.Join(dir, "store"), SyncInterval: "2m", port: -1, clusterPort: -1}
}

func (n *NATSProc) config() string {
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %q\nlisten: \"127.0.0.1:%d\"\n", n.name, n.port)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n  sync_interval: %q\n}\n", n.Store, n.SyncInterval)
	if n.Cluster != "" {
		fmt.Fprintf(&b, "cluster {\n  name: %q\n  listen: \"127.0.0.1:%d\"\n  routes: [", n.Cluster, n.clusterPort)
		for i, r := range n.Routes {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%q", "nats://"+r)
		}
		b.WriteString("]\n}\n")
	}
	return b.String()
}

// Start starts the server (again, on the same ports, after Kill or Stop)
// and waits until it has written its ports file.
func (n *NATSProc) Start() {
	n.t.Helper()
	conf := filepath.Join(n.dir, "nats.conf")
	testutil.WriteFile(n.t, conf, n.config())
	if n.proc == nil {
		n.proc = NewChild(n.t, n.bin, "-c", conf, "--ports_file_dir", n.dir)
	}
	n.proc.Start()
	file := filepath.Join(n.dir, fmt.Sprintf("nats-server_%d.ports", n.proc.Pid()))
	testutil.Eventually(n.t, 30*time.Second, "nats-server "+n.name+" ports file", func() error {
		if !n.proc.Running() {
			return fmt.Errorf("nats-server exited:\n%s", Tail(n.proc.RunLog(), 20))
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		var ports struct{ Nats, Cluster []string }
		if err := json.Unmarshal(b, &ports); err != nil {
			return err
		}
		if len(ports.Nats) == 0 {
			return errors.New("no client port yet")
		}
		if _, err := fmt.Sscanf(ports.Nats[0][strings.LastIndex(ports.Nats[0], ":")+1:], "%d", &n.port); err != nil {
			return err
		}
		if n.Cluster != "" && len(ports.Cluster) > 0 {
			if _, err := fmt.Sscanf(ports.Cluster[0][strings.LastIndex(ports.Cluster[0], ":")+1:], "%d", &n.clusterPort); err != nil {
				return err
			}
		}
		return nil
	})
}

// URL is the client URL.
func (n *NATSProc) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// ClusterAddr is "127.0.0.1:port" of the cluster listener.
func (n *NATSProc) ClusterAddr() string { return fmt.Sprintf("127.0.0.1:%d", n.clusterPort) }

// Name is the server's name.
func (n *NATSProc) Name() string { return n.name }

// Pause stops the process (SIGSTOP): nothing it has not written yet
// reaches its files until Resume.
func (n *NATSProc) Pause() {
	n.t.Helper()
	if err := n.proc.Signal(syscall.SIGSTOP); err != nil {
		n.t.Fatal(err)
	}
}

// Resume lets a paused process run on (SIGCONT).
func (n *NATSProc) Resume() {
	n.t.Helper()
	if err := n.proc.Signal(syscall.SIGCONT); err != nil {
		n.t.Fatal(err)
	}
}

// Kill kills the process (SIGKILL, as a power cut) and waits for it.
func (n *NATSProc) Kill() {
	n.t.Helper()
	_ = n.proc.Kill() // its exit error is "killed"
	if n.proc.Running() {
		n.t.Fatalf("nats-server %s still runs after SIGKILL", n.name)
	}
}

// Snapshot copies the store directory to dst (pause the server first for
// a consistent copy).
func (n *NATSProc) Snapshot(dst string) {
	n.t.Helper()
	if err := copyTree(n.Store, dst); err != nil {
		n.t.Fatalf("snapshot %s: %v", n.Store, err)
	}
}

// Restore replaces the store directory with the copy in src (the server
// must be down): what a power cut leaves of a store written since.
func (n *NATSProc) Restore(src string) {
	n.t.Helper()
	if n.proc.Running() {
		n.t.Fatal("restore of a running nats-server's store")
	}
	if err := os.RemoveAll(n.Store); err != nil {
		n.t.Fatal(err)
	}
	if err := copyTree(src, n.Store); err != nil {
		n.t.Fatalf("restore %s: %v", n.Store, err)
	}
}

func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o750)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
}
