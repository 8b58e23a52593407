package testpeer

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopcua/opcua/id"
	uaserver "github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"
)

// UAServer is an in-process gopcua v0.9.1 server holding variables in one
// namespace, whose values the test sets.
//
// gopcua's server cannot be handed a listener (Server.Start listens on
// its first endpoint's host:port and keeps the listener unexported), and
// its Close leaves the TCP connections of its sessions open. So clients
// reach it through a front the kit owns: a loopback listener opened first
// and kept open until Close, forwarding each connection to the server.
// The server itself listens on a port that was free a moment ago; if
// another process took it in between, its start fails with "address in
// use" and the kit tries a new port (clients never see that port: they
// use Endpoint). Stop cuts every forwarded connection as a process exit
// would; Restart starts a new server on a new backend port behind the
// same front, so the address clients use is never released.
type UAServer struct {
	cfg   uaConfig
	front *uaFront

	mu     sync.Mutex
	srv    *uaserver.Server
	ns     *uaserver.NodeNameSpace
	nsIdx  uint16
	cancel context.CancelFunc
	names  []string // in the order added
	nodes  map[string]uaNode
	// methods and calls serve UAMethods (opcua_write.go).
	methods map[uaMethodKey]UAMethodFunc
	calls   int
}

type uaNode struct {
	value  *ua.DataValue        // set by Add and Set
	fn     func() *ua.DataValue // or read from fn
	locked bool
	// build makes the node itself (opcua_write.go): a writable variable.
	build func(*ua.NodeID) *uaserver.Node
}

type uaConfig struct {
	name        string
	nsURI       string
	extraNS     int
	none        bool
	cert        []byte
	key         *rsa.PrivateKey
	policies    []string
	auth        []ua.UserTokenType
	unbrowsable bool
	methods     bool
	writeFilter func(string, *ua.DataValue) *ua.DataValue
}

// UAOption configures OPCUAServer.
type UAOption func(*uaConfig)

// UANone offers security policy None (with anonymous login).
func UANone() UAOption { return func(c *uaConfig) { c.none = true } }

// UASecurity offers the policies (default Basic256Sha256 and
// Aes256_Sha256_RsaPss) in modes Sign and SignAndEncrypt, with the
// server's certificate (DER) and key.
func UASecurity(cert []byte, key *rsa.PrivateKey, policies ...string) UAOption {
	return func(c *uaConfig) {
		c.cert, c.key = cert, key
		c.policies = policies
		if len(c.policies) == 0 {
			c.policies = []string{"Basic256Sha256", "Aes256_Sha256_RsaPss"}
		}
	}
}

// UAAuth accepts these user token types besides anonymous.
func UAAuth(types ...ua.UserTokenType) UAOption {
	return func(c *uaConfig) { c.auth = append(c.auth, types...) }
}

// UAName is the server's application name (default "ferry test server").
func UAName(name string) UAOption { return func(c *uaConfig) { c.name = name } }

// UANamespace is the URI of the namespace holding the variables (default
// "urn:ferry:test:plant").
func UANamespace(uri string) UAOption { return func(c *uaConfig) { c.nsURI = uri } }

// UAExtraNamespaces adds n namespaces before the variables' one, shifting
// its index (see also Restart).
func UAExtraNamespaces(n int) UAOption { return func(c *uaConfig) { c.extraNS = n } }

// UAUnbrowsable leaves variables added after the start out of the Objects
// folder: gopcua's Node.AddRef is not safe for concurrent use, so a
// server whose variables are added by parallel tests makes them readable
// but not browsable.
func UAUnbrowsable() UAOption { return func(c *uaConfig) { c.unbrowsable = true } }

// OPCUAServer starts a server for the test; it is closed when the test
// ends.
func OPCUAServer(t testing.TB, opts ...UAOption) *UAServer {
	t.Helper()
	s, err := NewOPCUAServer(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// NewOPCUAServer starts a server that is not tied to a test (one shared
// by the tests of a package): Close it.
func NewOPCUAServer(opts ...UAOption) (*UAServer, error) {
	cfg := uaConfig{name: "ferry test server", nsURI: "urn:ferry:test:plant"}
	for _, o := range opts {
		o(&cfg)
	}
	front, err := newUAFront()
	if err != nil {
		return nil, err
	}
	s := &UAServer{cfg: cfg, front: front, nodes: map[string]uaNode{}}
	if err := s.start(); err != nil {
		front.close()
		return nil, err
	}
	return s, nil
}

// Endpoint is the "opc.tcp://host:port" clients use.
func (s *UAServer) Endpoint() string { return "opc.tcp://" + s.front.addr() }

// Addr is Endpoint's "host:port".
func (s *UAServer) Addr() string { return s.front.addr() }

// NS is the index of the variables' namespace.
func (s *UAServer) NS() uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nsIdx
}

// Node returns "ns=<index>;s=<name>" for the running server.
func (s *UAServer) Node(name string) string { return fmt.Sprintf("ns=%d;s=%s", s.NS(), name) }

// Server is the running gopcua server (a new one after Restart), nil
// while stopped.
func (s *UAServer) Server() *uaserver.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv
}

