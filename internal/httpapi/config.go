package httpapi

import "github.com/ferry-edge/ferry/internal/conf"

// Config is the `http:` section: the local listener for /metrics,
// /healthz, /readyz and the API.
type Config struct {
	Listen string `yaml:"listen"`
}

// SetDefaults sets the defaults applied before decoding.
func (c *Config) SetDefaults() { c.Listen = "127.0.0.1:9440" }

// Validate checks the section; paths are relative to it.
func (c *Config) Validate() error {
	var errs conf.Errors
	if c.Listen == "" {
		errs.Add("listen", "is required (use \"off\" to disable)")
	}
	return errs.Err()
}
