package mqtt

import (
	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/conf"
)

// Config is the `mqtt:` block of a device.
type Config struct {
	Broker   string      `yaml:"broker"`
	Topic    string      `yaml:"topic"`
	QoS      uint8       `yaml:"qos"`
	Format   string      `yaml:"format"`
	Username string      `yaml:"username"`
	Password conf.Secret `yaml:"password"`
}

// SetDefaults sets the defaults applied before decoding.
func (c *Config) SetDefaults() {
	c.QoS = 1
	c.Format = "json"
}

// Point is one value taken from a message.
type Point struct {
	Name string `yaml:"name"`
	Path string `yaml:"path"`
	Unit string `yaml:"unit"`
}

// Info describes the point for the catalog and the console.
func (p *Point) Info() ferry.PointInfo {
	return ferry.PointInfo{Point: p.Name, Protocol: "mqtt", Source: p.Path, Unit: p.Unit}
}

// Device is one configured MQTT device.
type Device struct {
	Name   string
	Config Config
	Points []Point
}

// Validate checks the device; paths are relative to the device entry.
func (d *Device) Validate() error {
	var errs conf.Errors
	if d.Config.Broker == "" {
		errs.Add("mqtt.broker", "is required")
	}
	if d.Config.Topic == "" {
		errs.Add("mqtt.topic", "is required")
	}
	if err := conf.OneOf(d.Config.Format, "json", "value", "sparkplug_b"); err != nil {
		errs.Add("mqtt.format", "%v", err)
	}
	return errs.Err()
}
