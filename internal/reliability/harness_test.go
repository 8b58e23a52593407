package reliability

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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

// freeAddr returns a free loopback address (host:port).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitFor polls cond every 100 ms until it returns nil or timeout passes;
// it returns the last error.
func waitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// proc is the ferry binary run as a child process. Its stdout and stderr
// go to one log file that accumulates across restarts.
type proc struct {
	t        *testing.T
	cfg      string
	HTTP     string // host:port of its HTTP listener
	logPath  string
	args     []string
	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	Starts   int
	scanFrom int64 // log offset up to which checkLog has looked
	runFrom  int64 // log offset where the last run's output starts
}

// newProc prepares ferry run -config cfg; http is the listener the config
// sets (for scraping).
func newProc(t *testing.T, cfg, http string) *proc {
	t.Helper()
	p := &proc{t: t, cfg: cfg, HTTP: http, logPath: filepath.Join(t.TempDir(), "ferry.log")}
	t.Cleanup(func() {
		if p.Running() {
			p.Kill()
		}
		p.checkLog()
		if t.Failed() {
			t.Logf("ferry log (last 60 lines of %s):\n%s", p.logPath, tail(p.Log(), 60))
		}
	})
	return p
}

// Start starts ferry; it does not wait for it to be up.
func (p *proc) Start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.t.Fatal("ferry is already running")
	}
	lf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	p.Starts++
	if fi, err := lf.Stat(); err == nil {
		p.runFrom = fi.Size()
	}
	fmt.Fprintf(lf, "----- harness: start %d at %s\n", p.Starts, time.Now().UTC().Format(time.RFC3339Nano))
	args := append([]string{"run", "-config", p.cfg}, p.args...)
	cmd := exec.Command(ferryBin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), "GORACE=halt_on_error=0")
	// A test process that dies takes ferry with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		p.t.Fatalf("start ferry: %v", err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		lf.Close()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(done)
	}()
}

// Running reports whether the process has not exited.
func (p *proc) Running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Exited returns a channel closed when the process exits (nil if never
// started).
func (p *proc) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Pid of the running process.
func (p *proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *proc) Kill() {
	p.t.Helper()
	p.signalWait(syscall.SIGKILL, 10*time.Second)
}

// Stop sends SIGTERM and waits up to timeout; it returns the exit error
// (nil for status 0).
func (p *proc) Stop(timeout time.Duration) error {
	p.t.Helper()
	return p.signalWait(syscall.SIGTERM, timeout)
}

func (p *proc) signalWait(sig syscall.Signal, timeout time.Duration) error {
	p.t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return errors.New("not running")
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		p.t.Errorf("ferry did not exit within %v of %v; killed", timeout, sig)
	}
	p.mu.Lock()
	err := p.waitErr
	p.cmd, p.done = nil, nil
	p.mu.Unlock()
	p.checkLog()
	return err
}

// Wait waits for the process to exit by itself and returns its exit error.
func (p *proc) Wait(timeout time.Duration) (error, bool) {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return errors.New("not running"), true
	}
	select {
	case <-done:
	case <-time.After(timeout):
		return nil, false
	}
	p.mu.Lock()
	err := p.waitErr
	p.cmd, p.done = nil, nil
	p.mu.Unlock()
	p.checkLog()
	return err, true
}

// RunLog returns what ferry wrote since its last start.
func (p *proc) RunLog() string {
	b, _ := os.ReadFile(p.logPath)
	if int64(len(b)) < p.runFrom {
		return ""
	}
	return string(b[p.runFrom:])
}

// Log returns everything ferry wrote so far.
func (p *proc) Log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

var crashMarks = regexp.MustCompile(`(?m)^(panic: |fatal error: |WARNING: DATA RACE|SIGSEGV|goroutine \d+ \[running\]:)`)

// checkLog fails the test if the log written since the last check shows a
// panic, a runtime fatal error or a data race.
func (p *proc) checkLog() {
	p.t.Helper()
	b, _ := os.ReadFile(p.logPath)
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
			return fmt.Errorf("ferry exited: %v\n%s", p.waitErr, tail(p.Log(), 20))
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
	resp, err := httpClient.Get("http://" + p.HTTP + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Metrics scrapes /metrics.
func (p *proc) Metrics() (metrics, error) {
	code, body, err := p.Get("/metrics")
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("/metrics: status %d", code)
	}
	return parseMetrics(body), nil
}

// metrics is a scrape: value by series as printed, "name{a="b",…}".
type metrics map[string]float64

func parseMetrics(text string) metrics {
	m := metrics{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m
}

// sum adds the series of name whose labels contain every one of match
// (e.g. `lane="telemetry"`).
func (m metrics) sum(name string, match ...string) float64 {
	var s float64
	for k, v := range m {
		n, labels := k, ""
		if i := strings.IndexByte(k, '{'); i >= 0 {
			n, labels = k[:i], k[i:]
		}
		if n != name {
			continue
		}
		ok := true
		for _, want := range match {
			if !strings.Contains(labels, want) {
				ok = false
				break
			}
		}
		if ok {
			s += v
		}
	}
	return s
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
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
