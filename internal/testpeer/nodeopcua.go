package testpeer

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// NodeOPCUA is a node-opcua server (the Node.js OPC UA stack, pinned to
// the version in testdata/nodeopcua/package.json) run as a child process:
// a third-party implementation, not a Go library written beside ferry.
// Its variables come from a small description (NodeOPCUAConfig); the
// script, testdata/nodeopcua/server.js, documents the JSON it reads.
//
// The server binds 127.0.0.1 port 0 itself and reports the port it got
// (node-opcua cannot be handed a listener). Restart binds the same port
// again, as a restarted PLC would: the one rebind the kit allows.
type NodeOPCUA struct {
	t    testing.TB
	cfg  NodeOPCUAConfig
	dir  string // installed node_modules' parent
	file string // the description file

	mu     sync.Mutex
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // the server's stdout after its first line
	done   chan struct{}
	hello  nodeHello
	starts int

	logMu sync.Mutex
	log   *bytes.Buffer // stderr of every run
}

// NodeOPCUAConfig describes the server: the policies it offers and its
// variables.
type NodeOPCUAConfig struct {
	// Security lists the policies offered: None, Basic256Sha256,
	// Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss (default None). The
	// secure ones in modes Sign and SignAndEncrypt.
	Security []string `json:"security,omitempty"`
	// NamespaceURI is the namespace of the variables (default
	// urn:ferry:test).
	NamespaceURI string `json:"namespace_uri,omitempty"`
	// Users are the user name logins the server accepts; any other user
	// name or password is refused with BadUserAccessDenied. Nil: none
	// declared (node-opcua's default user manager). SetUser changes them.
	Users []NodeOPCUAUser `json:"users"`
	// NoAnonymous refuses anonymous logins (default: accepted).
	NoAnonymous bool `json:"no_anonymous,omitempty"`
	// PKI is the server's PKI folder (default: one beside the install,
	// shared by every server). It accepts every client certificate.
	PKI   string         `json:"pki,omitempty"`
	Nodes []NodeOPCUAVar `json:"nodes"`
	Port  int            `json:"port,omitempty"`
	// Alarms are the alarm conditions of the alarms script
	// (nodeopcua_alarms.go); server.js ignores them.
	Alarms []NodeOPCUAAlarm `json:"alarms,omitempty"`
	// Script is the server script in testdata/nodeopcua (default
	// server.js).
	Script string `json:"-"`
}

// NodeOPCUAVar is one variable, node id ns=<namespace>;s=<Name>.
type NodeOPCUAVar struct {
	Name string `json:"name"`
	// Type is the OPC UA built-in type: Double (default), Float, Int32,
	// UInt32, Int16, UInt16, Int64, Boolean, String.
	Type  string `json:"type,omitempty"`
	Value any    `json:"value,omitempty"`
	// Every changes the value by Step (default 1; Booleans toggle) this
	// often; 0: the value changes only when set.
	Every time.Duration `json:"-"`
	Step  float64       `json:"step,omitempty"`
}

func (v NodeOPCUAVar) MarshalJSON() ([]byte, error) {
	type plain NodeOPCUAVar
	return json.Marshal(struct {
		plain
		EveryMS int64 `json:"every_ms,omitempty"`
	}{plain(v), v.Every.Milliseconds()})
}

type nodeHello struct {
	Port         int    `json:"port"`
	Endpoint     string `json:"endpoint"`
	NamespaceURI string `json:"namespace_uri"`
	Namespace    int    `json:"namespace"`
}

// nodeOPCUAVersion is the node-opcua version package.json pins; the
// install is checked against it.
const nodeOPCUAVersion = "2.186.4"

// NodeOPCUADir installs node-opcua (npm ci from the committed lock file)
// into a cache directory named after the lock file's hash, once: later
// calls, from any test process, find it there. It returns the directory
// holding node_modules and server.js's source folder. It skips the test
// when node or npm is absent.
func NodeOPCUADir(t testing.TB) (modules, src string) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed (Debian: apt-get install nodejs npm): node-opcua tests skipped")
	}
	src = nodeOPCUASource()
	dir, err := installNodeOPCUA(src)
	if errors.Is(err, exec.ErrNotFound) {
		t.Skip("npm is not installed (Debian: apt-get install npm): node-opcua tests skipped")
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir, src
}