// Add creates variables with their first values, given as name, value
// pairs, all with source time ts.
func (s *UAServer) Add(ts time.Time, kv ...any) {
	for i := 0; i+1 < len(kv); i += 2 {
		name := kv[i].(string)
		s.put(name, uaNode{value: DataValue(kv[i+1], ts)})
	}
}

// AddFunc creates a variable whose every read calls fn (a status code, a
// fresh source time).
func (s *UAServer) AddFunc(name string, fn func() *ua.DataValue) { s.put(name, uaNode{fn: fn}) }

// AddLocked creates a variable nobody may read (BadUserAccessDenied).
func (s *UAServer) AddLocked(name string) { s.put(name, uaNode{locked: true}) }

func (s *UAServer) put(name string, n uaNode) {
	s.mu.Lock()
	_, exists := s.nodes[name]
	if !exists {
		s.names = append(s.names, name)
	}
	s.nodes[name] = n
	running := s.srv != nil
	s.mu.Unlock()
	if !exists && running {
		s.addNode(name, !s.cfg.unbrowsable)
	}
}

// Set changes a value added by Add and notifies subscribers.
func (s *UAServer) Set(name string, v any, ts time.Time) {
	s.mu.Lock()
	s.nodes[name] = uaNode{value: DataValue(v, ts)}
	ns, idx := s.ns, s.nsIdx
	s.mu.Unlock()
	if ns != nil {
		ns.ChangeNotification(ua.NewStringNodeID(idx, name))
	}
}

// DataValue is v with a source time ts and the server time now.
func DataValue(v any, ts time.Time) *ua.DataValue {
	return &ua.DataValue{
		EncodingMask:    ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
		Value:           ua.MustVariant(v),
		SourceTimestamp: ts,
		ServerTimestamp: time.Now(),
	}
}

// StatusValue is v with status code and the source time now.
func StatusValue(v any, code ua.StatusCode) *ua.DataValue {
	return &ua.DataValue{
		EncodingMask:    ua.DataValueValue | ua.DataValueStatusCode | ua.DataValueSourceTimestamp,
		Value:           ua.MustVariant(v),
		Status:          code,
		SourceTimestamp: time.Now(),
	}
}

// Cut closes every client connection, as a network failure would; new
// connections are forwarded again.
func (s *UAServer) Cut() { s.front.cut() }

// Stop stops the server like a process exit: its connections close, new
// ones are closed at once.
func (s *UAServer) Stop() {
	s.mu.Lock()
	srv, cancel := s.srv, s.cancel
	s.srv, s.ns, s.cancel = nil, nil, nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	s.front.setTarget("")
	s.front.cut()
	srv.Close()
	cancel()
}

// Restart stops the server and starts a new one behind the same endpoint
// with the same variables and values; extraNS namespaces come before the
// variables' one (their index may shift).
func (s *UAServer) Restart(t testing.TB, extraNS int) {
	t.Helper()
	s.Stop()
	s.mu.Lock()
	s.cfg.extraNS = extraNS
	s.mu.Unlock()
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
}

// Close stops the server and closes its endpoint. It is idempotent.
func (s *UAServer) Close() {
	s.Stop()
	s.front.close()
}

func (s *UAServer) start() error {
	var err error
	for range 20 {
		var addr string
		if addr, err = freeLoopbackAddr(); err != nil {
			return err
		}
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if err = s.startOn(port); !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("start opc ua server: %w", err)
	}
	return nil
}

