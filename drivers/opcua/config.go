package opcua

import (
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/conf"
)

// Config is the `opcua:` block of a device.
type Config struct {
	Endpoint       string        `yaml:"endpoint"`
	SecurityPolicy string        `yaml:"security_policy"`
	SecurityMode   string        `yaml:"security_mode"`
	AllowInsecure  bool          `yaml:"allow_insecure"`
	Mode           string        `yaml:"mode"`
	Interval       time.Duration `yaml:"interval"`
	Username       string        `yaml:"username"`
	Password       conf.Secret   `yaml:"password"`
}

// SetDefaults sets the defaults applied before decoding.
func (c *Config) SetDefaults() {
	c.Mode = "subscribe"
	c.Interval = time.Second
}

// Point is one node read from the server.
type Point struct {
	Name string `yaml:"name"`
	Node string `yaml:"node"`
	Unit string `yaml:"unit"`
}

// Info describes the point for the catalog and the console.
func (p *Point) Info() ferry.PointInfo {
	return ferry.PointInfo{Point: p.Name, Protocol: "opcua", Source: p.Node, Unit: p.Unit}
}

// Device is one configured OPC UA device.
type Device struct {
	Name   string
	Config Config
	Points []Point
}

// Validate checks the device; paths are relative to the device entry.
func (d *Device) Validate() error {
	var errs conf.Errors
	if d.Config.Endpoint == "" {
		errs.Add("opcua.endpoint", "is required")
	}
	if err := conf.OneOf(d.Config.Mode, "subscribe", "poll"); err != nil {
		errs.Add("opcua.mode", "%v", err)
	}
	for i, p := range d.Points {
		if p.Node == "" {
			errs.Add(conf.Index("points", i)+".node", "is required")
		}
	}
	return errs.Err()
}
