// Package plantsim simulates a small plant for ferry's demo, its end-to-end
// tests and its benchmarks. Everything runs in one process on loopback:
//
//   - Modbus TCP slaves (presses) with realistic signals — sine-plus-noise
//     temperatures, counters, status bits, float32 in both word orders — and
//     an unmapped register hole that answers "illegal data address";
//   - an OPC UA server with a boiler (pressure, temperature, running, count,
//     name) that notifies subscribers on every change;
//   - an MQTT broker with publishers of JSON sensor payloads;
//   - a NATS server with JetStream and the stream ferry forwards to.
//
// Faults are scheduled on a repeating cycle so that a demo shows each of
// them within a minute: an overheating ramp on press1 (a threshold rule
// fires), press2 going silent (a stale rule fires) and a stuck humidity
// sensor (a flatline rule fires).
//
// Every value is a pure function of the time since start (plus seeded
// noise), so tests can predict what ferry must have read.
package plantsim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"
)

// Options configure a plant. The zero value is the demo plant.
type Options struct {
	// Host to listen on; default 127.0.0.1.
	Host string
	// Presses is the number of Modbus TCP slaves (default 2).
	Presses int
	// ExtraPoints adds this many float32 holding registers per press (at
	// 100, 102, …) for load tests.
	ExtraPoints int
	// Rate is how often the OPC UA boiler changes and the MQTT sensors
	// publish (default 1s).
	Rate time.Duration
	// MQTTSensors is the number of MQTT sensors publishing (default 1).
	MQTTSensors int
	// Faults enables the fault cycle (overheat, silent press, stuck sensor).
	Faults bool
	// FaultCycle is the length of one fault cycle (default 2m).
	FaultCycle time.Duration
	// NATSDir holds JetStream's store; required to run NATS (empty: no
	// NATS server is started).
	NATSDir string
	// Ports, when set, pins ports (for a restart on the same address);
	// zero means a free port.
	ModbusPort, OPCUAPort, MQTTPort, NATSPort int
	Logger                                    *slog.Logger
	// Now is the clock (tests may inject one).
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Presses == 0 {
		o.Presses = 2
	}
	if o.Rate <= 0 {
		o.Rate = time.Second
	}
	if o.MQTTSensors == 0 {
		o.MQTTSensors = 1
	}
	if o.FaultCycle <= 0 {
		o.FaultCycle = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Plant is a running simulated plant.
type Plant struct {
	opts  Options
	start time.Time
	model *Model

	Presses []*Press
	Boiler  *Boiler
	MQTT    *Broker
	NATS    *NATS

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start starts every component and returns once they accept connections.
func Start(ctx context.Context, opts Options) (p *Plant, err error) {
	opts.setDefaults()
	ctx, cancel := context.WithCancel(ctx)
	p = &Plant{opts: opts, start: opts.Now(), cancel: cancel}
	p.model = &Model{Start: p.start, Cycle: opts.FaultCycle, Faults: opts.Faults, Now: opts.Now}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	for i := 0; i < opts.Presses; i++ {
		port := 0
		if opts.ModbusPort != 0 {
			port = opts.ModbusPort + i
		}
		pr, err := startPress(i+1, opts.Host, port, opts.ExtraPoints, p.model, opts.Logger)
		if err != nil {
			return nil, err
		}
		p.Presses = append(p.Presses, pr)
	}
	if p.Boiler, err = startBoiler(ctx, opts.Host, opts.OPCUAPort, p.model, opts.Logger); err != nil {
		return nil, err
	}
	if p.MQTT, err = startBroker(opts.Host, opts.MQTTPort, opts.Logger); err != nil {
		return nil, err
	}
	if opts.NATSDir != "" {
		if p.NATS, err = StartNATS(opts.Host, opts.NATSPort, opts.NATSDir); err != nil {
			return nil, err
		}
	}
	p.wg.Add(2)
	go func() { defer p.wg.Done(); p.Boiler.run(ctx, opts.Rate) }()
	go func() { defer p.wg.Done(); p.runSensors(ctx) }()
	if opts.Faults {
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.runFaults(ctx) }()
	}
	return p, nil
}

// Model returns the signal model the plant serves.
func (p *Plant) Model() *Model { return p.model }

// Close stops every component.
func (p *Plant) Close() error {
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
	var errs []error
	for _, pr := range p.Presses {
		errs = append(errs, pr.Stop())
	}
	if p.Boiler != nil {
		errs = append(errs, p.Boiler.Close())
	}
	if p.MQTT != nil {
		errs = append(errs, p.MQTT.Close())
	}
	if p.NATS != nil {
		p.NATS.Shutdown()
	}
	return errors.Join(errs...)
}

// runSensors publishes the MQTT sensors' JSON at the plant's rate.
func (p *Plant) runSensors(ctx context.Context) {
	t := time.NewTicker(p.opts.Rate)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for i := 1; i <= p.opts.MQTTSensors; i++ {
				topic, payload := p.model.EnvPayload(i)
				if err := p.MQTT.Publish(topic, payload, 1); err != nil {
					p.opts.Logger.Debug("publish", "topic", topic, "err", err)
				}
			}
		}
	}
}

// runFaults takes press2 off the network during its silent window.
func (p *Plant) runFaults(ctx context.Context) {
	if len(p.Presses) < 2 {
		return
	}
	press := p.Presses[1]
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			silent := p.model.Press2Silent()
			if silent && press.Running() {
				p.opts.Logger.Info("fault: press2 goes silent")
				if err := press.Stop(); err != nil {
					p.opts.Logger.Warn("stop press2", "err", err)
				}
			} else if !silent && !press.Running() {
				p.opts.Logger.Info("fault: press2 is back")
				if err := press.Start(); err != nil {
					p.opts.Logger.Warn("restart press2", "err", err)
				}
			}
		}
	}
}

// freePort reserves a free TCP port on host (for servers that cannot
// report a port bound as 0).
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// Endpoints lists where each component listens, for printing.
func (p *Plant) Endpoints() []string {
	var out []string
	for _, pr := range p.Presses {
		out = append(out, fmt.Sprintf("modbus  %s  tcp://%s (unit 1)", pr.Name, pr.Addr))
	}
	out = append(out, fmt.Sprintf("opcua   boiler  %s (ns=%d)", p.Boiler.Endpoint, p.Boiler.NS))
	out = append(out, fmt.Sprintf("mqtt    broker  tcp://%s", p.MQTT.Addr))
	if p.NATS != nil {
		out = append(out, fmt.Sprintf("nats    jetstream %s (stream %s)", p.NATS.URL, StreamName))
	}
	return out
}
