package buffer

import (
	"time"

	"github.com/ferry-edge/ferry/internal/setting"
)

// Config is the `buffer:` section.
type Config struct {
	MaxSize      setting.Size  `yaml:"max_size" doc:"bound on the records stored; the oldest telemetry is dropped beyond it (file stays within max_size + slack, see buffer/README.md)"`
	MaxAge       time.Duration `yaml:"max_age" doc:"telemetry older than this is dropped"`
	DedupeWindow time.Duration `yaml:"dedupe_window" doc:"how long the keys of committed MQTT messages are kept to drop redeliveries; 0 disables"`
}

// SetDefaults sets the defaults applied before decoding.
func (c *Config) SetDefaults() {
	c.MaxSize = 1 << 30
	c.MaxAge = 7 * 24 * time.Hour
	c.DedupeWindow = 10 * time.Minute
}

// Validate checks the section; paths are relative to it.
func (c *Config) Validate() error {
	var errs setting.Errors
	if c.MaxSize < 1<<20 {
		errs.Add("max_size", "%v is below the minimum of 1MiB", c.MaxSize)
	}
	if c.MaxAge < time.Minute {
		errs.Add("max_age", "%v is below the minimum of 1m", c.MaxAge)
	}
	if c.DedupeWindow < 0 || c.DedupeWindow > 24*time.Hour {
		errs.Add("dedupe_window", "%v is outside 0..24h", c.DedupeWindow)
	}
	return errs.Err()
}

// dataLimit is the bound on stored record bytes: max_size less a reserve
// for what else the file holds (bbolt's pages and their fill, the dedupe
// keys, the pages a commit rewrites). See buffer/README.md, "Bounds".
func (c *Config) dataLimit() int64 {
	return int64(c.MaxSize) - int64(c.MaxSize)/8
}

// fileSlack is how far buffer.db may grow past max_size: one growth step
// of the file (growStep) and max_size/8 for the pages the last commits
// freed but bbolt cannot reuse yet. See buffer/README.md, "Bounds".
func fileSlack(c Config) int64 { return growStep(c) + int64(c.MaxSize)/8 }

// growStep is how much bbolt grows the file at a time (its AllocSize):
// max_size/64, at least 64 KiB, at most 16 MiB.
func growStep(c Config) int64 { return min(max(int64(c.MaxSize)/64, 64<<10), 16<<20) }
