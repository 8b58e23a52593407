package modbus

import (
	"fmt"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/conf"
)

// Config is the `modbus:` block of a device.
type Config struct {
	// URL names the link: tcp://host:502, rtu:///dev/ttyUSB0 or
	// rtuovertcp://host:4001.
	URL      string        `yaml:"url"`
	Unit     uint8         `yaml:"unit"`
	Interval time.Duration `yaml:"interval"`
	Timeout  time.Duration `yaml:"timeout"`
}

// SetDefaults sets the defaults applied before decoding.
func (c *Config) SetDefaults() {
	c.Unit = 1
	c.Interval = time.Second
	c.Timeout = time.Second
}

// Point is one value read from a device.
type Point struct {
	Name      string  `yaml:"name"`
	Table     string  `yaml:"table"`
	Address   uint16  `yaml:"address"`
	Type      string  `yaml:"type"`
	WordOrder string  `yaml:"word_order"`
	Scale     float64 `yaml:"scale"`
	Unit      string  `yaml:"unit"`
}

// Info describes the point for the catalog and the console.
func (p *Point) Info() ferry.PointInfo {
	return ferry.PointInfo{Point: p.Name, Protocol: "modbus", Source: fmt.Sprintf("%s %d", p.Table, p.Address), Type: p.Type, Unit: p.Unit, Scale: p.Scale}
}

// Device is one configured Modbus device: its name, its `modbus:` block
// and its points.
type Device struct {
	Name   string
	Config Config
	Points []Point
}

// Validate checks the device; error paths are relative to the device entry
// ("modbus.url", "points[2].type").
func (d *Device) Validate() error {
	var errs conf.Errors
	if d.Config.URL == "" {
		errs.Add("modbus.url", "is required")
	}
	for i, p := range d.Points {
		if err := conf.OneOf(p.Table, "coil", "discrete", "holding", "input"); err != nil {
			errs.Add(conf.Index("points", i)+".table", "%v", err)
		}
	}
	return errs.Err()
}
