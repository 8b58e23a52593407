package testpeer

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
)

// MQTTBroker is an in-process mochi v2 MQTT broker. It serves on a
// loopback listener that the kit opened first and keeps open from Broker
// to Close, across Stop and Start: a broker that restarts comes back on
// the very same socket, and no port number is ever released and taken
// again. While the broker is stopped, connections are accepted and closed
// at once (the client sees the connection fail, not "refused": use
// Reserve for a peer that refuses).
type MQTTBroker struct {
	cfg  brokerConfig
	ln   net.Listener
	addr string
	wg   sync.WaitGroup // the accept pump

	mu     sync.Mutex
	srv    *mochi.Server
	sess   *session // nil while no broker takes connections
	closed bool
	gen    int // sessions opened: each has its own listener id
}

type brokerConfig struct {
	auth      mochi.Hook
	tls       *tls.Config
	store     string
	ln        net.Listener
	held      bool
	published func(cl *mochi.Client, pk packets.Packet)
	log       *slog.Logger
}

// BrokerOption configures Broker.
type BrokerOption func(*brokerConfig)

// BrokerAuth replaces the default allow-everything hook with h (an
// auth.Hook with a ledger, say).
func BrokerAuth(h mochi.Hook) BrokerOption { return func(c *brokerConfig) { c.auth = h } }

// BrokerTLS serves MQTT over TLS with tc (clients use "ssl://" + Addr).
func BrokerTLS(tc *tls.Config) BrokerOption { return func(c *brokerConfig) { c.tls = tc } }

// BrokerStore keeps sessions, inflight messages and retained messages in
// the bolt file path, so that they survive Stop and Start.
func BrokerStore(path string) BrokerOption { return func(c *brokerConfig) { c.store = path } }

// BrokerListener serves on ln (an open listener, e.g. Reserved.Listen)
// instead of a new one on 127.0.0.1:0. The broker owns ln from then on.
func BrokerListener(ln net.Listener) BrokerOption { return func(c *brokerConfig) { c.ln = ln } }

// BrokerHeld starts the broker (its store loaded, Publish working) without
// taking connections until Listen is called: messages can be queued for
// a persistent session before its client can connect.
func BrokerHeld() BrokerOption { return func(c *brokerConfig) { c.held = true } }

// BrokerOnPublished calls fn for every message the broker has published
// to its subscribers (from clients and from Publish alike).
func BrokerOnPublished(fn func(cl *mochi.Client, pk packets.Packet)) BrokerOption {
	return func(c *brokerConfig) { c.published = fn }
}

// BrokerLogger gives the broker a logger (the default discards; with
// MQTT_TEST_VERBOSE set it logs to stderr at Debug).
func BrokerLogger(l *slog.Logger) BrokerOption { return func(c *brokerConfig) { c.log = l } }

// Broker starts an in-process MQTT broker for the test; it is closed when
// the test ends.
func Broker(t testing.TB, opts ...BrokerOption) *MQTTBroker {
	t.Helper()
	var cfg brokerConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
		if os.Getenv("MQTT_TEST_VERBOSE") != "" {
			cfg.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	ln := cfg.ln
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	b := &MQTTBroker{cfg: cfg, ln: ln, addr: ln.Addr().String()}
	b.wg.Add(1)
	go b.pump()
	t.Cleanup(b.Close)
	if err := b.start(!cfg.held); err != nil {
		t.Fatal(err)
	}
	return b
}

// Addr is the broker's "host:port".
func (b *MQTTBroker) Addr() string { return b.addr }

// URL is the broker URL for clients: "tcp://" + Addr, or "ssl://" with
// BrokerTLS.
func (b *MQTTBroker) URL() string {
	if b.cfg.tls != nil {
		return "ssl://" + b.addr
	}
	return "tcp://" + b.addr
}

// Server is the running mochi server (a new one after each Start), nil
// while stopped.
func (b *MQTTBroker) Server() *mochi.Server {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.srv
}

// Stop stops the broker like a process exit: its clients are
// disconnected, what is not in the store is lost. The listener stays open.
func (b *MQTTBroker) Stop() {
	b.mu.Lock()
	srv := b.srv
	b.srv, b.sess = nil, nil
	b.mu.Unlock()
	if srv != nil {
		settleDisconnects(srv)
		_ = srv.Close() // closes the session listener and the clients
	}
}

// settleDisconnects waits (at most 5 s) until no client that has gone
// is still to be deleted from mochi's client map. mochi v2.7.9's Close
// takes the map's read lock twice in a row (Clients.GetByListener calls
// Len); a client's Delete arriving between the two — a client that
// disconnected just before Stop, such as a daemon stopped by the test's
// cleanup — waits for the first and blocks the second: a deadlock that
// hung internal/gateway TestSparkplugReload's cleanup until the test
// binary's timeout. Clients still connected are closed by Close after
// that lookup, so their deletes cannot meet it.
func settleDisconnects(srv *mochi.Server) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		pending := false
		for _, cl := range srv.Clients.GetAll() {
			expire := (cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0) ||
				(cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean)
			if cl.Closed() && expire && !cl.IsTakenOver() {
				pending = true
				break
			}
		}
		if !pending {
			return
		}
		time.Sleep(5 * time.Millisecond) // polls mochi's map: it has no signal for a finished disconnect
	}
}

