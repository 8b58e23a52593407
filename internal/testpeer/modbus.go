package testpeer

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	mbserver "github.com/simonvetter/modbus"
)

// ModbusTCP is an in-process simonvetter/modbus TCP server that can be
// stopped and started again on the same address.
//
// simonvetter/modbus v1.6.4 cannot be handed a listener: ModbusServer.Start
// calls net.Listen on the URL of its configuration and keeps the listener
// unexported, so the port cannot be learnt from "127.0.0.1:0" either. So
// the kit asks the kernel for a free port, closes it and starts the server
// there; when another process took the port in that moment the start
// fails with "address in use" and the kit tries again with a new port, so
// the server is never mistaken for someone else's. A Start after Stop
// must come back on the same port (the tests check that a device
// recovers where it was): the kit retries "address in use" for a few
// seconds, the time for a socket of the stopped server to go.
type ModbusTCP struct {
	handler mbserver.RequestHandler
	cfg     modbusConfig

	mu   sync.Mutex
	addr string
	srv  *mbserver.ModbusServer
}

type modbusConfig struct {
	maxClients uint
	timeout    time.Duration
}

// ModbusOption configures ModbusServer.
type ModbusOption func(*modbusConfig)

// ModbusMaxClients limits the concurrent connections (default 8).
func ModbusMaxClients(n uint) ModbusOption { return func(c *modbusConfig) { c.maxClients = n } }

// ModbusIdleTimeout closes a connection idle this long (default 1 min).
func ModbusIdleTimeout(d time.Duration) ModbusOption { return func(c *modbusConfig) { c.timeout = d } }

// ModbusServer starts a Modbus TCP server on loopback serving h; it is
// stopped when the test ends.
func ModbusServer(t testing.TB, h mbserver.RequestHandler, opts ...ModbusOption) *ModbusTCP {
	t.Helper()
	cfg := modbusConfig{maxClients: 8, timeout: time.Minute}
	for _, o := range opts {
		o(&cfg)
	}
	s := &ModbusTCP{handler: h, cfg: cfg}
	var err error
	for range 20 {
		s.addr, err = freeLoopbackAddr()
		if err != nil {
			break
		}
		if err = s.startOnce(); !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	if err != nil {
		t.Fatalf("start modbus server: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Addr is the server's "host:port".
func (s *ModbusTCP) Addr() string { return s.addr }

// URL is "tcp://" + Addr.
func (s *ModbusTCP) URL() string { return "tcp://" + s.addr }

// Stop stops the server: its connections are closed and new ones are
// refused. It is idempotent.
func (s *ModbusTCP) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		_ = s.srv.Stop()
		s.srv = nil
	}
}

// Start starts a stopped server again on the same address (a no-op when
// it runs).
func (s *ModbusTCP) Start(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := s.startOnce()
		if err == nil {
			return
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			t.Fatalf("restart modbus server on %s: %v", s.addr, err)
		}
		time.Sleep(20 * time.Millisecond) // a retry pace: the port is ours, being released
	}
}

func (s *ModbusTCP) startOnce() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return nil
	}
	srv, err := mbserver.NewServer(&mbserver.ServerConfiguration{
		URL: "tcp://" + s.addr, Timeout: s.cfg.timeout, MaxClients: s.cfg.maxClients, Logger: log.New(io.Discard, "", 0),
	}, s.handler)
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return fmt.Errorf("listen on %s: %w", s.addr, err)
	}
	s.srv = srv
	return nil
}

// freeLoopbackAddr returns a loopback address whose port was free a
// moment ago, for a server that binds by itself (see ModbusTCP).
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
