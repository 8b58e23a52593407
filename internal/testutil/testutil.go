// Package testutil holds the helpers that several of ferry's test suites
// share: loopback addresses and TCP peers, polling with a deadline,
// running a component until the test ends, a goroutine leak check for
// TestMain, a log sink safe for concurrent writes, the live heap for
// tests that bound what a structure keeps, a process's resident pages of
// each file it maps, benchmarks' duration knobs, and a throwaway
// certificate authority.
//
// It is a normal package so that tests of any package can import it, but
// only _test.go files may: nothing in the daemon depends on it. It imports
// the standard library only, so importing it does not link a broker or a
// server into a test binary; the in-process peers (nats-server, mochi,
// gopcua, the Modbus server) stay with the tests that use them.
//
// Every helper fails the test through t (never panics) and cleans up what
// it started with t.Cleanup; every goroutine it starts is waited for.
package testutil

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// WaitFor polls cond until it holds, and fails the test when it still
// does not after timeout. It polls every 5 ms at first and every 20 ms
// after a few tries, so that a condition that is costly to check (a
// registry gathered, an HTTP request) does not load a long wait.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	poll := 5 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(poll)
		poll = min(2*poll, 20*time.Millisecond)
	}
}

// Run calls run on its own goroutine with a context that ends when the
// test does or when stop is called, whichever is first. stop (also
// registered with t.Cleanup; it runs once) cancels the context and waits
// up to timeout for run to return. An error from run, or a run that does
// not return in time, fails the test; name says what ran.
func Run(t testing.TB, name string, timeout time.Duration, run func(ctx context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s: %v", name, err)
				}
			case <-time.After(timeout):
				t.Errorf("%s did not return within %v of cancel", name, timeout)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// CheckLeaks runs the tests of m and returns the exit code for os.Exit.
// When they pass but goroutines they started are still running 5 s
// later, it prints every stack and returns 1: each goroutine must have an
// owner that waits for it. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(testutil.CheckLeaks(m)) }
func CheckLeaks(m *testing.M) int {
	before := goroutines()
	code := m.Run()
	if code != 0 {
		return code
	}
	http.DefaultClient.CloseIdleConnections()
	// One snapshot both counts and is printed: a goroutine that starts
	// and ends on its own between two looks (a runtime or library timer)
	// is neither a leak nor a reason to print a list without it. The
	// tests' goroutines are gone once one snapshot has no more than
	// before.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := stacks()
		n := countGoroutines(st)
		if n <= before {
			return 0
		}
		if !time.Now().Before(deadline) {
			fmt.Fprintf(os.Stderr, "goroutines leaked: %d before the tests, %d after:\n%s\n", before, n, st)
			return 1
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stacks() string {
	buf := make([]byte, 1<<20)
	return strings.TrimSpace(string(buf[:runtime.Stack(buf, true)]))
}

// goroutines counts the live goroutines, except the os/signal loop: the
// fuzzing engine (go test -fuzz) calls signal.Notify, whose goroutine
// lives as long as the process; it is not the tests' to wait for.
func goroutines() int { return countGoroutines(stacks()) }

// countGoroutines counts the goroutines of a runtime.Stack dump, as
// goroutines does.
func countGoroutines(st string) int {
	n := 0
	for _, g := range strings.Split(st, "\n\n") {
		if !strings.Contains(g, "os/signal.loop") {
			n++
		}
	}
	return n
}

// SyncBuffer is a bytes.Buffer safe for concurrent use: a log sink for
// the goroutines of the component under test.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// LiveHeap collects garbage and returns the bytes of heap objects still in
// use (HeapAlloc): read before and after building a structure, with the
// structure kept alive (runtime.KeepAlive), it is what the structure keeps.
func LiveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// EnvDuration reads a benchmark's duration knob from the environment: def
// when name is unset, the duration when it is a positive one, and a failed
// test (before anything starts) for anything else, instead of a run with
// a setting the user did not ask for.
func EnvDuration(t testing.TB, name string, def time.Duration) time.Duration {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		t.Fatalf("%s=%q: want a positive duration such as 10s or 7m", name, s)
	}
	return v
}
