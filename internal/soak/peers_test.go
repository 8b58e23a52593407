//go:build soak

package soak

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// root is the module's root directory.
func root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// tools finds the third-party programs; it fails with what to install.
func tools(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, name := range []string{"mosquitto", "nats-server", "node", "npm"} {
		p, err := exec.LookPath(name)
		if err != nil {
			p = "/usr/sbin/" + name // mosquitto is there, off a user's PATH
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("%s not found: apt-get install mosquitto nats-server nodejs npm python3-pymodbus (make soak does)", name)
			}
		}
		out[name] = p
	}
	out["python3"] = "/usr/bin/python3" // Debian's, which has Debian's pymodbus
	b, err := exec.Command(out["python3"], "-c", "import pymodbus; print(pymodbus.__version__)").CombinedOutput()
	if err != nil {
		t.Fatalf("pymodbus not importable by /usr/bin/python3: apt-get install python3-pymodbus: %v\n%s", err, b)
	}
	out["pymodbus"] = strings.TrimSpace(string(b))
	for _, v := range [][]string{{out["mosquitto"], "-h"}, {out["nats-server"], "--version"}, {out["node"], "--version"}} {
		b, _ := exec.Command(v[0], v[1:]...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		out[filepath.Base(v[0])+"-version"] = line
	}
	return out
}

// buildFerry builds the ferry binary as released (no race detector: the
// soak measures its memory).
func buildFerry(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ferry")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/ferry")
	cmd.Dir = root()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// waitListening waits until addr accepts connections.
func waitListening(t *testing.T, addr string, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, "listening on "+addr, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// peer is a third-party server run as a child process that can be
// stopped and started again on the same address.
type peer struct {
	name string
	addr string
	proc *testpeer.Proc
	// restart starts it again (proc's configuration binds the same port).
	restart func(t *testing.T)
	stop    func(t *testing.T)
}

// startNATS runs Debian's nats-server with JetStream on a store in dir,
// on a port it picks (-p -1) and writes to its ports file.
func startNATS(t *testing.T, bin, dir string) *peer {
	t.Helper()
	store := filepath.Join(dir, "nats")
	p := testpeer.Child(t, bin, "-js", "-sd", store, "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", dir)
	file := filepath.Join(dir, fmt.Sprintf("nats-server_%d.ports", p.Pid()))
	var url string
	testutil.Eventually(t, 30*time.Second, "nats-server's ports file", func() error {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		var ports struct{ Nats []string }
		if err := json.Unmarshal(b, &ports); err != nil || len(ports.Nats) == 0 {
			return fmt.Errorf("%s: %q %v", file, b, err)
		}
		url = ports.Nats[0]
		return nil
	})
	addr := strings.TrimPrefix(url, "nats://")
	_, port, _ := net.SplitHostPort(addr)
	pr := &peer{name: "nats-server", addr: addr, proc: p}
	pr.stop = func(t *testing.T) { stopProc(t, pr.proc) }
	pr.restart = func(t *testing.T) {
		// Back on the port ferry knows: the one rebind a restart needs.
		pr.proc = testpeer.Child(t, bin, "-js", "-sd", store, "-a", "127.0.0.1", "-p", port)
		waitListening(t, addr, 60*time.Second)
	}
	return pr
}

// startMosquitto runs Debian's mosquitto with persistence (ferry's QoS 1
// session survives its restart). mosquitto cannot bind port 0 and say
// which port it got, so for it alone a port is picked and the start
// retried when the port turns out to be taken.
func startMosquitto(t *testing.T, bin, dir string) *peer {
	t.Helper()
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "mosquitto") + "/"
	if err := os.MkdirAll(store, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	for range 10 {
		addr := testutil.FreeAddr(t)
		_, port, _ := net.SplitHostPort(addr)
		text := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\nuser %s\npersistence true\npersistence_location %s\nmax_queued_messages 100000\nlog_dest stderr\nlog_type error\nlog_type warning\n", port, me.Username, store)
		testutil.WriteFile(t, conf, text)
		p := testpeer.Child(t, bin, "-c", conf)
		up := false
		testutil.WaitFor(t, 30*time.Second, "mosquitto listening or exited", func() bool {
			if !p.Running() {
				return true
			}
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				up = true
			}
			return up
		})
		if !up {
			if strings.Contains(p.RunLog(), "in use") {
				continue
			}
			t.Fatalf("mosquitto exited:\n%s", p.RunLog())
		}
		pr := &peer{name: "mosquitto", addr: addr, proc: p}
		pr.stop = func(t *testing.T) { stopProc(t, pr.proc) }
		pr.restart = func(t *testing.T) {
			pr.proc = testpeer.Child(t, bin, "-c", conf)
			waitListening(t, addr, 60*time.Second)
		}
		return pr
	}
	t.Fatal("mosquitto found no free port in 10 tries")
	return nil
}

