package plantsim

import (
	"context"
	"fmt"
	"log/slog"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// Broker is the simulated plant's MQTT broker.
type Broker struct {
	Addr string
	srv  *mochi.Server
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
	l := listeners.NewTCP(listeners.Config{ID: "plantsim", Address: hostPort(host, port)})
	if err := srv.AddListener(l); err != nil {
		return nil, fmt.Errorf("mqtt broker on %s: %w", hostPort(host, port), err)
	}
	if err := srv.Serve(); err != nil {
		return nil, err
	}
	return &Broker{Addr: l.Address(), srv: srv}, nil
}

// Publish publishes a message from the broker's inline client.
func (b *Broker) Publish(topic string, payload []byte, qos byte) error {
	return b.srv.Publish(topic, payload, false, qos)
}

// Close stops the broker.
func (b *Broker) Close() error { return b.srv.Close() }
