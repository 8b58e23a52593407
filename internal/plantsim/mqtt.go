package plantsim

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Broker is the simulated plant's MQTT broker.
type Broker struct {
	Addr string
	srv  *mochi.Server
	gate *takeoverGate
}

// takeoverGate works around a race in mochi v2.7.9: when a client
// reconnects to its persistent session, inheritClientSession clones the
// old client's inflight messages, then clears them; a message published in
// between still goes to the old client (it is in the client list until the
// new one is added) and is lost. The reliability suite's kill storm, which
// publishes numbered QoS 1 messages while ferry is killed and restarted,
// saw one such loss in a few runs. Publishes from the inline client wait
// while a session is being established, and a session waits for a publish
// in progress.
type takeoverGate struct {
	mochi.HookBase
	mu   sync.Mutex
	busy map[*mochi.Client]time.Time // sessions being established, since
}

// gateStale bounds the wait for a session whose establishment failed
// half-way (mochi calls neither OnSessionEstablished nor OnDisconnect then).
const gateStale = 2 * time.Second

func (g *takeoverGate) ID() string { return "takeover-gate" }

func (g *takeoverGate) Provides(b byte) bool {
	return b == mochi.OnSessionEstablish || b == mochi.OnSessionEstablished || b == mochi.OnDisconnect
}

func (g *takeoverGate) OnSessionEstablish(cl *mochi.Client, _ packets.Packet) {
	g.mu.Lock()
	g.busy[cl] = time.Now()
	g.mu.Unlock()
}

func (g *takeoverGate) OnSessionEstablished(cl *mochi.Client, _ packets.Packet) {
	g.mu.Lock()
	delete(g.busy, cl)
	g.mu.Unlock()
}

func (g *takeoverGate) OnDisconnect(cl *mochi.Client, _ error, _ bool) {
	g.mu.Lock()
	delete(g.busy, cl)
	g.mu.Unlock()
}

// do runs publish while no session is being established.
func (g *takeoverGate) do(publish func() error) error {
	for {
		g.mu.Lock()
		wait := false
		for cl, since := range g.busy {
			if time.Since(since) > gateStale {
				delete(g.busy, cl)
				continue
			}
			wait = true
		}
		if !wait {
			defer g.mu.Unlock()
			return publish()
		}
		g.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
}

func startBroker(host string, port int, lg *slog.Logger) (*Broker, error) {
	// mochi logs every start and stop at Info; keep it for -v only.
	blog := slog.New(slog.DiscardHandler)
	if lg.Enabled(context.Background(), slog.LevelDebug) {
		blog = lg.With("component", "mqtt-broker")
	}
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: blog})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, err
	}
	gate := &takeoverGate{busy: map[*mochi.Client]time.Time{}}
	if err := srv.AddHook(gate, nil); err != nil {
		return nil, err
	}
	l := listeners.NewTCP(listeners.Config{ID: "plantsim", Address: hostPort(host, port)})
	if err := srv.AddListener(l); err != nil {
		return nil, fmt.Errorf("mqtt broker on %s: %w", hostPort(host, port), err)
	}
	if err := srv.Serve(); err != nil {
		return nil, err
	}
	return &Broker{Addr: l.Address(), srv: srv, gate: gate}, nil
}

// Publish publishes a message from the broker's inline client.
func (b *Broker) Publish(topic string, payload []byte, qos byte) error {
	return b.gate.do(func() error { return b.srv.Publish(topic, payload, false, qos) })
}

// Close stops the broker.
func (b *Broker) Close() error { return b.srv.Close() }