var readyLine = regexp.MustCompile(`READY (\d+)`)

// startModbus runs the pymodbus server with units 1..units on a port it
// binds itself (0) and reports.
func startModbus(t *testing.T, python, units string) *peer {
	t.Helper()
	script := filepath.Join(root(), "internal", "soak", "testdata", "modbus_units.py")
	p := testpeer.Child(t, python, script, "0", units)
	var port string
	testutil.Eventually(t, 60*time.Second, "pymodbus READY", func() error {
		m := readyLine.FindStringSubmatch(p.RunLog())
		if m == nil {
			if !p.Running() {
				t.Fatalf("pymodbus exited:\n%s", p.RunLog())
			}
			return fmt.Errorf("no READY line yet")
		}
		port = m[1]
		return nil
	})
	pr := &peer{name: "pymodbus", addr: "127.0.0.1:" + port, proc: p}
	pr.stop = func(t *testing.T) { stopProc(t, pr.proc) }
	pr.restart = func(t *testing.T) {
		// The same port again (allow_reuse_address): a restarted PLC.
		pr.proc = testpeer.Child(t, python, script, port, units)
		waitListening(t, pr.addr, 60*time.Second)
	}
	return pr
}

// nodePeer wraps the node-opcua kit as a peer.
func nodePeer(t *testing.T, s *testpeer.NodeOPCUA) *peer {
	return &peer{
		name: "node-opcua", addr: s.Addr(),
		stop: func(*testing.T) { s.Stop() },
		restart: func(t *testing.T) {
			if err := s.Restart(); err != nil {
				t.Fatalf("node-opcua restart: %v", err)
			}
		},
	}
}

// stopProc stops a peer with SIGTERM (SIGKILL after 15 s) and waits.
func stopProc(t *testing.T, p *testpeer.Proc) {
	t.Helper()
	if err := p.StopWith(syscall.SIGTERM, 15*time.Second); err != nil && !strings.Contains(err.Error(), "exit status") && !strings.Contains(err.Error(), "signal") {
		t.Logf("%v", err)
	}
}

// publisher publishes numbered JSON messages to mosquitto with paho at
// one QoS, pacing itself (the pace is the load, not a wait). A QoS 1
// message counts as delivered to the broker when its PUBACK came; a QoS 0
// message when paho wrote it while connected.
type publisher struct {
	qos   byte
	topic string
	c     paho.Client

	mu    sync.Mutex
	sent  []sentMsg
	tried int

	stop chan struct{}
	done chan struct{}
}

func startPublisher(t *testing.T, addr, topic string, qos byte, every time.Duration) *publisher {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("soak-pub-q%d", qos)).
		SetAutoReconnect(true).SetConnectRetry(true).SetMaxReconnectInterval(time.Second).
		SetCleanSession(true).SetKeepAlive(5 * time.Second).SetWriteTimeout(5 * time.Second)
	p := &publisher{qos: qos, topic: topic, c: paho.NewClient(o), stop: make(chan struct{}), done: make(chan struct{})}
	if tok := p.c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(every) // the publish rate: the load, not a wait
		defer tick.Stop()
		for seq := 0; ; seq++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			if !p.c.IsConnectionOpen() {
				p.mu.Lock()
				p.tried++
				p.mu.Unlock()
				continue
			}
			at := time.Now()
			tok := p.c.Publish(topic, qos, false, fmt.Sprintf(`{"seq":%d}`, seq))
			ok := tok.WaitTimeout(10*time.Second) && tok.Error() == nil
			p.mu.Lock()
			p.tried++
			if ok {
				p.sent = append(p.sent, sentMsg{seq: seq, at: at})
			}
			p.mu.Unlock()
		}
	}()
	t.Cleanup(p.Stop)
	return p
}

// Stop ends the publisher.
func (p *publisher) Stop() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	p.c.Disconnect(250)
}

// sentMsg is a message the publisher delivered to the broker.
type sentMsg struct {
	seq int
	at  time.Time
}

func (p *publisher) result() ([]sentMsg, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]sentMsg(nil), p.sent...), p.tried
}