// Start starts a new broker with the same options (and store) on the
// same listener, after Stop.
func (b *MQTTBroker) Start(t testing.TB) {
	t.Helper()
	if err := b.start(true); err != nil {
		t.Fatal(err)
	}
}

// StartHeld is Start without taking connections until Listen (see
// BrokerHeld).
func (b *MQTTBroker) StartHeld(t testing.TB) {
	t.Helper()
	if err := b.start(false); err != nil {
		t.Fatal(err)
	}
}

// Listen makes a held broker take connections.
func (b *MQTTBroker) Listen(t testing.TB) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv == nil || b.sess != nil {
		t.Fatal("Listen: the broker is not started and held")
	}
	if err := b.attach(); err != nil {
		t.Fatal(err)
	}
}

// Close stops the broker and closes its listener. It is idempotent.
func (b *MQTTBroker) Close() {
	b.Stop()
	b.mu.Lock()
	already := b.closed
	b.closed = true
	b.mu.Unlock()
	if !already {
		b.ln.Close()
	}
	b.wg.Wait()
}

// Publish publishes a message from the broker's inline client.
func (b *MQTTBroker) Publish(t testing.TB, topic string, payload []byte, qos byte, retain bool) {
	t.Helper()
	srv := b.Server()
	if srv == nil {
		t.Fatalf("publish %s: the broker is stopped", topic)
	}
	if err := srv.Publish(topic, payload, retain, qos); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

// Inflight returns how many messages the broker holds unacknowledged for
// client id (-1 when it has no such client).
func (b *MQTTBroker) Inflight(id string) int {
	srv := b.Server()
	if srv == nil {
		return -1
	}
	cl, ok := srv.Clients.Get(id)
	if !ok {
		return -1
	}
	return cl.State.Inflight.Len()
}

// Subscriptions returns how many filters client id has.
func (b *MQTTBroker) Subscriptions(id string) int {
	srv := b.Server()
	if srv == nil {
		return 0
	}
	cl, ok := srv.Clients.Get(id)
	if !ok {
		return 0
	}
	return cl.State.Subscriptions.Len()
}

func (b *MQTTBroker) start(listen bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("broker on %s is closed", b.addr)
	}
	if b.srv != nil {
		return fmt.Errorf("broker on %s is already running", b.addr)
	}
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: b.cfg.log})
	var h mochi.Hook = new(auth.AllowHook)
	if b.cfg.auth != nil {
		h = b.cfg.auth
	}
	if err := srv.AddHook(h, nil); err != nil {
		return err
	}
	if b.cfg.store != "" {
		err := srv.AddHook(new(bolt.Hook), &bolt.Options{Path: b.cfg.store, Options: &bbolt.Options{Timeout: 5 * time.Second}})
		if err != nil {
			return err
		}
	}
	if b.cfg.published != nil {
		if err := srv.AddHook(&publishedHook{fn: b.cfg.published}, nil); err != nil {
			return err
		}
	}
	if err := srv.Serve(); err != nil {
		return err
	}
	b.srv = srv
	if listen {
		return b.attach()
	}
	return nil
}

// attach hands the open listener to the current server through a new
// session. b.mu is held.
func (b *MQTTBroker) attach() error {
	b.gen++
	s := &session{conns: make(chan net.Conn), done: make(chan struct{}), addr: b.ln.Addr()}
	var l net.Listener = s
	if b.cfg.tls != nil {
		l = tls.NewListener(s, b.cfg.tls)
	}
	id := fmt.Sprintf("t%d", b.gen)
	if err := b.srv.AddListener(listeners.NewNet(id, l)); err != nil {
		return err
	}
	b.srv.Listeners.Serve(id, b.srv.EstablishConnection)
	b.sess = s
	return nil
}

// pump accepts every connection on the open listener and hands it to the
// current session, or closes it when no broker takes connections.
func (b *MQTTBroker) pump() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		s := b.sess
		b.mu.Unlock()
		if s == nil || !s.hand(c) {
			c.Close()
		}
	}
}

// session is a net.Listener over the broker's open listener for one
// running mochi server: mochi closes it when the server stops, which ends
// its Accept but leaves the real listener open.
type session struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	addr  net.Addr
}

func (s *session) hand(c net.Conn) bool {
	select {
	case s.conns <- c:
		return true
	case <-s.done:
		return false
	}
}

func (s *session) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	}
}

func (s *session) Close() error {
	s.once.Do(func() { close(s.done) })
	return nil
}

func (s *session) Addr() net.Addr { return s.addr }

// publishedHook reports published messages.
type publishedHook struct {
	mochi.HookBase
	fn func(cl *mochi.Client, pk packets.Packet)
}

func (h *publishedHook) ID() string { return "testpeer-published" }

