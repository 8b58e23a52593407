package testpeer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSServer is an in-process nats-server with JetStream storing in a
// directory of the test's. It listens on 127.0.0.1 on a port the server
// picks itself (Port: -1) and reports; a restart comes back on the same
// port and store, so that clients see an outage, not a new server.
//
// Its methods are not safe for concurrent use, except Running, Server
// and URL reading (a chaos goroutine may Start and Shutdown while the
// test reads them).
type NATSServer struct {
	t    testing.TB
	mu   sync.Mutex
	opts *server.Options // of the next start; ports fixed by the first
	srv  *server.Server
	log  *serverLog
	url  string
	// started: it has run before, so Start is a restart.
	started bool
}

// ErrPortTaken is returned by TryStart when a port the server is
// configured with is in use: on a restart, the port it had was taken by
// something else while it was down.
var ErrPortTaken = errors.New("port taken")

// NATS starts a nats-server with JetStream on t.TempDir() and 127.0.0.1
// port 0; each mod, in order, may change the options first (limits,
// users, a fixed store directory, cluster settings). It is
// shut down when the test ends.
func NATS(t testing.TB, mods ...func(*server.Options)) *NATSServer {
	t.Helper()
	s := NewNATS(t, mods...)
	s.Start()
	return s
}

// NewNATS is NATS without the start: call Start (or TryStart).
func NewNATS(t testing.TB, mods ...func(*server.Options)) *NATSServer {
	t.Helper()
	o := &server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}
	for _, mod := range mods {
		if mod != nil {
			mod(o)
		}
	}
	s := &NATSServer{t: t, opts: o}
	t.Cleanup(s.Shutdown)
	return s
}

// Start starts the server, or restarts it after Shutdown on the same
// port and store directory, and waits until it accepts connections; it
// fails the test when it cannot. A cluster node whose port was taken
// while it was down comes back on new ports: the other nodes accept its
// routes, and clients learn its URL from them.
func (s *NATSServer) Start() {
	s.t.Helper()
	err := s.TryStart()
	if errors.Is(err, ErrPortTaken) && s.started && s.opts.Cluster.Port != 0 {
		s.t.Logf("restart %s on new ports: %v", s.opts.ServerName, err)
		s.opts.Port, s.opts.Cluster.Port = server.RANDOM_PORT, server.RANDOM_PORT
		err = s.TryStart()
	}
	if err != nil {
		s.t.Fatal(err)
	}
}

// TryStart is Start that returns its error (ErrPortTaken among them)
// instead of failing the test: for a test that restarts the server from
// a goroutine of its own.
func (s *NATSServer) TryStart() error {
	if s.Running() {
		return fmt.Errorf("nats-server %s is already running", s.opts.ServerName)
	}
	// The server keeps the options it is given and reads them while it
	// runs: it gets a copy, so that s.opts can note its ports.
	srv, err := server.NewServer(s.opts.Clone())
	if err != nil {
		return fmt.Errorf("nats-server %s: %w", s.opts.ServerName, err)
	}
	log := &serverLog{}
	srv.SetLoggerV2(log, false, false, false)
	go srv.Start()
	if !ready(srv, log, 30*time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		if strings.Contains(log.String(), "address already in use") {
			return fmt.Errorf("nats-server %s: %w:\n%s", s.opts.ServerName, ErrPortTaken, log)
		}
		return fmt.Errorf("nats-server %s did not start:\n%s", s.opts.ServerName, log)
	}
	// A restart comes back on the same ports: nats-server cannot take a
	// listener handed over open, so the port it bound must be bound
	// again. The port was the server's own until its Shutdown a moment
	// ago, never one picked by opening and closing a listener.
	s.mu.Lock()
	s.opts.Port = srv.Addr().(*net.TCPAddr).Port
	if s.opts.Cluster.Port != 0 {
		s.opts.Cluster.Port = srv.ClusterAddr().Port
	}
	s.srv, s.log, s.url, s.started = srv, log, srv.ClientURL(), true
	s.mu.Unlock()
	return nil
}

// ready waits until srv accepts connections, up to timeout; false at
// once when it has given up (a port it cannot listen on).
func ready(srv *server.Server, log *serverLog, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !srv.ReadyForConnections(50 * time.Millisecond) {
		if log.fatal() || time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// Shutdown stops the server and waits until it has; its store stays for
// a restart. It does nothing when the server is not running.
func (s *NATSServer) Shutdown() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Running reports whether the server is up.
func (s *NATSServer) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv != nil
}

// Server is the running server (nil when it is down): for what the kit
// does not wrap (Connz, JetStreamIsLeader, ReloadOptions).
func (s *NATSServer) Server() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv
}

// URL is the client URL, "nats://127.0.0.1:port"; it stays valid across
// restarts on the same port.
func (s *NATSServer) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// Port is the client port (0 before the first start).
func (s *NATSServer) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return 0
	}
	return s.opts.Port
}

// Name is the server's name (empty unless a mod set it).
func (s *NATSServer) Name() string { return s.opts.ServerName }

// StoreDir is the JetStream store directory.
func (s *NATSServer) StoreDir() string { return s.opts.StoreDir }

