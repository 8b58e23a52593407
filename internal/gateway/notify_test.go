package gateway

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestNotify runs the daemon with a fake NOTIFY_SOCKET and a 200 ms
// watchdog: it sends READY=1 once running, WATCHDOG=1 while healthy,
// RELOADING=1 then READY=1 around a reload (a refused one too), no
// WATCHDOG=1 while the pipeline is stuck (a store that hangs, as a dead
// disk does) and again once it moves, and STOPPING=1 at shutdown, with no
// keep-alive after it.
func TestNotify(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and a daemon")
	}
	ns := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	p := startPlant(t, 1)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	cfg := plantConfig{DataDir: filepath.Join(dir, "data"), Uplink: true}
	testutil.WriteFile(t, path, cfg.yaml(p))

	h := newHarness(t, path)
	// A store that hangs while stuck is set: the buffer's disk stopped
	// answering. Set before Run, which reads it.
	var stuck sync.RWMutex // write-locked: stores wait
	var locked atomic.Bool
	t.Cleanup(func() { // before the harness stops the daemon
		if locked.Load() {
			stuck.Unlock()
		}
	})
	store := h.d.pipe.store
	h.d.pipe.store = func(s ferry.Scan) {
		stuck.RLock()
		defer stuck.RUnlock()
		store(s)
	}
	h.d.pipe.stuckAfter = 300 * time.Millisecond
	h.run()

	waitFor(t, 10*time.Second, "READY=1 and keep-alives", func() bool {
		return ns.count("READY=1", 0) == 1 && ns.count("WATCHDOG=1", 0) >= 3
	})
	msgs := ns.messages()
	if first := msgs[0].text; first != "READY=1" {
		t.Errorf("first notification %q, want READY=1", first)
	}
	if ns.count("STATUS=running: 1 devices, 4 points, 0 rules (version "+h.d.cfg.Version+")", 0) != 1 {
		t.Errorf("no STATUS line with the configuration summary in %v", msgs)
	}

	// A reload, good then refused: RELOADING=1 … READY=1 around each.
	for i, text := range []string{
		func() string { c := cfg; c.Interval = map[string]string{"press1": "150ms"}; return c.yaml(p) }(),
		cfg.yaml(p) + "nonsense: 1\n",
	} {
		mark := len(ns.messages())
		h.reload(text)
		waitFor(t, 5*time.Second, "READY=1 after the reload", func() bool { return ns.count("READY=1", mark) == 1 })
		var seq []string
		for _, m := range ns.messages()[mark:] {
			if m.text != "WATCHDOG=1" {
				seq = append(seq, strings.SplitN(m.text, "\n", 2)[0])
			}
		}
		want := "RELOADING=1 READY=1"
		if i == 0 {
			want = "RELOADING=1 STATUS=running: 1 devices, 4 points, 0 rules (version " + h.d.cfg.Version + ") READY=1"
		}
		if got := strings.Join(seq, " "); got != want {
			t.Errorf("reload %d: notifications %q, want %q", i, got, want)
		}
		// A keep-alive may come between the mark and RELOADING=1.
		for _, m := range ns.messages()[mark:] {
			if strings.HasPrefix(m.text, "RELOADING=1") {
				if !strings.Contains(m.text, "\nMONOTONIC_USEC=") {
					t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", m.text)
				}
				break
			}
		}
	}

	// The pipeline gets stuck: the keep-alives stop (systemd would restart
	// ferry), /readyz names the pipeline; they resume once it moves.
	// Only what follows the lock counts: a loaded machine may have made
	// the pipeline look stuck for a moment before.
	before := len(ns.messages())
	stuck.Lock()
	locked.Store(true)
	waitFor(t, 10*time.Second, "the watchdog to notice", func() bool {
		for _, m := range ns.messages()[before:] {
			if strings.HasPrefix(m.text, "STATUS=unhealthy") {
				return true
			}
		}
		return false
	})
	withheld := len(ns.messages())
	// Five keep-alive periods with none sent.
	testutil.Never(t, time.Second, "a keep-alive while the pipeline is stuck", func() bool { return ns.count("WATCHDOG=1", withheld) != 0 })
	if code, body := h.get("/readyz"); code != 503 || !strings.Contains(body, "[-] pipeline: pipeline stuck") {
		t.Errorf("/readyz with the pipeline stuck: %d %q", code, body)
	}
	locked.Store(false)
	stuck.Unlock()
	waitFor(t, 10*time.Second, "keep-alives again", func() bool { return ns.count("WATCHDOG=1", withheld) >= 2 })
	if ns.count("STATUS=running", withheld) != 1 {
		t.Error("no STATUS=running once healthy again")
	}

	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	// Sent before Run returned; the reader may not have taken it yet.
	waitFor(t, 5*time.Second, "STOPPING=1", func() bool { return ns.count("STOPPING=1", 0) > 0 })
	msgs = ns.messages()
	stopAt := -1
	for i, m := range msgs {
		if m.text == "STOPPING=1" {
			if stopAt >= 0 {
				t.Error("STOPPING=1 sent twice")
			}
			stopAt = i
		}
	}
	if stopAt < 0 {
		t.Fatalf("no STOPPING=1 in %v", msgs)
	}
	if n := ns.count("WATCHDOG=1", stopAt); n != 0 {
		t.Errorf("%d keep-alives after STOPPING=1", n)
	}
	if n := ns.count("READY=1", 0); n != 3 {
		t.Errorf("READY=1 sent %d times, want 3 (start and two reloads)", n)
	}
}
