package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ferry-edge/ferry/internal/testutil"
)

// fakeSystemd is the receiving end of NOTIFY_SOCKET, as systemd has it.
type fakeSystemd struct {
	conn *net.UnixConn
}

func newFakeSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return &fakeSystemd{conn: conn}
}

// recv returns the next message, or "" when none arrives within d.
func (f *fakeSystemd) recv(t *testing.T, d time.Duration) string {
	t.Helper()
	buf := make([]byte, 4096)
	f.conn.SetReadDeadline(time.Now().Add(d))
	n, err := f.conn.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// want receives the next message and checks it.
func (f *fakeSystemd) want(t *testing.T, want string) {
	t.Helper()
	if got := f.recv(t, 10*time.Second); got != want {
		t.Fatalf("received %q, want %q", got, want)
	}
}

func TestNotifyMessages(t *testing.T) {
	sd := newFakeSystemd(t)

	if err := Ready(); err != nil {
		t.Fatal(err)
	}
	sd.want(t, "READY=1")

	var before unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &before)
	if err := Reloading(); err != nil {
		t.Fatal(err)
	}
	got := sd.recv(t, 10*time.Second)
	usec, ok := strings.CutPrefix(got, "RELOADING=1\nMONOTONIC_USEC=")
	if !ok {
		t.Fatalf("reloading: received %q", got)
	}
	n, err := strconv.ParseInt(usec, 10, 64)
	if err != nil || n < before.Nano()/1000 {
		t.Fatalf("MONOTONIC_USEC=%q is not the monotonic clock (>= %d)", usec, before.Nano()/1000)
	}

	if err := Stopping(); err != nil {
		t.Fatal(err)
	}
	sd.want(t, "STOPPING=1")
	if err := Status("running: 3 devices\nsecond line"); err != nil {
		t.Fatal(err)
	}
	sd.want(t, "STATUS=running: 3 devices second line")
	if err := ExtendTimeout(90 * time.Second); err != nil {
		t.Fatal(err)
	}
	sd.want(t, "EXTEND_TIMEOUT_USEC=90000000")
}

func TestNotifyOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	for name, f := range map[string]func() error{"Ready": Ready, "Reloading": Reloading, "Stopping": Stopping, "Status": func() error { return Status("x") }} {
		if err := f(); err != nil {
			t.Errorf("%s without NOTIFY_SOCKET = %v, want nil", name, err)
		}
	}
}

func TestNotifySocketGone(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone.sock"))
	err := Ready()
	if err == nil || !strings.Contains(err.Error(), "sd_notify READY=1") {
		t.Fatalf("Ready to a missing socket = %v", err)
	}
}

func runWatchdog(t *testing.T, healthy func() error) *testutil.SyncBuffer {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	testutil.Run(t, "Watchdog", 10*time.Second, func(ctx context.Context) error {
		return Watchdog(ctx, healthy, slog.New(slog.NewTextHandler(logs, nil)))
	})
	return logs
}

// TestWatchdog: keep-alives flow while healthy, stop (with a STATUS
// saying why) while not, and resume after.
func TestWatchdog(t *testing.T) {
	sd := newFakeSystemd(t)
	const interval = 100 * time.Millisecond
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(int(interval.Microseconds())))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	var stuck atomic.Bool
	logs := runWatchdog(t, func() error {
		if stuck.Load() {
			return errors.New("pipeline: no progress for 45s")
		}
		return nil
	})

	for range 3 {
		sd.want(t, "WATCHDOG=1")
	}

	stuck.Store(true)
	for {
		msg := sd.recv(t, 10*time.Second)
		if msg == "WATCHDOG=1" { // sent before the change was seen
			continue
		}
		if want := "STATUS=unhealthy, watchdog keep-alives withheld: pipeline: no progress for 45s"; msg != want {
			t.Fatalf("received %q, want %q", msg, want)
		}
		break
	}
	// Ten watchdog intervals: not one keep-alive, not one more message.
	if msg := sd.recv(t, 10*interval); msg != "" {
		t.Fatalf("received %q while unhealthy", msg)
	}

	stuck.Store(false)
	sd.want(t, "STATUS=running")
	sd.want(t, "WATCHDOG=1")

	out := logs.String()
	if n := strings.Count(out, "withholding systemd watchdog keep-alives"); n != 1 {
		t.Errorf("unhealthy logged %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, `err="pipeline: no progress for 45s"`) || !strings.Contains(out, "keep-alives resumed") {
		t.Errorf("log lacks the reason or the recovery:\n%s", out)
	}
}

func TestWatchdogOff(t *testing.T) {
	tests := []struct {
		name      string
		usec, pid string
		wantLog   string
	}{
		{name: "no WatchdogSec"},
		{name: "another process's watchdog", usec: "100000", pid: strconv.Itoa(os.Getpid() + 1)},
		{name: "malformed", usec: "soon", wantLog: "WATCHDOG_USEC is not usable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sd := newFakeSystemd(t)
			t.Setenv("WATCHDOG_USEC", tt.usec)
			t.Setenv("WATCHDOG_PID", tt.pid)
			var called atomic.Bool
			logs := &testutil.SyncBuffer{}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			err := Watchdog(ctx, func() error { called.Store(true); return nil }, slog.New(slog.NewTextHandler(logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if called.Load() {
				t.Error("health checked with the watchdog off")
			}
			if msg := sd.recv(t, 10*time.Millisecond); msg != "" {
				t.Errorf("sent %q with the watchdog off", msg)
			}
			if tt.wantLog != "" && !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, logs)
			}
		})
	}
}

func TestWatchdogInterval(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", "")
	d, err := WatchdogInterval()
	if err != nil || d != 30*time.Second {
		t.Fatalf("WatchdogInterval = %v, %v", d, err)
	}
}
