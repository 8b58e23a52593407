// Command plantsim runs a simulated plant on loopback for ferry's demo,
// tests and benchmarks: Modbus TCP presses, an OPC UA boiler, an MQTT
// broker with sensors and a NATS JetStream server. It prints where each
// listens and can write a ready ferry configuration for them.
//
//	plantsim -write-config /tmp/ferry-demo.yaml -data-dir /tmp/ferry-data
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ferry-edge/ferry/internal/plantsim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "plantsim:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		host        = flag.String("host", "127.0.0.1", "address to listen on (loopback by default)")
		presses     = flag.Int("devices", 2, "number of Modbus TCP presses")
		extra       = flag.Int("points", 0, "extra float32 points per press, for load tests")
		rate        = flag.Duration("rate", time.Second, "how often the OPC UA boiler changes and MQTT sensors publish")
		sensors     = flag.Int("sensors", 1, "number of MQTT sensors")
		faults      = flag.Bool("faults", true, "run the fault cycle: press1 overheats, press2 goes silent, a humidity sensor sticks")
		cycle       = flag.Duration("cycle", 2*time.Minute, "length of one fault cycle")
		natsDir     = flag.String("nats-dir", "", "JetStream store directory (default: a temporary directory)")
		noNATS      = flag.Bool("no-nats", false, "do not run a NATS server")
		modbusPort  = flag.Int("modbus-port", 0, "first Modbus port (0: free ports)")
		opcuaPort   = flag.Int("opcua-port", 0, "OPC UA port (0: a free port)")
		mqttPort    = flag.Int("mqtt-port", 0, "MQTT port (0: a free port)")
		natsPort    = flag.Int("nats-port", 0, "NATS port (0: a free port)")
		writeConfig = flag.String("write-config", "", "write a ferry configuration for this plant to FILE")
		dataDir     = flag.String("data-dir", "", "data_dir for the written configuration (default: next to it)")
		httpAddr    = flag.String("http", "127.0.0.1:9440", "http.listen for the written configuration")
		verbose     = flag.Bool("v", false, "log debug messages")
	)
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if !*verbose {
		// The OPC UA server library prints through the standard logger.
		stdlog.SetOutput(io.Discard)
	}

	opts := plantsim.Options{
		Host: *host, Presses: *presses, ExtraPoints: *extra, Rate: *rate, MQTTSensors: *sensors,
		Faults: *faults, FaultCycle: *cycle, Logger: log,
		ModbusPort: *modbusPort, OPCUAPort: *opcuaPort, MQTTPort: *mqttPort, NATSPort: *natsPort,
	}
	if !*noNATS {
		opts.NATSDir = *natsDir
		if opts.NATSDir == "" {
			d, err := os.MkdirTemp("", "plantsim-nats-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(d)
			opts.NATSDir = d
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p, err := plantsim.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer p.Close()

	fmt.Println("plantsim running:")
	for _, e := range p.Endpoints() {
		fmt.Println("  " + e)
	}
	if *writeConfig != "" {
		dd := *dataDir
		if dd == "" {
			dd = *writeConfig + ".data"
		}
		b, err := p.Config(plantsim.ConfigOptions{DataDir: dd, HTTP: *httpAddr})
		if err != nil {
			return err
		}
		if err := os.WriteFile(*writeConfig, b, 0o644); err != nil {
			return err
		}
		fmt.Printf("  ferry config written to %s\n", *writeConfig)
	}
	if *faults {
		fmt.Printf("  fault cycle %v: press1 overheats at %.0fs, humidity sticks at %.0fs, press2 silent at %.0fs\n",
			*cycle, cycle.Seconds()*0.08, cycle.Seconds()*0.30, cycle.Seconds()*0.55)
	}
	<-ctx.Done()
	fmt.Println("plantsim: stopping")
	return nil
}
