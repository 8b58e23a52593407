package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mbserver "github.com/simonvetter/modbus"

	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// readBank is a Modbus device for `ferry read`: holding 0..1 hold a
// float32 in CDAB order, holding 10 a uint16 scaled by 0.1, coil 3 is on,
// and input registers answer illegal data address.
type readBank struct{}

func (readBank) HandleCoils(r *mbserver.CoilsRequest) ([]bool, error) {
	out := make([]bool, r.Quantity)
	for i := range out {
		out[i] = r.Addr+uint16(i) == 3
	}
	return out, nil
}
func (readBank) HandleDiscreteInputs(*mbserver.DiscreteInputsRequest) ([]bool, error) {
	return nil, mbserver.ErrIllegalDataAddress
}
func (readBank) HandleInputRegisters(*mbserver.InputRegistersRequest) ([]uint16, error) {
	return nil, mbserver.ErrIllegalDataAddress
}
func (readBank) HandleHoldingRegisters(r *mbserver.HoldingRegistersRequest) ([]uint16, error) {
	bits := math.Float32bits(59.95636)
	regs := map[uint16]uint16{0: uint16(bits), 1: uint16(bits >> 16), 10: 1597}
	out := make([]uint16, r.Quantity)
	for i := range out {
		out[i] = regs[r.Addr+uint16(i)]
	}
	return out, nil
}

// TestReadConfig: `ferry read` reads a Modbus, an OPC UA and an MQTT
// device of one configuration once, prints each point with the honest
// number of its type, exits 1 when a point is Bad, and narrows to one
// device and point.
func TestReadConfig(t *testing.T) {
	mb := testpeer.ModbusServer(t, readBank{})
	ua := testpeer.OPCUAServer(t, testpeer.UANone(), testpeer.UANamespace("urn:test"))
	ua.Add(time.Now(), "Pressure", 4.5)
	broker := testpeer.Broker(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	testutil.WriteFile(t, path, fmt.Sprintf(`gateway: {id: gw1}
data_dir: %q
http: {listen: "off"}
devices:
  - name: press
    modbus: {url: %q, unit: 1, interval: 200ms, timeout: 1s}
    points:
      - {name: temp, table: holding, address: 0, type: float32, order: CDAB, unit: degC}
      - {name: level, table: holding, address: 10, type: uint16, scale: 0.1, unit: "%%"}
      - {name: running, table: coil, address: 3}
  - name: boiler
    opcua: {endpoint: %q, security_policy: None, allow_insecure: true, mode: poll, interval: 200ms}
    points:
      - {name: pressure, node: "nsu=urn:test;s=Pressure", unit: bar}
  - name: env
    mqtt: {broker: %q, topic: "env/room1", qos: 1, format: json}
    points:
      - {name: temp, path: temp}
`, dir, mb.URL(), ua.Endpoint(), broker.URL()))

	// The MQTT point has a value once a message comes: publish until the
	// probe reads one (it subscribes after it starts).
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond): // a publisher's pace, not a wait
				broker.Publish(t, "env/room1", []byte(`{"temp": 21.5}`), 0, false)
			}
		}
	}()
	code, out, errOut := run(t, "read", "-config", path, "-timeout", "10s")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"DEVICE  POINT     VALUE     UNIT  QUALITY  REASON",
		"press   temp      59.95636  degC  good     -",
		"press   level     159.7     %     good     -",
		"press   running   true      -     good     -",
		"boiler  pressure  4.5       bar   good     -",
		"env     temp      21.5      -     good     -",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// One device, one point.
	code, out, _ = run(t, "read", "-config", path, "press", "level")
	if code != 0 || !strings.Contains(out, "159.7") || strings.Contains(out, "temp") {
		t.Errorf("one point: exit %d:\n%s", code, out)
	}
	// A point the device lacks, a device the file lacks: usage errors.
	if code, _, errOut := run(t, "read", "-config", path, "press", "nope"); code != 2 || !strings.Contains(errOut, `device press has no point "nope" (it has: temp, level, running)`) {
		t.Errorf("unknown point: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run(t, "read", "-config", path, "nope"); code != 2 || !strings.Contains(errOut, "unknown device [nope]") {
		t.Errorf("unknown device: exit %d, %q", code, errOut)
	}

	// A device that does not answer: Bad with a reason, exit 1, within
	// the timeout.
	mb.Stop()
	start := time.Now()
	code, out, _ = run(t, "read", "-config", path, "-timeout", "2s", "press")
	if code != 1 || !strings.Contains(out, "bad") {
		t.Errorf("stopped server: exit %d:\n%s", code, out)
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("read of a dead device took %s with -timeout 2s", took)
	}
}

// TestReadModbusDirect: the configless probe reads values of a type and
// order, and refuses bad flags with a usage error.
func TestReadModbusDirect(t *testing.T) {
	mb := testpeer.ModbusServer(t, readBank{})
	code, out, errOut := run(t, "read", "modbus", mb.URL(), "-unit", "1", "-holding", "0:1", "-type", "float32", "-order", "cdab")
	if code != 0 || !strings.Contains(out, "probe   h0     59.95636  -     good") {
		t.Fatalf("float32: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = run(t, "read", "modbus", mb.URL(), "-coils", "2:2")
	if code != 0 || !strings.Contains(out, "c2     false") || !strings.Contains(out, "c3     true") {
		t.Errorf("coils: exit %d\n%s", code, out)
	}
	code, out, _ = run(t, "read", "modbus", mb.URL(), "-input", "0:2", "-timeout", "1s")
	if code != 1 || !strings.Contains(out, "illegal data address") {
		t.Errorf("input registers the device lacks: exit %d\n%s", code, out)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"read", "modbus"}, "want a link URL"},
		{[]string{"read", "modbus", mb.URL()}, "give one of -holding"},
		{[]string{"read", "modbus", mb.URL(), "-holding", "x"}, "START must be an address"},
		{[]string{"read", "modbus", mb.URL(), "-holding", "0:5", "-type", "int12"}, `-type "int12"`},
		{[]string{"read", "modbus", mb.URL(), "-holding", "0:1", "-input", "0:1"}, "give one of"},
		{[]string{"read", "modbus", mb.URL(), "-holding", "0:1", "-order", "XYZW"}, "order"},
	} {
		code, _, errOut := run(t, tt.args...)
		if code != 2 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: exit %d, stderr %q, want 2 and %q", tt.args, code, errOut, tt.want)
		}
	}
	if _, err := os.Stat(filepath.Join(os.TempDir(), "probe.yaml")); err == nil {
		t.Error("the probe's configuration was left in the temp dir")
	}
}