func (s *UAServer) startOn(port int) error {
	c := s.cfg
	host, fp, _ := net.SplitHostPort(s.front.addr())
	frontPort, _ := strconv.Atoi(fp)
	// The backend's own address first: gopcua listens on the first
	// endpoint. Clients are told of both.
	opts := []uaserver.Option{
		uaserver.EndPoint("127.0.0.1", port), uaserver.EndPoint(host, frontPort),
		uaserver.ServerName(c.name),
	}
	if c.none {
		opts = append(opts, uaserver.EnableSecurity("None", ua.MessageSecurityModeNone))
	}
	for _, p := range c.policies {
		opts = append(opts,
			uaserver.EnableSecurity(p, ua.MessageSecurityModeSign),
			uaserver.EnableSecurity(p, ua.MessageSecurityModeSignAndEncrypt))
	}
	if c.cert != nil {
		opts = append(opts, uaserver.Certificate(c.cert), uaserver.PrivateKey(c.key))
	}
	for _, a := range c.auth {
		opts = append(opts, uaserver.EnableAuthMode(a))
	}
	opts = append(opts, uaserver.EnableAuthMode(ua.UserTokenTypeAnonymous))
	srv := uaserver.New(opts...)
	for i := 0; i < c.extraNS; i++ {
		uaserver.NewNodeNameSpace(srv, fmt.Sprintf("urn:ferry:test:extra%d", i))
	}
	ns := uaserver.NewNodeNameSpace(srv, c.nsURI)
	root, err := srv.Namespace(0)
	if err != nil {
		return err
	}
	root.Objects().AddRef(ns.Objects(), id.HasComponent, true)
	s.mu.Lock()
	s.ns, s.nsIdx = ns, ns.ID()
	names := append([]string(nil), s.names...)
	s.mu.Unlock()
	for _, n := range names {
		s.addNode(n, true) // not started yet: no client can browse
	}
	s.registerCall(srv)
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		cancel()
		s.mu.Lock()
		s.ns = nil
		s.mu.Unlock()
		return err
	}
	s.mu.Lock()
	s.srv, s.cancel = srv, cancel
	s.mu.Unlock()
	s.front.setTarget(fmt.Sprintf("127.0.0.1:%d", port))
	return nil
}

// addNode adds variable name to the current namespace.
func (s *UAServer) addNode(name string, browsable bool) {
	s.mu.Lock()
	ns, idx, n := s.ns, s.nsIdx, s.nodes[name]
	s.mu.Unlock()
	if ns == nil {
		return
	}
	if n.build != nil {
		v := ns.AddNode(n.build(ua.NewStringNodeID(idx, name)))
		if browsable {
			ns.Objects().AddRef(v, id.HasComponent, true)
		}
		return
	}
	if n.locked {
		ns.AddNode(uaserver.NewNode(ua.NewStringNodeID(idx, name), map[ua.AttributeID]*ua.DataValue{
			ua.AttributeIDAccessLevel:     uaserver.DataValueFromValue(byte(ua.AccessLevelTypeNone)),
			ua.AttributeIDUserAccessLevel: uaserver.DataValueFromValue(byte(ua.AccessLevelTypeNone)),
			ua.AttributeIDNodeClass:       uaserver.DataValueFromValue(uint32(ua.NodeClassVariable)),
		}, nil, func() *ua.DataValue { return uaserver.DataValueFromValue(1.0) }))
		return
	}
	v := ns.AddNewVariableStringNode(name, func() *ua.DataValue {
		s.mu.Lock()
		n := s.nodes[name]
		s.mu.Unlock()
		if n.fn != nil {
			return n.fn()
		}
		return n.value
	})
	if browsable {
		ns.Objects().AddRef(v, id.HasComponent, true)
	}
}

// uaFront is the open listener in front of a UAServer: it forwards each
// connection to the current backend, or closes it while there is none.
type uaFront struct {
	ln net.Listener
	wg sync.WaitGroup

	mu     sync.Mutex
	target string
	conns  map[net.Conn]struct{}
	closed bool
}

func newUAFront() (*uaFront, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &uaFront{ln: ln, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.accept()
	return f, nil
}

func (f *uaFront) addr() string { return f.ln.Addr().String() }

func (f *uaFront) setTarget(addr string) {
	f.mu.Lock()
	f.target = addr
	f.mu.Unlock()
}

// cut closes every forwarded connection.
func (f *uaFront) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		c.Close()
	}
	clear(f.conns)
}

func (f *uaFront) close() {
	f.ln.Close()
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.cut()
	f.wg.Wait()
}

// track adds c to the connections cut by cut, unless the front is closed.
func (f *uaFront) track(cs ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	for _, c := range cs {
		f.conns[c] = struct{}{}
	}
	return true
}

func (f *uaFront) untrack(cs ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cs {
		delete(f.conns, c)
	}
}

func (f *uaFront) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		target := f.target
		f.mu.Unlock()
		if target == "" {
			c.Close()
			continue
		}
		b, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			continue
		}
		if !f.track(c, b) {
			c.Close()
			b.Close()
			continue
		}
		f.wg.Add(2)
		go f.pipe(b, c)
		go f.pipe(c, b)
	}
}

// pipe copies from src to dst, then closes both.
func (f *uaFront) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	f.untrack(dst, src)
}
