package uplink

import (
	"github.com/ferry-edge/ferry/internal/conf"
)

// Config is the `uplink:` section.
type Config struct {
	NATS *NATSConfig `yaml:"nats"`
}

// NATSConfig is the `uplink.nats:` block.
type NATSConfig struct {
	URLs         []string    `yaml:"urls"`
	Creds        string      `yaml:"creds"`
	Token        conf.Secret `yaml:"token"`
	Stream       string      `yaml:"stream"`
	CreateStream bool        `yaml:"create_stream"`
}

// SetDefaults sets the defaults applied before decoding.
func (c *NATSConfig) SetDefaults() {
	c.Stream = "FERRY"
}

// Validate checks the section; paths are relative to it.
func (c *Config) Validate() error {
	var errs conf.Errors
	if c.NATS != nil && len(c.NATS.URLs) == 0 {
		errs.Add("nats.urls", "at least one server URL is required")
	}
	return errs.Err()
}
