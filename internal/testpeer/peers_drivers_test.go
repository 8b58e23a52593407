package testpeer_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	mbserver "github.com/simonvetter/modbus"

	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

func init() {
	// gopcua's server and client print through the standard logger.
	log.SetOutput(io.Discard)
}

// mqttConnect connects a paho client to url, or returns the error.
func mqttConnect(url, id string, tc *tls.Config) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetAutoReconnect(false).
		SetConnectTimeout(2 * time.Second).SetTLSConfig(tc)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return c, nil
}

// TestBroker: messages flow through the broker, the published hook sees
// them, and after Stop and Start a client connects again at the same
// address (the listener never closed); while stopped it cannot.
func TestBroker(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	b := testpeer.Broker(t, testpeer.BrokerOnPublished(func(_ *mochi.Client, pk packets.Packet) {
		mu.Lock()
		seen = append(seen, pk.TopicName+"="+string(pk.Payload))
		mu.Unlock()
	}))
	if b.URL() != "tcp://"+b.Addr() {
		t.Fatalf("URL %s for %s", b.URL(), b.Addr())
	}
	c, err := mqttConnect(b.URL(), "kit", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	if tok := c.Subscribe("kit/t", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	testutil.WaitFor(t, 5*time.Second, "subscription", func() bool { return b.Subscriptions("kit") == 1 })
	b.Publish(t, "kit/t", []byte("1"), 1, false)
	select {
	case p := <-got:
		if p != "1" {
			t.Fatalf("payload %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
	}
	mu.Lock()
	if len(seen) != 1 || seen[0] != "kit/t=1" {
		t.Errorf("published hook saw %v", seen)
	}
	mu.Unlock()

	b.Stop()
	testutil.WaitFor(t, 5*time.Second, "client disconnected", func() bool { return !c.IsConnectionOpen() })
	if _, err := mqttConnect(b.URL(), "kit2", nil); err == nil {
		t.Fatal("connected to a stopped broker")
	}
	if b.Server() != nil || b.Inflight("kit") != -1 {
		t.Fatal("stopped broker still has a server")
	}
	b.Start(t)
	c2, err := mqttConnect(b.URL(), "kit3", nil)
	if err != nil {
		t.Fatalf("after Start: %v", err)
	}
	c2.Disconnect(0)
	c.Disconnect(0)
}

// TestBrokerWebsocket: a client connects over websocket and gets a
// message.
func TestBrokerWebsocket(t *testing.T) {
	b := testpeer.Broker(t)
	c, err := mqttConnect(b.ServeWebsocket(t), "ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(0)
	got := make(chan string, 1)
	if tok := c.Subscribe("kit/ws", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	b.Publish(t, "kit/ws", []byte("over ws"), 1, false)
	select {
	case p := <-got:
		if p != "over ws" {
			t.Fatalf("payload %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
	}
}

// TestBrokerHeldStore: a held broker with a store keeps messages for a
// persistent session and delivers them once it listens.
func TestBrokerHeldStore(t *testing.T) {
	store := t.TempDir() + "/b.db"
	b := testpeer.Broker(t, testpeer.BrokerStore(store))
	o := paho.NewClientOptions().AddBroker(b.URL()).SetClientID("durable").SetCleanSession(false).SetAutoReconnect(false)
	got := make(chan string, 4)
	o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	if tok := c.Subscribe("kit/q", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	c.Disconnect(0)
	testutil.WaitFor(t, 5*time.Second, "session kept offline", func() bool {
		cl, ok := b.Server().Clients.Get("durable")
		return ok && cl.Closed()
	})
	b.Close() // the bolt file is free for the next broker

	b2 := testpeer.Broker(t, testpeer.BrokerStore(store), testpeer.BrokerHeld())
	b2.Publish(t, "kit/q", []byte("queued"), 1, false)
	if n := b2.Inflight("durable"); n != 1 {
		t.Fatalf("held broker holds %d messages for the session, want 1", n)
	}
	if _, err := mqttConnect(b2.URL(), "early", nil); err == nil {
		t.Fatal("a held broker took a connection")
	}
	b2.Listen(t)
	o.Servers = nil
	c = paho.NewClient(o.AddBroker(b2.URL()))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	select {
	case p := <-got:
		if p != "queued" {
			t.Fatalf("payload %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("queued message not delivered")
	}
}

// TestBrokerTLS: a TLS broker's URL is ssl:// and a client that trusts
// its CA connects.
func TestBrokerTLS(t *testing.T) {
	ca := testutil.NewCA(t, "kit CA")
	b := testpeer.Broker(t, testpeer.BrokerTLS(&tls.Config{
		Certificates: []tls.Certificate{ca.Issue(t, 2, "broker", x509.ExtKeyUsageServerAuth).TLS()},
		MinVersion:   tls.VersionTLS12,
	}))
	if b.URL() != "ssl://"+b.Addr() {
		t.Fatalf("URL %s", b.URL())
	}
	c, err := mqttConnect(b.URL(), "tls", &tls.Config{RootCAs: ca.Pool(), ServerName: "broker", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	c.Disconnect(0)
	if _, err := mqttConnect(b.URL(), "untrusting", &tls.Config{ServerName: "broker", MinVersion: tls.VersionTLS12}); err == nil {
		t.Fatal("a client that does not trust the CA connected")
	}
}

// TestReserve: a reserved address refuses connections until it listens;
// then a broker serves there.
func TestReserve(t *testing.T) {
	r := testpeer.Reserve(t)
	_, err := net.DialTimeout("tcp", r.Addr(), 2*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial a reserved address: %v, want connection refused", err)
	}
	if _, err := net.Listen("tcp", r.Addr()); err == nil {
		t.Fatal("another listener took the reserved port")
	}
	b := testpeer.Broker(t, testpeer.BrokerListener(r.Listen(t)))
	if b.Addr() != r.Addr() {
		t.Fatalf("broker on %s, reserved %s", b.Addr(), r.Addr())
	}
	c, err := mqttConnect(b.URL(), "reserved", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Disconnect(0)
}

// regs answers holding register reads with the address, and refuses the
// rest.
type regs struct{}

func (regs) HandleCoils(*mbserver.CoilsRequest) ([]bool, error) {
	return nil, mbserver.ErrIllegalFunction
}
func (regs) HandleDiscreteInputs(*mbserver.DiscreteInputsRequest) ([]bool, error) {
	return nil, mbserver.ErrIllegalFunction
}
func (regs) HandleInputRegisters(*mbserver.InputRegistersRequest) ([]uint16, error) {
	return nil, mbserver.ErrIllegalFunction
}
func (regs) HandleHoldingRegisters(r *mbserver.HoldingRegistersRequest) ([]uint16, error) {
	out := make([]uint16, r.Quantity)
	for i := range out {
		out[i] = r.Addr + uint16(i)
	}
	return out, nil
}

// TestModbusServer: the server answers, refuses connections while
// stopped, and answers again on the same URL after Start.
func TestModbusServer(t *testing.T) {
	s := testpeer.ModbusServer(t, regs{})
	read := func() (uint16, error) {
		c, err := mbserver.NewClient(&mbserver.ClientConfiguration{URL: s.URL(), Timeout: 2 * time.Second})
		if err != nil {
			return 0, err
		}
		if err := c.Open(); err != nil {
			return 0, err
		}
		defer c.Close()
		return c.ReadRegister(7, mbserver.HOLDING_REGISTER)
	}
	if v, err := read(); err != nil || v != 7 {
		t.Fatalf("read: %v, %v", v, err)
	}
	s.Stop()
	if _, err := read(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("read from a stopped server: %v, want connection refused", err)
	}
	s.Start(t)
	if v, err := read(); err != nil || v != 7 {
		t.Fatalf("read after Start: %v, %v", v, err)
	}
}

func uaRead(ctx context.Context, endpoint, node string, opts ...opcua.Option) (*ua.DataValue, error) {
	c, err := opcua.NewClient(endpoint, append([]opcua.Option{opcua.SecurityMode(ua.MessageSecurityModeNone), opcua.AutoReconnect(false)}, opts...)...)
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		return nil, err
	}
	defer c.Close(ctx)
	res, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: ua.MustParseNodeID(node), AttributeID: ua.AttributeIDValue}}})
	if err != nil {
		return nil, err
	}
	return res.Results[0], nil
}

// TestOPCUAServer: values, status codes and locked nodes read as set;
// Cut and Restart keep the endpoint, and the variables survive a restart
// that shifts their namespace.
func TestOPCUAServer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := testpeer.OPCUAServer(t, testpeer.UANone())
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s.Add(ts, "A", 1.5)
	s.AddFunc("S", func() *ua.DataValue { return testpeer.StatusValue(42.5, ua.StatusBadSensorFailure) })
	s.AddLocked("L")

	v, err := uaRead(ctx, s.Endpoint(), s.Node("A"))
	if err != nil || v.Value.Float() != 1.5 || !v.SourceTimestamp.Equal(ts) {
		t.Fatalf("read A: %+v, %v", v, err)
	}
	if v, err := uaRead(ctx, s.Endpoint(), s.Node("S")); err != nil || v.Status != ua.StatusBadSensorFailure {
		t.Fatalf("read S: %+v, %v", v, err)
	}
	if v, err := uaRead(ctx, s.Endpoint(), s.Node("L")); err != nil || v.Status != ua.StatusBadUserAccessDenied {
		t.Fatalf("read L: %+v, %v", v, err)
	}

	endpoint, ns := s.Endpoint(), s.NS()
	s.Stop()
	if _, err := uaRead(ctx, endpoint, s.Node("A")); err == nil {
		t.Fatal("read from a stopped server")
	}
	s.Restart(t, 2)
	if s.Endpoint() != endpoint || s.NS() != ns+2 {
		t.Fatalf("after restart: %s ns=%d, was %s ns=%d", s.Endpoint(), s.NS(), endpoint, ns)
	}
	s.Set("A", 2.5, ts)
	if v, err := uaRead(ctx, endpoint, s.Node("A")); err != nil || v.Value.Float() != 2.5 {
		t.Fatalf("read A after restart: %+v, %v", v, err)
	}
}

// TestOPCUASecure: a server with UASecurity advertises only the policies
// given, in both modes, with its certificate. (gopcua's server does not
// refuse a None channel that a client opens anyway: what the tests rely
// on is what it advertises.)
func TestOPCUASecure(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cert, key := selfSigned(t)
	s := testpeer.OPCUAServer(t, testpeer.UASecurity(cert, key, "Basic256Sha256"))
	eps, err := opcua.GetEndpoints(ctx, s.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	modes := map[ua.MessageSecurityMode]bool{}
	for _, ep := range eps {
		if ep.SecurityPolicyURI != ua.SecurityPolicyURIBasic256Sha256 || string(ep.ServerCertificate) != string(cert) {
			t.Errorf("endpoint %s %s", ep.SecurityPolicyURI, ep.SecurityMode)
		}
		modes[ep.SecurityMode] = true
	}
	if !modes[ua.MessageSecurityModeSign] || !modes[ua.MessageSecurityModeSignAndEncrypt] || len(modes) != 2 {
		t.Errorf("modes %v", modes)
	}
}

func selfSigned(t *testing.T) ([]byte, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "kit server"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature | x509.KeyUsageDataEncipherment | x509.KeyUsageContentCommitment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}
