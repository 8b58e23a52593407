package plantsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The stream the simulated cloud keeps, as a plant's IT would set it up.
const (
	StreamName     = "FERRY"
	StreamSubjects = "ferry.>"
	// DuplicateWindow is the stream's dedupe window: a replay of a record
	// within it is dropped.
	DuplicateWindow = 10 * time.Minute
)

// NATS is an in-process NATS server with JetStream.
type NATS struct {
	URL  string
	Host string
	Port int
	Dir  string
	srv  *natsserver.Server
}

// StartNATS starts a JetStream server storing in dir, on port (0: a free
// one), and makes sure the ferry stream exists.
func StartNATS(host string, port int, dir string) (*NATS, error) {
	n := &NATS{Host: host, Port: port, Dir: dir}
	if err := n.Start(); err != nil {
		return nil, err
	}
	if err := n.ensureStream(); err != nil {
		n.Shutdown()
		return nil, err
	}
	return n, nil
}

// Start (re)starts the server on its port and store directory.
func (n *NATS) Start() error {
	port := n.Port
	if port == 0 {
		port = -1 // a random free port
	}
	srv, err := natsserver.NewServer(&natsserver.Options{
		Host:      n.Host,
		Port:      port,
		JetStream: true,
		StoreDir:  n.Dir,
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		return fmt.Errorf("nats server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return errors.New("nats server: not ready after 10s")
	}
	n.srv = srv
	n.URL = srv.ClientURL()
	if a, ok := srv.Addr().(*net.TCPAddr); ok {
		n.Port = a.Port
	}
	return nil
}

// Shutdown stops the server (its store stays for a restart).
func (n *NATS) Shutdown() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

// Running reports whether the server is up.
func (n *NATS) Running() bool { return n.srv != nil }

func (n *NATS) ensureStream() error {
	nc, err := nats.Connect(n.URL)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              StreamName,
		Subjects:          []string{StreamSubjects},
		Storage:           jetstream.FileStorage,
		Duplicates:        DuplicateWindow,
		MaxMsgsPerSubject: -1,
		// The catalog message of each gateway replaces the previous one
		// (ferry publishes it with Nats-Rollup: sub).
		AllowRollup: true,
	})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", StreamName, err)
	}
	return nil
}
