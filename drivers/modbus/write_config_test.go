package modbus_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/drivers/modbus"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/gateway"
)

// TestLoadModbusWrite: write: blocks, mask_write and write_multiple are
// decoded, and the point's info carries the write spec.
func TestLoadModbusWrite(t *testing.T) {
	p := writeConfig(t, `
gateway: {id: gw}
devices:
  - name: press
    modbus: {url: "tcp://10.0.0.21", mask_write: true, write_multiple: true}
    points:
      - {name: setpoint, table: holding, address: 100, type: float32, order: CDAB, write: {min: 20, max: 80, rate_limit: 5s, interlock: "press.running == false"}}
      - {name: recipe, table: holding, address: 120, type: string, length: 8, write: {allowed: [RECIPE_A, RECIPE_B]}}
      - {name: pump, table: holding, address: 110, type: bool, bit: 3, write: {}}
      - {name: start, table: coil, address: 5, write: {allowed: ["true"]}}
      - {name: temp, table: holding, address: 130, type: int16, scale: 0.1, write: {allowed: ["23.4", "-5"]}}
      - {name: running, table: coil, address: 6}
`)
	c, err := gateway.LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	d := config.DevicesOf[modbus.Device](c)[0]
	if !d.Config.MaskWrite || !d.Config.WriteMultiple {
		t.Errorf("modbus block %+v", d.Config)
	}
	w := c.Points[0].Write
	if w == nil || *w.Min != 20 || *w.Max != 80 || w.RateLimit != 5*time.Second || w.Interlock != "press.running == false" {
		t.Fatalf("setpoint write %+v", w)
	}
	if w := c.Points[1].Write; w == nil || strings.Join(w.Allowed, ",") != "RECIPE_A,RECIPE_B" {
		t.Errorf("recipe write %+v", w)
	}
	if c.Points[2].Write == nil || c.Points[5].Write != nil {
		t.Errorf("pump write %+v, running write %+v", c.Points[2].Write, c.Points[5].Write)
	}
	if _, err := modbus.New([]modbus.Device{d}, modbus.Options{}); err != nil {
		t.Fatal(err)
	}
}

// TestLoadModbusWriteErrors: a write: Modbus cannot honour is refused at
// load, at the file, line and column of the key.
func TestLoadModbusWriteErrors(t *testing.T) {
	p := writeConfig(t, `gateway: {id: gw}
devices:
  - name: press
    modbus: {url: "tcp://h"}
    points:
      - {name: a, table: input, address: 1, write: {max: 3}}
      - {name: b, ref: "10001", write: {}}
      - {name: c, table: holding, address: 7, type: bool, bit: 3, write: {}}
      - {name: d, table: holding, address: 8, type: int16, write: {min: 10, max: 5}}
      - {name: e, table: holding, address: 9, type: uint16, write: {allowed: ["1", "x", "70000", "1.5"]}}
      - {name: f, table: holding, address: 10, type: string, length: 124, write: {}}
      - {name: g, table: coil, address: 1, write: {min: 0}}
`)
	_, err := gateway.LoadConfig(p)
	if err == nil {
		t.Fatal("loaded")
	}
	for _, want := range []string{
		"ferry.yaml:6:52: devices[0].points[0].write: input registers are read-only (function 04)",
		"ferry.yaml:7:40: devices[0].points[1].write: discrete inputs are read-only (function 02)",
		"ferry.yaml:8:74: devices[0].points[2].write: bit 3 of holding 7 can only be written with FC22 (mask write register): set modbus.mask_write: true",
		"ferry.yaml:9:73: devices[0].points[3].write.min: 10 is above max 5",
		`ferry.yaml:10:84: devices[0].points[4].write.allowed[1]: "x" is not a number`,
		`ferry.yaml:10:89: devices[0].points[4].write.allowed[2]: "70000" is out of the range of uint16 (0..65535)`,
		`ferry.yaml:10:98: devices[0].points[4].write.allowed[3]: "1.5" has a fraction: the point is uint16`,
		"ferry.yaml:11:82: devices[0].points[5].write: a string of 124 registers cannot be written: one write (FC16) takes at most 123",
		"ferry.yaml:12:57: devices[0].points[6].write.min: is only for numbers, not bool points",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), `allowed[0]`) {
		t.Errorf("a valid allowed value refused:\n%v", err)
	}
}

// TestReadmeWriteExample: the README's writing example loads, and every
// point it declares writable carries its write spec.
func TestReadmeWriteExample(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	start := strings.Index(md, "```yaml\n# writing")
	if start < 0 {
		t.Fatal("no writing example in the README")
	}
	body := md[start+len("```yaml\n"):]
	body = body[:strings.Index(body, "```")]
	c, err := gateway.LoadConfig(writeConfig(t, "gateway: {id: gw}\n"+body))
	if err != nil {
		t.Fatal(err)
	}
	devs := config.DevicesOf[modbus.Device](c)
	if _, err := modbus.New(devs, modbus.Options{}); err != nil {
		t.Fatal(err)
	}
	var writable []string
	for _, p := range c.Points {
		if p.Write != nil {
			writable = append(writable, p.Point)
		}
	}
	if got := strings.Join(writable, ","); got != "setpoint,flow,recipe,start,pump" {
		t.Errorf("writable points %s", got)
	}
}
