package testpeer

import (
	"context"
	"errors"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestNATSRestartKeepsPortAndStore: a stream created before an outage is
// there after it, on the same URL, and a client that reconnects finds it.
func TestNATSRestartKeepsPortAndStore(t *testing.T) {
	s := NATS(t, func(o *server.Options) { o.MaxPayload = 4 << 10 })
	url, port := s.URL(), s.Port()
	if port <= 0 || !strings.HasSuffix(url, ":"+itoa(port)) {
		t.Fatalf("URL %s, port %d", url, port)
	}
	nc, js := s.Connect(nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if got := nc.MaxPayload(); got != 4<<10 {
		t.Errorf("mod not applied: max payload %d", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	if s.Running() || s.Server() != nil {
		t.Fatal("running after Shutdown")
	}
	testutil.WaitFor(t, 10*time.Second, "client disconnected", func() bool { return !nc.IsConnected() })
	s.Start()
	if s.URL() != url {
		t.Errorf("restart on %s, was %s", s.URL(), url)
	}
	testutil.WaitFor(t, 10*time.Second, "client reconnected", nc.IsConnected)
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages after the restart, want 1", info.State.Msgs)
	}
}

// TestNATSPortTaken: a restart whose port was taken while the server was
// down says so with ErrPortTaken instead of hanging or starting elsewhere.
func TestNATSPortTaken(t *testing.T) {
	s := NATS(t)
	port := s.Port()
	s.Shutdown()
	// Take the very port the server had: the situation a restart meets.
	l, err := net.Listen("tcp", "127.0.0.1:"+itoa(port))
	if err != nil {
		t.Skipf("the port was taken by someone else already: %v", err)
	}
	defer l.Close()
	if err := s.TryStart(); !errors.Is(err, ErrPortTaken) {
		t.Fatalf("TryStart on a taken port = %v, want ErrPortTaken", err)
	}
	if s.Running() {
		t.Fatal("running after a failed start")
	}
}

// TestNATSCluster: three nodes on ports of their own elect a meta leader,
// keep an R3 stream through the loss of a node and take it back.
func TestNATSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster takes elections")
	}
	servers := NATSCluster(t, 3)
	names := map[string]bool{}
	for _, s := range servers {
		names[s.Name()] = true
		if s.Server().NumRoutes() < 2 {
			t.Errorf("%s has %d routes, want 2", s.Name(), s.Server().NumRoutes())
		}
	}
	if len(names) != 3 {
		t.Fatalf("names %v", names)
	}
	_, js := Connect(t, URLs(servers), nats.MaxReconnects(-1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	// The first node is the seed: the others routed to it. Losing it and
	// bringing it back must keep the cluster whole. Every node caught up
	// with the meta leader first (the stream's creation applied): in one
	// run of 40 on a loaded machine, the seed went while S3 was not yet
	// current and no meta leader was elected within 30 s.
	testutil.WaitFor(t, 30*time.Second, "every node current", func() bool {
		for _, s := range servers {
			if !s.Server().JetStreamIsCurrent() {
				return false
			}
		}
		return true
	})
	servers[0].Shutdown()
	WaitMetaLeader(t, servers, 30*time.Second)
	servers[0].Start()
	testutil.WaitFor(t, 30*time.Second, "seed back in the cluster", func() bool {
		return servers[0].Server().NumRoutes() >= 2 && servers[0].Server().JetStreamIsCurrent()
	})
	WaitMetaLeader(t, servers, 30*time.Second)
}

// TestChildStopAndOutput: Stop of a child that exits on SIGTERM returns
// its exit status; its output is kept per run across restarts.
func TestChildStopAndOutput(t *testing.T) {
	sh := shell(t)
	p := NewChild(t, sh, "-c", `echo "run $RUN"; trap 'echo bye; exit 0' TERM; while :; do sleep 0.05; done`)
	p.Env = []string{"RUN=one"}
	p.Start()
	testutil.WaitFor(t, 10*time.Second, "first output", func() bool { return strings.Contains(p.RunLog(), "run one") })
	if !p.Running() || p.Pid() == 0 {
		t.Fatal("not running")
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop = %v, want a clean exit", err)
	}
	if p.Running() {
		t.Fatal("running after Stop")
	}
	p.Env = []string{"RUN=two"}
	p.Start()
	testutil.WaitFor(t, 10*time.Second, "second output", func() bool { return strings.Contains(p.RunLog(), "run two") })
	if strings.Contains(p.RunLog(), "run one") {
		t.Errorf("RunLog holds the first run:\n%s", p.RunLog())
	}
	if err := p.Kill(); !Killed(err) {
		t.Errorf("Kill = %v, want the SIGKILL exit", err)
	}
	log := p.Log()
	for _, want := range []string{"run one", "bye", "run two", "start 1", "start 2"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if p.Starts() != 2 {
		t.Errorf("Starts() = %d", p.Starts())
	}
	// Another stop signal: SIGINT, which this shell does not trap.
	p.Start()
	testutil.WaitFor(t, 10*time.Second, "third output", func() bool { return strings.Contains(p.RunLog(), "run two") })
	var ee *exec.ExitError
	if err := p.StopWith(os.Interrupt, 10*time.Second); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGINT {
		t.Errorf("StopWith(SIGINT) = %v, want death by SIGINT", err)
	}
}

// TestChildStopTimeoutWaitsForRealExit: a child that ignores SIGTERM is
// killed when Stop's time is up, and neither Stop nor a later Wait
// returns before the process is gone (reaped: its pid no longer exists).
// A runner that marks the process done when the stop times out (a
// sync.Once shared by stop and wait) fails here: its Wait returns while
// the child still runs.
func TestChildStopTimeoutWaitsForRealExit(t *testing.T) {
	sh := shell(t)
	// Ignores SIGTERM; sleeps in short steps so that SIGKILL is all
	// that can end it within the test.
	p := Child(t, sh, "-c", `trap '' TERM; echo up; while :; do sleep 0.05; done`)
	testutil.WaitFor(t, 10*time.Second, "child up", func() bool { return strings.Contains(p.Log(), "up") })
	pid := p.Pid()
	err := p.Stop(200 * time.Millisecond)
	if !errors.Is(err, ErrStopTimeout) {
		t.Fatalf("Stop = %v, want ErrStopTimeout", err)
	}
	if alive(pid) {
		t.Fatal("Stop returned while the child's pid still exists")
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Exited not closed after Stop")
	}
	if werr := p.Wait(time.Second); !Killed(werr) {
		t.Fatalf("Wait after the timed-out Stop = %v, want the SIGKILL exit", werr)
	}
	if alive(pid) {
		t.Fatal("Wait returned while the child's pid still exists")
	}
}

// TestChildWaitTimeout: Wait with a time too short leaves the process
// running and says so; Wait after it exits by itself gives its status.
func TestChildWaitTimeout(t *testing.T) {
	sh := shell(t)
	dir := t.TempDir()
	gate := filepath.Join(dir, "go")
	p := NewChild(t, sh, "-c", `while [ ! -e "$GATE" ]; do sleep 0.02; done; exit 3`)
	p.Env = []string{"GATE=" + gate}
	p.Start()
	if err := p.Wait(100 * time.Millisecond); !errors.Is(err, ErrStillRunning) {
		t.Fatalf("Wait on a running child = %v, want ErrStillRunning", err)
	}
	if !p.Running() {
		t.Fatal("Wait's timeout ended the child")
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := p.Wait(10 * time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || Killed(err) {
		t.Fatalf("Wait = %v, want exit status 3", err)
	}
	if alive(p.Pid()) {
		t.Fatal("Wait returned while the child's pid still exists")
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP ferry_device_connected Whether the device's link is up.
# TYPE ferry_device_connected gauge
ferry_device_connected{device="press1",protocol="modbus"} 1
ferry_device_connected{device="press2",protocol="modbus"} 1
ferry_device_connected{device="boiler",protocol="opcua"} 0
ferry_buffer_bytes 4096
ferry_odd{msg="a \"quoted\" \\ back\nslash, and } brace",x="y"} 2.5e+06 1712345678000
ferry_inf{le="+Inf"} +Inf
ferry_nan NaN
`
	m, err := ParseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 7 {
		t.Fatalf("%d series, want 7: %+v", len(m), m)
	}
	tests := []struct {
		name   string
		labels []string
		want   float64
		ok     bool
	}{
		{"ferry_device_connected", nil, 2, true},
		{"ferry_device_connected", []string{"protocol=modbus"}, 2, true},
		{"ferry_device_connected", []string{"protocol=modbus", "device=press2"}, 1, true},
		{"ferry_device_connected", []string{"protocol=opcua"}, 0, true},
		{"ferry_device_connected", []string{"protocol=mqtt"}, 0, false},
		{"ferry_buffer_bytes", nil, 4096, true},
		{"ferry_odd", []string{"msg=a \"quoted\" \\ back\nslash, and } brace", "x=y"}, 2.5e6, true},
		{"ferry_inf", []string{"le=+Inf"}, math.Inf(1), true},
		{"ferry_missing", nil, 0, false},
	}
	for _, tt := range tests {
		got, ok := m.Find(tt.name, tt.labels...)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Find(%s, %q) = %v, %v; want %v, %v", tt.name, tt.labels, got, ok, tt.want, tt.ok)
		}
	}
	if v, ok := m.Find("ferry_nan"); !ok || !math.IsNaN(v) {
		t.Errorf("ferry_nan = %v, %v", v, ok)
	}
	if m.Sum("ferry_missing") != 0 || m.Sum("ferry_buffer_bytes") != 4096 {
		t.Error("Sum")
	}
	for _, bad := range []string{
		"ferry_x{a=\"b\" 1",
		"ferry_x{a=b} 1",
		"ferry_x{a=\"b} 1",
		"ferry_x",
		"ferry_x one",
		"ferry_x 1 2 3",
	} {
		if _, err := ParseMetrics(bad + "\n"); err == nil {
			t.Errorf("ParseMetrics(%q) = nil error", bad)
		}
	}
}

func shell(t *testing.T) string {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	return sh
}

// alive reports whether pid exists (running or a zombie not reaped).
func alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

func itoa(i int) string { return strconv.Itoa(i) }
