package modbus_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/drivers/modbus"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/gateway"
	"github.com/ferry-edge/ferry/internal/plantsim"
)

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoadModbusConfig: the loader decodes every modbus key, applies the
// defaults, and its devices make a Driver.
func TestLoadModbusConfig(t *testing.T) {
	p := writeConfig(t, `
gateway: {id: gw}
devices:
  - name: meter
    modbus:
      url: rtu:///dev/ttyUSB0
      unit: 17
      interval: 250ms
      timeout: 300ms
      max_gap: 2
      max_registers: 60
      max_bits: 800
      request_delay: 20ms
      reprobe: 1h
      serial: {baud: 19200, parity: even}
    points:
      - {name: voltage, ref: "30001", type: float32, order: CDAB, unit: V}
      - {name: energy, table: input, address: 100, type: uint64, word_order: low_first, scale: 0.001, unit: kWh}
      - {name: alarm, table: holding, address: 7, type: bool, bit: 3, description: overload}
  - name: press
    modbus: {url: "tcp://10.0.0.21"}
    points:
      - {name: oil_temp, table: holding, address: 100}
`)
	c, err := gateway.LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	devs := config.DevicesOf[modbus.Device](c)
	if len(devs) != 2 {
		t.Fatalf("%d modbus devices", len(devs))
	}
	m := devs[0].Config
	if m.Unit != 17 || m.Interval != 250*time.Millisecond || m.MaxGap != 2 || m.MaxRegisters != 60 || m.MaxBits != 800 ||
		m.RequestDelay != 20*time.Millisecond || m.Reprobe != time.Hour || m.Serial == nil ||
		*m.Serial != (modbus.Serial{Baud: 19200, DataBits: 8, Parity: "even", StopBits: 1}) {
		t.Errorf("meter config %+v serial %+v", m, m.Serial)
	}
	d := devs[1].Config
	if d.Unit != 1 || d.Interval != time.Second || d.Timeout != time.Second || d.MaxGap != modbus.DefaultMaxGap ||
		d.MaxRegisters != 125 || d.MaxBits != 2000 || d.Reprobe != modbus.DefaultReprobe || d.Serial != nil {
		t.Errorf("defaults %+v", d)
	}
	if info := c.Points[2]; info.Source != "holding 7.3" || info.Type != "bool" || info.Description != "overload" {
		t.Errorf("point info %+v", info)
	}
	if info := c.Points[3]; info.Source != "holding 100" || info.Type != "uint16" {
		t.Errorf("default type info %+v", info)
	}
	if info := c.Points[0]; info.Source != "input 0" || info.Unit != "V" {
		t.Errorf("ref info %+v", info)
	}
	drv, err := modbus.New(devs, modbus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	plan := drv.Plan()
	if len(plan) != 2 || plan[0].Link != "rtu:///dev/ttyUSB0" || plan[0].Serial != "19200 8E1" || plan[1].Link != "tcp://10.0.0.21:502" {
		t.Fatalf("plan %+v", plan)
	}
}

// TestLoadModbusErrors: mistakes are reported with file, line, column and
// the full path.
func TestLoadModbusErrors(t *testing.T) {
	p := writeConfig(t, `gateway: {id: gw}
devices:
  - name: press
    modbus: {url: "tcp://h", unit: 250}
    points:
      - {name: a, table: holding, address: 65535, type: float32}
      - {name: b, table: holding, type: flaot32}
      - {name: c, ref: "40000"}
`)
	_, err := gateway.LoadConfig(p)
	if err == nil {
		t.Fatal("loaded")
	}
	for _, want := range []string{
		"ferry.yaml:4:36: devices[0].modbus.unit: 250 is out of range",
		"ferry.yaml:6:44: devices[0].points[0].address: 65535 + 2 registers exceeds 65535",
		`ferry.yaml:7:41: devices[0].points[1].type: "flaot32" is not one of bool, int16`,
		`ferry.yaml:8:24: devices[0].points[2].ref: "40000" is not a reference`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// TestPlantsimConfig runs the driver on the configuration plantsim writes
// for its presses: every point decodes to what the simulated press
// serves, and the point in its register hole alone is Bad.
func TestPlantsimConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole simulated plant")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	plant, err := plantsim.Start(ctx, plantsim.Options{Presses: 1, Rate: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer plant.Close()
	b, err := plant.Config(plantsim.ConfigOptions{DataDir: t.TempDir(), Interval: "50ms"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := gateway.LoadConfig(writeConfig(t, string(b)))
	if err != nil {
		t.Fatal(err)
	}
	drv, err := modbus.New(config.DevicesOf[modbus.Device](c), modbus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	type counted struct {
		ferry.Scan
		requests uint64 // the press's request count when the scan was emitted
	}
	press := plant.Presses[0]
	scans := make(chan counted, 100)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- drv.Run(rctx, func(s ferry.Scan) { scans <- counted{s, press.Requests()} }) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var s counted
	var before uint64
	for i := 0; i < 3; i++ { // the first poll learns the hole
		before = s.requests
		select {
		case s = <-scans:
		case <-time.After(10 * time.Second):
			t.Fatal("no scan")
		}
	}
	got := map[string]ferry.Sample{}
	for _, x := range s.Samples {
		got[x.Point] = x
		if x.Point == "spare" {
			if x.Quality.Reason != ferry.ReasonIllegalAddress {
				t.Errorf("spare: %v", x.Quality)
			}
			continue
		}
		if !x.Quality.IsGood() {
			t.Errorf("%s: %v", x.Point, x.Quality)
		}
	}
	if a, b := got["oil_temp"].Value.Float64(), got["oil_temp_cdab"].Value.Float64(); a < 20 || a > 150 || math.Abs(a-b) > 2 {
		t.Errorf("oil_temp %v, oil_temp_cdab %v", a, b)
	}
	if v := got["label"].Value.Str(); v != "PRESS-1" {
		t.Errorf("label %q", v)
	}
	if !got["running"].Value.Bool() || got["speed"].Value.Uint64() != 30 {
		t.Errorf("running %v speed %v", got["running"].Value, got["speed"].Value)
	}
	if v := got["motor_current"].Value; v.Kind() != ferry.KindFloat {
		t.Errorf("motor_current %v", v)
	}
	var planned int
	for _, dp := range drv.Plan()[0].Devices {
		planned += len(dp.Requests)
	}
	if n := s.requests - before; n != uint64(planned) {
		t.Errorf("steady poll cost %d requests, plan says %d", n, planned)
	}
	if press.Exceptions() == 0 {
		t.Error("the hole was never hit")
	}
}

// TestReadmePlan: the `ferry plan` output shown in the README is what the
// README's example configuration plans.
func TestReadmePlan(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	start := strings.Index(md, "```yaml\n# ferry.yaml")
	end := strings.Index(md[start+8:], "```")
	c, err := gateway.LoadConfig(writeConfig(t, md[start+8:start+8+end]))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, line := range strings.Split(md[start+8+end:], "\n") {
		if strings.HasPrefix(line, "    unit ") {
			want = append(want, strings.TrimSpace(line))
		}
		if strings.HasPrefix(line, "total:") {
			break
		}
	}
	if len(want) == 0 {
		t.Fatal("no plan lines found after the README example")
	}
	var got []string
	for _, d := range config.DevicesOf[modbus.Device](c) {
		drv, err := modbus.New([]modbus.Device{d}, modbus.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range drv.Plan()[0].Devices[0].Requests {
			got = append(got, r.String())
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("README shows\n%s\nthe example plans\n%s", strings.Join(want, "\n"), strings.Join(got, "\n"))
	}
}