// nodeOPCUASource is testdata/nodeopcua beside this file.
func nodeOPCUASource() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "testdata", "nodeopcua")
}

// installNodeOPCUA runs npm ci in <cache>/ferry/nodeopcua-<hash> unless
// a finished install is there (its stamp file), under a file lock so
// that parallel test processes install once.
func installNodeOPCUA(src string) (string, error) {
	lock, err := os.ReadFile(filepath.Join(src, "package-lock.json"))
	if err != nil {
		return "", err
	}
	pkg, err := os.ReadFile(filepath.Join(src, "package.json"))
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(append(append([]byte{}, pkg...), lock...))
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "ferry", "nodeopcua-"+hex.EncodeToString(sum[:6]))
	stamp := filepath.Join(dir, "installed")
	if _, err := os.Stat(stamp); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lf, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(stamp); err == nil {
		return dir, nil // another process installed it meanwhile
	}
	if err := os.WriteFile(filepath.Join(dir, "package.json"), pkg, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "package-lock.json"), lock, 0o644); err != nil {
		return "", err
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", err
	}
	cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm ci node-opcua in %s: %w\n%s", dir, err, Tail(string(out), 20))
	}
	v, err := os.ReadFile(filepath.Join(dir, "node_modules", "node-opcua", "package.json"))
	if err != nil {
		return "", fmt.Errorf("node-opcua install in %s: %w", dir, err)
	}
	var meta struct{ Version string }
	if err := json.Unmarshal(v, &meta); err != nil || meta.Version != nodeOPCUAVersion {
		return "", fmt.Errorf("node-opcua in %s is %q, want %s", dir, meta.Version, nodeOPCUAVersion)
	}
	return dir, os.WriteFile(stamp, []byte(nodeOPCUAVersion+"\n"), 0o644)
}

// StartNodeOPCUA installs node-opcua when needed and starts a server; it
// is stopped when the test ends. It skips the test when node is absent.
func StartNodeOPCUA(t testing.TB, cfg NodeOPCUAConfig) *NodeOPCUA {
	t.Helper()
	dir, _ := NodeOPCUADir(t)
	tmp := t.TempDir()
	if cfg.PKI == "" {
		// Shared by the servers of every test: node-opcua makes its
		// certificate at the first start, which takes seconds.
		cfg.PKI = filepath.Join(dir, "pki")
	}
	s := &NodeOPCUA{t: t, cfg: cfg, dir: dir, file: filepath.Join(tmp, "server.json"), log: new(bytes.Buffer)}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("node-opcua server output:\n%s", Tail(s.Log(), 40))
		}
	})
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *NodeOPCUA) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("node-opcua server already running")
	}
	cfg := s.cfg
	cfg.Port = s.hello.Port // 0 at the first start; then the same port again
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	if err := os.WriteFile(s.file, b, 0o644); err != nil {
		return err
	}
	script := cfg.Script
	if script == "" {
		script = "server.js"
	}
	cmd := exec.Command("node", filepath.Join(nodeOPCUASource(), script), s.file)
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(s.dir, "node_modules"))
	cmd.Stderr = &lockedWriter{mu: &s.logMu, w: s.log}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	// One server at a time makes or reads the PKI folder.
	lf, err := os.OpenFile(filepath.Join(s.cfg.PKI+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start node-opcua server: %w", err)
	}
	lines := make(chan string, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		logw := &lockedWriter{mu: &s.logMu, w: s.log}
		for sc.Scan() {
			l := sc.Text()
			if !strings.HasPrefix(l, "{") {
				// node-opcua's own messages go to stdout too.
				fmt.Fprintln(logw, l)
				continue
			}
			select {
			case lines <- l:
			default: // nobody is reading answers: drop
			}
		}
		_ = cmd.Wait()
	}()
	var hello nodeHello
	deadline := time.NewTimer(2 * time.Minute) // the first start makes a certificate
	defer deadline.Stop()
	for hello.Port == 0 {
		select {
		case l := <-lines:
			if strings.HasPrefix(l, `{"port"`) {
				if err := json.Unmarshal([]byte(l), &hello); err != nil {
					return fmt.Errorf("node-opcua server said %q: %w", l, err)
				}
			}
		case <-done:
			return fmt.Errorf("node-opcua server exited before listening:\n%s", Tail(s.Log(), 20))
		case <-deadline.C:
			_ = cmd.Process.Kill()
			<-done
			return errors.New("node-opcua server did not listen within 2 minutes")
		}
	}
	s.cmd, s.stdin, s.lines, s.done, s.hello = cmd, stdin, lines, done, hello
	s.starts++
	return nil
}