func (h *publishedHook) Provides(b byte) bool {
	return b == mochi.OnPublished
}

func (h *publishedHook) OnPublished(cl *mochi.Client, pk packets.Packet) { h.fn(cl, pk) }

// Reserved is a loopback TCP address that refuses connections: its socket
// is bound (so no one else can take the port) but not listening, so a
// client's connect gets "connection refused" as from a peer that is down.
// Listen turns it into a listening socket on the same port: the peer
// comes up where the client has been trying, with no port released and
// taken again in between. Linux (and other Unix) only.
type Reserved struct {
	fd   int
	addr string
	mu   sync.Mutex
	open bool // fd still ours
}

// Reserve binds a loopback port without listening on it; it is released
// when the test ends (unless Listen handed it over).
func Reserve(t testing.TB) *Reserved {
	t.Helper()
	// Under ForkLock, as the net package does where it cannot create a
	// socket close-on-exec at once: a child process forked meanwhile (the
	// tests that run ferry) must not inherit the port.
	syscall.ForkLock.RLock()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		t.Fatalf("reserve a port: socket: %v", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		t.Fatalf("reserve a port: bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		syscall.Close(fd)
		t.Fatalf("reserve a port: %v", err)
	}
	r := &Reserved{fd: fd, addr: fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port), open: true}
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.open {
			syscall.Close(r.fd)
			r.open = false
		}
	})
	return r
}

// Addr is the reserved "127.0.0.1:port".
func (r *Reserved) Addr() string { return r.addr }

// Listen starts listening on the reserved socket and returns it as a
// net.Listener (hand it to Broker with BrokerListener). The caller owns
// the listener; call Listen once.
func (r *Reserved) Listen(t testing.TB) net.Listener {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.open {
		t.Fatalf("listen on %s: already handed over", r.addr)
	}
	if err := syscall.Listen(r.fd, syscall.SOMAXCONN); err != nil {
		t.Fatalf("listen on %s: %v", r.addr, err)
	}
	f := os.NewFile(uintptr(r.fd), "reserved "+r.addr)
	r.open = false
	ln, err := net.FileListener(f) // a dup: f is closed next
	f.Close()
	if err != nil {
		t.Fatalf("listen on %s: %v", r.addr, err)
	}
	return ln
}

// ServeWebsocket adds MQTT over websocket to the running broker, on a
// loopback listener of its own opened here and handed to the HTTP server
// (mochi's Websocket listener can only be given an address to listen
// on), and returns the "ws://host:port/mqtt" URL. It serves until the
// broker stops.
func (b *MQTTBroker) ServeWebsocket(t testing.TB) string {
	t.Helper()
	srv := b.Server()
	if srv == nil {
		t.Fatal("ServeWebsocket: the broker is stopped")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.gen++
	id := fmt.Sprintf("ws%d", b.gen)
	b.mu.Unlock()
	if err := srv.AddListener(&wsListener{id: id, ln: ln}); err != nil {
		ln.Close()
		t.Fatal(err)
	}
	srv.Listeners.Serve(id, srv.EstablishConnection)
	return "ws://" + ln.Addr().String() + "/mqtt"
}

// wsListener is a mochi listener serving MQTT over websocket on an open
// net.Listener (after mochi's listeners.Websocket, which takes only an
// address).
type wsListener struct {
	id  string
	ln  net.Listener
	hs  *http.Server
	log *slog.Logger
}

func (l *wsListener) ID() string       { return l.id }
func (l *wsListener) Address() string  { return l.ln.Addr().String() }
func (l *wsListener) Protocol() string { return "ws" }

func (l *wsListener) Init(log *slog.Logger) error {
	l.log = log
	l.hs = &http.Server{ReadHeaderTimeout: 10 * time.Second}
	return nil
}

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	up := &websocket.Upgrader{Subprotocols: []string{"mqtt"}, CheckOrigin: func(*http.Request) bool { return true }}
	l.hs.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		if err := establish(l.id, &wsConn{Conn: c.NetConn(), c: c}); err != nil {
			l.log.Warn("", "error", err)
		}
	})
	_ = l.hs.Serve(l.ln) // ends with Close
}

func (l *wsListener) Close(closeClients listeners.CloseFn) {
	_ = l.hs.Close() // closes the listener
	closeClients(l.id)
}

// wsConn is a websocket connection as the net.Conn mochi reads MQTT
// packets from: binary messages, read as one stream.
type wsConn struct {
	net.Conn
	c *websocket.Conn
	r io.Reader // the message being read, nil between messages
}

func (ws *wsConn) Read(p []byte) (int, error) {
	for {
		if ws.r == nil {
			op, r, err := ws.c.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, fmt.Errorf("websocket message type %d, want binary", op)
			}
			ws.r = r
		}
		n, err := ws.r.Read(p)
		if errors.Is(err, io.EOF) {
			ws.r = nil
			err = nil
			if n == 0 {
				continue
			}
		}
		return n, err
	}
}

func (ws *wsConn) Write(p []byte) (int, error) {
	if err := ws.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
