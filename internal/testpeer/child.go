package testpeer

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proc is a binary run as a child process, for the tests that kill -9 it
// (ferry itself, a helper binary). It can be started again after it has
// exited. Its stdout and stderr go to one log file in the test's temp
// directory that accumulates across restarts; on disk, not in memory, so
// that a runaway log cannot exhaust the machine, and cmd.Wait returns when
// the process exits even if a grandchild holds the file open.
//
// Every method that says it waits for the exit waits for the real one:
// when it returns, the process has been reaped (its pid is gone).
type Proc struct {
	t    testing.TB
	bin  string
	args []string
	// Env is added to the test's environment at each Start.
	Env []string

	logPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed once cmd.Wait has returned
	waitErr error
	starts  int
	runFrom int64 // log offset where the last run's output starts
}

// ErrStopTimeout is returned by Stop when the process did not exit
// within the time given after the signal (it was then killed with
// SIGKILL).
var ErrStopTimeout = errors.New("did not exit after the stop signal")

// ErrStillRunning is returned by Wait when the process has not exited
// within the time given.
var ErrStillRunning = errors.New("still running")

// ErrNotStarted is returned by Stop, Kill and Wait when the process was
// never started.
var ErrNotStarted = errors.New("not started")

// Child starts bin with args as a child process: Child(t, bin, args...)
// is NewChild and Start. When the test ends a process still running is
// killed (SIGKILL) and waited for, and when the test has failed, the
// tail of its output is logged.
func Child(t testing.TB, bin string, args ...string) *Proc {
	t.Helper()
	p := NewChild(t, bin, args...)
	p.Start()
	return p
}

// NewChild prepares bin with args; set Env, then Start.
func NewChild(t testing.TB, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{t: t, bin: bin, args: args, logPath: filepath.Join(t.TempDir(), filepath.Base(bin)+".log")}
	t.Cleanup(func() {
		if p.Running() {
			_ = p.Kill()
		}
		if t.Failed() {
			t.Logf("%s output (last 60 lines of %s):\n%s", filepath.Base(bin), p.logPath, Tail(p.Log(), 60))
		}
	})
	return p
}

// Start starts the process (again: it must have exited); it does not
// wait for it to be up. A test process that dies takes the child with
// it (Pdeathsig).
func (p *Proc) Start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			p.t.Fatalf("%s is already running", p.bin)
		}
	}
	lf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	p.starts++
	if fi, err := lf.Stat(); err == nil {
		p.runFrom = fi.Size()
	}
	fmt.Fprintf(lf, "----- testpeer: start %d at %s\n", p.starts, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		p.t.Fatalf("start %s: %v", p.bin, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.waitErr = cmd, done, nil
	go func() {
		err := cmd.Wait()
		lf.Close()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(done)
	}()
}

// Starts is how many times the process was started.
func (p *Proc) Starts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}

// Running reports whether the process was started and has not exited.
func (p *Proc) Running() bool {
	done := p.Exited()
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

// Exited returns a channel closed when the last process started has
// exited and been reaped (nil if never started).
func (p *Proc) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Pid of the last process started (0 if none).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Signal sends sig to the running process.
func (p *Proc) Signal(sig os.Signal) error {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil {
		return ErrNotStarted
	}
	return cmd.Process.Signal(sig)
}

// Kill sends SIGKILL and waits for the exit; it returns the exit error
// (a process already gone returns how it ended).
func (p *Proc) Kill() error {
	if err := p.Signal(syscall.SIGKILL); errors.Is(err, ErrNotStarted) {
		return err
	}
	return p.wait(nil)
}

// Stop sends SIGTERM and waits up to timeout for the exit; it returns the
// exit error (nil for status 0). A process still running then is killed
// with SIGKILL and waited for, and Stop returns ErrStopTimeout.
func (p *Proc) Stop(timeout time.Duration) error {
	return p.StopWith(syscall.SIGTERM, timeout)
}

// StopWith is Stop with another signal than SIGTERM (SIGINT, SIGHUP for
// a peer that stops on it).
func (p *Proc) StopWith(sig os.Signal, timeout time.Duration) error {
	if err := p.Signal(sig); errors.Is(err, ErrNotStarted) {
		return err
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	if err := p.wait(timer.C); !errors.Is(err, ErrStillRunning) {
		return err
	}
	_ = p.Signal(syscall.SIGKILL)
	_ = p.wait(nil) // the real exit, however long the kernel takes
	return fmt.Errorf("%s: %w (%v) within %v; killed", filepath.Base(p.bin), ErrStopTimeout, sig, timeout)
}

// Wait waits up to timeout for the process to exit by itself and returns
// its exit error, or ErrStillRunning (the process is left running).
func (p *Proc) Wait(timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	return p.wait(timer.C)
}

// wait waits for the exit of the last process started, or until
// give-up fires (nil: no limit).
func (p *Proc) wait(giveUp <-chan time.Time) error {
	done := p.Exited()
	if done == nil {
		return ErrNotStarted
	}
	select {
	case <-done:
	case <-giveUp:
		return ErrStillRunning
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// LogPath is the file the output goes to.
func (p *Proc) LogPath() string { return p.logPath }

// Log returns everything the process wrote so far, across restarts
// (each run starts with a "----- testpeer: start N" line).
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// RunLog returns what the process wrote since its last start.
func (p *Proc) RunLog() string {
	p.mu.Lock()
	from := p.runFrom
	p.mu.Unlock()
	b, _ := os.ReadFile(p.logPath)
	if int64(len(b)) < from {
		return ""
	}
	return string(b[from:])
}

// Killed reports whether err, an exit error of Kill, Stop or Wait, says
// the process died of SIGKILL (and not of its own accord).
func Killed(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