// lockedWriter guards the stderr buffer with its own mutex: start holds
// NodeOPCUA.mu while it waits for the first line.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Endpoint is opc.tcp://127.0.0.1:<port>.
func (s *NodeOPCUA) Endpoint() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hello.Endpoint
}

// Addr is the server's 127.0.0.1:port.
func (s *NodeOPCUA) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("127.0.0.1:%d", s.hello.Port)
}

// NamespaceURI is the variables' namespace.
func (s *NodeOPCUA) NamespaceURI() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hello.NamespaceURI
}

// Node returns "ns=<index>;s=<name>".
func (s *NodeOPCUA) Node(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("ns=%d;s=%s", s.hello.Namespace, name)
}

// Set changes a variable's value and waits for the server's answer.
func (s *NodeOPCUA) Set(name string, v any) error {
	return s.sendCommand(map[string]any{"set": name, "value": v})
}

// NodeOPCUAUser is one user name login.
type NodeOPCUAUser struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// SetUser adds a user name login or changes its password, as an
// administrator would on the server, and waits for the server's answer.
// The server must have been started with Users (possibly empty).
func (s *NodeOPCUA) SetUser(username, password string) error {
	if s.cfg.Users == nil {
		return errors.New("node-opcua server started without users: SetUser needs NodeOPCUAConfig.Users")
	}
	return s.sendCommand(map[string]any{"user": username, "password": password})
}

// sendCommand sends one command line and waits for its {"ok": …} answer.
func (s *NodeOPCUA) sendCommand(cmd map[string]any) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	s.mu.Lock()
	in, lines, done := s.stdin, s.lines, s.done
	s.mu.Unlock()
	if in == nil {
		return errors.New("node-opcua server is stopped")
	}
	if _, err := in.Write(append(b, '\n')); err != nil {
		return err
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case l := <-lines:
			if !strings.HasPrefix(l, `{"ok"`) {
				return fmt.Errorf("node-opcua server: %s", l)
			}
			return nil
		case <-done:
			return errors.New("node-opcua server exited")
		case <-timeout.C:
			return errors.New("node-opcua server did not answer within 10s")
		}
	}
}

// Stop ends the server (SIGTERM, then SIGKILL after 10 s) and waits for
// it to exit.
func (s *NodeOPCUA) Stop() {
	s.mu.Lock()
	cmd, done, in := s.cmd, s.done, s.stdin
	s.cmd, s.stdin = nil, nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	in.Close()
}

// Kill ends the server with SIGKILL, as a crash would, and waits for it.
func (s *NodeOPCUA) Kill() {
	s.mu.Lock()
	cmd, done, in := s.cmd, s.done, s.stdin
	s.cmd, s.stdin = nil, nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
	in.Close()
}

// Restart stops the server if it runs and starts it again on the same
// port, retrying for a while if the port is still held.
func (s *NodeOPCUA) Restart() error {
	s.Stop()
	var err error
	for range 20 {
		if err = s.start(); err == nil {
			return nil
		}
		time.Sleep(250 * time.Millisecond) // retry pacing while the old socket goes
	}
	return err
}

// Starts is how many times the server was started.
func (s *NodeOPCUA) Starts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts
}

// Log is the server's output other than its answers, over every run.
func (s *NodeOPCUA) Log() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}
