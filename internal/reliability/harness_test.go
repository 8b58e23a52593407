package reliability

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// The profile the suite runs (FERRY_RELIABILITY), the ferry binary built
// for it, and the seed of every random schedule.
var (
	profile  string
	ferryBin string
	seed     uint64
	raceBin  bool
)

const (
	short = "short"
	long  = "long"
)

func TestMain(m *testing.M) {
	flag.Parse()
	profile = os.Getenv("FERRY_RELIABILITY")
	// The gopcua server prints its node sets through the standard logger.
	stdlog.SetOutput(io.Discard)
	if profile == "" {
		os.Exit(m.Run()) // every test skips
	}
	if profile != short && profile != long {
		fmt.Fprintf(os.Stderr, "FERRY_RELIABILITY=%q: want short or long\n", profile)
		os.Exit(2)
	}
	seed = uint64(time.Now().UnixNano())
	if s := os.Getenv("FERRY_RELIABILITY_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "FERRY_RELIABILITY_SEED=%q: %v\n", s, err)
			os.Exit(2)
		}
		seed = v
	}
	raceBin = profile == short
	if v := os.Getenv("FERRY_RELIABILITY_RACE"); v != "" {
		raceBin = v == "1" || v == "true"
	}
	dir, err := os.MkdirTemp("", "ferry-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		ferryBin = filepath.Join(dir, "ferry")
		args := []string{"build", "-trimpath", "-o", ferryBin}
		if raceBin {
			args = append(args, "-race")
		}
		args = append(args, "github.com/ferry-edge/ferry/cmd/ferry")
		start := time.Now()
		cmd := exec.Command("go", args...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "go %s: %v\n", strings.Join(args, " "), err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "reliability: profile %s, seed %d (FERRY_RELIABILITY_SEED), ferry built in %v (race %v)\n",
			profile, seed, time.Since(start).Round(time.Millisecond), raceBin)
		return m.Run()
	}()
	os.Exit(code)
}

// needProfile skips the test unless the suite runs one of profiles (any
// profile when none is given).
func needProfile(t *testing.T, profiles ...string) {
	t.Helper()
	if profile == "" {
		t.Skip("reliability suite: set FERRY_RELIABILITY=short or long to run it")
	}
	if len(profiles) == 0 {
		return
	}
	for _, p := range profiles {
		if p == profile {
			return
		}
	}
	t.Skipf("runs only in the %s profile", strings.Join(profiles, ", "))
}

// pick returns s in the short profile and l in the long one.
func pick[T any](s, l T) T {
	if profile == long {
		return l
	}
	return s
}

// rng returns a random source for one test, derived from the suite's seed
// and the test's name, so that a schedule can be reproduced.
func rng(t *testing.T) *rand.Rand {
	var h uint64 = 14695981039346656037
	for _, c := range []byte(t.Name()) {
		h = (h ^ uint64(c)) * 1099511628211
	}
	t.Logf("random schedule: FERRY_RELIABILITY_SEED=%d", seed)
	return rand.New(rand.NewPCG(seed, h))
}

// result logs a scenario's figures on one line ("RESULT scenario: k=v, …")
// and appends a Markdown row to FERRY_RELIABILITY_REPORT when set.
func result(t *testing.T, scenario, figures string) {
	t.Helper()
	t.Logf("RESULT %s: %s", scenario, figures)
	path := os.Getenv("FERRY_RELIABILITY_REPORT")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("report: %v", err)
		return
	}
	defer f.Close()
	status := "pass"
	if t.Failed() {
		status = "FAIL"
	}
	fmt.Fprintf(f, "| %s | %s | %s | %s |\n", profile, scenario, figures, status)
}

// waitFor polls cond until it returns nil or timeout passes; it returns
// the last error.
var waitFor = testutil.Poll

// proc is the ferry binary run as a child process (testpeer.Child): its
// output accumulates across restarts in one log, which is checked for
// panics and races after every run. ferry's HTTP listener is on
// 127.0.0.1 port 0: each run's log says where it listens.
type proc struct {
	*testpeer.Proc
	t        *testing.T
	scanFrom int64 // log offset up to which checkLog has looked

	mu        sync.Mutex
	addr      string // the HTTP listener's host:port in run addrStart
	addrStart int
}