// Options returns a copy of the options of the next start, with the
// ports the server bound: to ReloadOptions with a change, or to build a
// peer's route or remote from.
func (s *NATSServer) Options() *server.Options {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.Clone()
}

// Log returns the last warnings and errors the server logged (the
// server's own log is off): to say why it misbehaved.
func (s *NATSServer) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

// Connect connects a client, closed when the test ends, with a JetStream
// context.
func (s *NATSServer) Connect(opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	s.t.Helper()
	return Connect(s.t, s.URL(), opts...)
}

// Connect connects a client to url (one URL or several, comma
// separated), closed when the test ends, with a JetStream context.
func Connect(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// NATSCluster starts n JetStream servers clustered with each other (named
// S1…Sn, each mod applied to each) and waits until they have elected the
// JetStream meta leader and it counts every node as a peer (an R3 stream
// can be placed).
//
// Every node binds its own ports (Port: -1), so that no port is picked by
// opening and closing a listener: S1 starts first, the others route to
// it, and S1 learns them from their routes. JetStream takes a configured
// route on every node; S1's first one goes to a loopback listener of the
// test's that accepts and closes connections, until a restart gives S1
// routes to the nodes it knows then. The cluster's name is its own, so
// that routes can never join the cluster of another test process.
func NATSCluster(t testing.TB, n int, mods ...func(*server.Options)) []*NATSServer {
	t.Helper()
	name := fmt.Sprintf("ferry-test-%08x", rand.Uint32())
	placeholder := DownAddr(t)
	servers := make([]*NATSServer, n)
	var seed *url.URL
	for i := range servers {
		routes := []*url.URL{{Scheme: "nats", Host: placeholder}}
		if seed != nil {
			routes = []*url.URL{seed}
		}
		ms := append([]func(*server.Options){func(o *server.Options) {
			o.ServerName = fmt.Sprintf("S%d", i+1)
			o.Cluster = server.ClusterOpts{Name: name, Host: "127.0.0.1", Port: server.RANDOM_PORT}
			o.Routes = routes
		}}, mods...)
		servers[i] = NewNATS(t, ms...)
		servers[i].Start()
		if seed == nil {
			seed = &url.URL{Scheme: "nats", Host: servers[i].Server().ClusterAddr().String()}
		}
	}
	// A restarted node routes to every other one.
	for i, s := range servers {
		var routes []*url.URL
		for j, o := range servers {
			if j != i {
				routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", o.opts.Cluster.Port)})
			}
		}
		s.opts.Routes = routes
	}
	WaitMetaLeader(t, servers, 30*time.Second)
	WaitClusterPeers(t, servers, 30*time.Second)
	return servers
}

// DownAddr returns the "host:port" of a peer that is down: a loopback
// listener, kept until the test ends, that closes every connection it
// accepts. Unlike a port picked free and closed, nobody else can start
// listening there while the test runs.
func DownAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String()
}

// URLs returns the client URLs of the running servers, comma separated.
func URLs(servers []*NATSServer) string {
	var urls []string
	for _, s := range servers {
		if s.Running() {
			urls = append(urls, s.URL())
		}
	}
	return strings.Join(urls, ",")
}

// WaitMetaLeader waits until a client of the running servers gets
// answers from the JetStream API, which takes a meta leader.
func WaitMetaLeader(t testing.TB, servers []*NATSServer, timeout time.Duration) {
	t.Helper()
	_, js := Connect(t, URLs(servers), nats.MaxReconnects(-1))
	err := testutil.Poll(timeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err
	})
	if err == nil {
		return
	}
	var state []string
	for _, s := range servers {
		srv := s.Server()
		if srv == nil {
			state = append(state, s.Name()+": down")
			continue
		}
		state = append(state, fmt.Sprintf("%s: meta leader %v, current %v, routes %d, log:\n%s",
			s.Name(), srv.JetStreamIsLeader(), srv.JetStreamIsCurrent(), srv.NumRoutes(), s.Log()))
	}
	t.Fatalf("no JetStream meta leader (%v):\n%s", err, strings.Join(state, "\n"))
}

// serverLog keeps a server's last warnings and errors, to say why it did
// not start.
type serverLog struct {
	mu     sync.Mutex
	lines  []string
	fatals int
}

func (l *serverLog) add(level, format string, v ...any) {
	line := level + " " + fmt.Sprintf(format, v...)
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.lines); n > 0 && l.lines[n-1] == line {
		return
	}
	if len(l.lines) == 20 {
		l.lines = l.lines[1:]
	}
	l.lines = append(l.lines, line)
	if level == "[FTL]" {
		l.fatals++
	}
}

// fatal reports whether the server logged a fatal error: it gave up.
func (l *serverLog) fatal() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatals > 0
}

func (l *serverLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func (l *serverLog) Noticef(string, ...any)         {}
func (l *serverLog) Debugf(string, ...any)          {}
func (l *serverLog) Tracef(string, ...any)          {}
func (l *serverLog) Warnf(format string, v ...any)  { l.add("[WRN]", format, v...) }
func (l *serverLog) Errorf(format string, v ...any) { l.add("[ERR]", format, v...) }
func (l *serverLog) Fatalf(format string, v ...any) { l.add("[FTL]", format, v...) }
