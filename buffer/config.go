package buffer

import (
	"time"

	"github.com/ferry-edge/ferry/internal/conf"
)

// Config is the `buffer:` section.
type Config struct {
	MaxSize conf.Size     `yaml:"max_size"`
	MaxAge  time.Duration `yaml:"max_age"`
}

// SetDefaults sets the defaults applied before decoding.
func (c *Config) SetDefaults() {
	c.MaxSize = 1 << 30
	c.MaxAge = 7 * 24 * time.Hour
}

// Validate checks the section; paths are relative to it.
func (c *Config) Validate() error {
	var errs conf.Errors
	if c.MaxSize < 1<<20 {
		errs.Add("max_size", "%v is below the minimum of 1MiB", c.MaxSize)
	}
	if c.MaxAge < time.Minute {
		errs.Add("max_age", "%v is below the minimum of 1m", c.MaxAge)
	}
	return errs.Err()
}