// newProc prepares ferry run -config cfg.
func newProc(t *testing.T, cfg string) *proc {
	t.Helper()
	p := &proc{t: t, Proc: testpeer.NewChild(t, ferryBin, "run", "-config", cfg)}
	p.Env = []string{"GORACE=halt_on_error=0"}
	t.Cleanup(func() {
		if p.Running() {
			p.Kill()
		}
		p.checkLog()
	})
	return p
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *proc) Kill() {
	p.t.Helper()
	_ = p.Proc.Kill()
	p.checkLog()
}

// Stop sends SIGTERM and waits up to timeout; it returns the exit error
// (nil for status 0). A ferry that does not exit in time is killed and
// fails the test.
func (p *proc) Stop(timeout time.Duration) error {
	p.t.Helper()
	err := p.Proc.Stop(timeout)
	if errors.Is(err, testpeer.ErrStopTimeout) {
		p.t.Errorf("ferry: %v", err)
	}
	p.checkLog()
	return err
}

// Wait waits for the process to exit by itself and returns its exit
// error; false when it still runs after timeout.
func (p *proc) Wait(timeout time.Duration) (error, bool) {
	err := p.Proc.Wait(timeout)
	if errors.Is(err, testpeer.ErrStillRunning) {
		return nil, false
	}
	p.checkLog()
	return err, true
}

// tail returns the last n lines of s.
var tail = testpeer.Tail

var httpListening = regexp.MustCompile(`msg="http listening".*? addr=(\S+)`)

// HTTP is the host:port ferry's HTTP listener is on in the current run,
// from its log ("" until it has logged it).
func (p *proc) HTTP() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.Starts(); p.addrStart != n || p.addr == "" {
		p.addr, p.addrStart = "", n
		if m := httpListening.FindStringSubmatch(p.RunLog()); m != nil {
			p.addr = m[1]
		}
	}
	return p.addr
}

var crashMarks = regexp.MustCompile(`(?m)^(panic: |fatal error: |WARNING: DATA RACE|SIGSEGV|goroutine \d+ \[running\]:)`)

// checkLog fails the test if the log written since the last check shows a
// panic, a runtime fatal error or a data race.
func (p *proc) checkLog() {
	p.t.Helper()
	b, _ := os.ReadFile(p.LogPath())
	if int64(len(b)) <= p.scanFrom {
		return
	}
	chunk := b[p.scanFrom:]
	p.scanFrom = int64(len(b))
	if loc := crashMarks.FindIndex(chunk); loc != nil {
		from := max(0, loc[0]-2000)
		to := min(len(chunk), loc[1]+6000)
		p.t.Errorf("ferry crashed or raced:\n%s", chunk[from:to])
	}
}

// WaitUp waits until /healthz answers 200.
func (p *proc) WaitUp(timeout time.Duration) error {
	return waitFor(timeout, func() error {
		if !p.Running() {
			return fmt.Errorf("ferry exited: %v\n%s", p.Proc.Wait(0), testpeer.Tail(p.Log(), 20))
		}
		code, body, err := p.Get("/healthz")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("/healthz: %d %s", code, body)
		}
		return nil
	})
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// Get fetches path from ferry's HTTP listener.
func (p *proc) Get(path string) (int, string, error) {
	addr := p.HTTP()
	if addr == "" {
		return 0, "", errors.New("ferry has not logged its HTTP listener yet")
	}
	resp, err := httpClient.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Metrics scrapes /metrics.
func (p *proc) Metrics() (testpeer.Metrics, error) {
	code, body, err := p.Get("/metrics")
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("/metrics: status %d", code)
	}
	return testpeer.ParseMetrics(body)
}

// metricAtLeast is a condition for waitFor: the sum of the series of name
// with labels ("name=value") has reached min.
func (p *proc) metricAtLeast(name string, least float64, labels ...string) func() error {
	return func() error {
		m, err := p.Metrics()
		if err != nil {
			return err
		}
		if v := m.Sum(name, labels...); v < least {
			return fmt.Errorf("%s%v = %v, want at least %v", name, labels, v, least)
		}
		return nil
	}
}

// runFerry runs a ferry subcommand to completion and returns its combined
// output and exit error.
func runFerry(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferryBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Errorf("ferry %s: no answer within %v", strings.Join(args, " "), timeout)
	}
	return out.String(), err
}

// procStatus reads a field of /proc/PID/status in kB (VmRSS, …).
func procStatusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field+":") {
			f := strings.Fields(line[len(field)+1:])
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// openFDs counts the open file descriptors of pid.
func openFDs(pid int) (int, error) {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(es), err
}
