package history

import (
	"time"

	"github.com/ferry-edge/ferry/internal/setting"
)

// Config is the `history:` section.
type Config struct {
	Enabled        bool          `yaml:"enabled" doc:"keep a local history of every point (per-minute rollups and raw samples) and of alert transitions in DATA_DIR/history.db"`
	MaxSize        setting.Size  `yaml:"max_size" doc:"bound on history.db: beyond it the oldest raw hour (while raw holds over half) or the oldest rollup day is dropped"`
	Raw            time.Duration `yaml:"raw" doc:"how long raw samples are kept (0: no raw samples, rollups only)"`
	Rollups        time.Duration `yaml:"rollups" doc:"how long the per-minute rollups (min, max, mean, last, count, worst quality) are kept"`
	MaxAlerts      int           `yaml:"max_alerts" doc:"how many alert transitions are kept; the oldest go first"`
	Devices        []string      `yaml:"devices" doc:"only these devices (default: every device)"`
	CommitInterval time.Duration `yaml:"commit_interval" doc:"how often what arrived is written (one transaction, one fsync); a crash loses at most this much history"`
}

// The defaults.
const (
	DefaultMaxSize        = 512 << 20
	DefaultRaw            = 24 * time.Hour
	DefaultRollups        = 30 * 24 * time.Hour
	DefaultMaxAlerts      = 100_000
	DefaultCommitInterval = 5 * time.Second
)

// SetDefaults sets the defaults applied before decoding.
func (c *Config) SetDefaults() {
	c.MaxSize = DefaultMaxSize
	c.Raw = DefaultRaw
	c.Rollups = DefaultRollups
	c.MaxAlerts = DefaultMaxAlerts
	c.CommitInterval = DefaultCommitInterval
}

// Validate checks the section; paths are relative to it.
func (c *Config) Validate() error {
	var errs setting.Errors
	if c.MaxSize < 1<<20 {
		errs.Add("max_size", "%v is below the minimum of 1MiB", c.MaxSize)
	}
	if c.Raw < 0 || c.Raw > 31*24*time.Hour {
		errs.Add("raw", "%v is outside 0..744h", c.Raw)
	}
	if c.Rollups < time.Hour || c.Rollups > 3660*24*time.Hour {
		errs.Add("rollups", "%v is outside 1h..87840h", c.Rollups)
	}
	if c.MaxAlerts < 1 {
		errs.Add("max_alerts", "%d is below the minimum of 1", c.MaxAlerts)
	}
	if c.CommitInterval < 10*time.Millisecond || c.CommitInterval > time.Minute {
		errs.Add("commit_interval", "%v is outside 10ms..1m", c.CommitInterval)
	}
	seen := map[string]bool{}
	for i, d := range c.Devices {
		if d == "" {
			errs.Add(setting.Index("devices", i), "empty device name")
		} else if seen[d] {
			errs.Add(setting.Index("devices", i), "%q is listed twice", d)
		}
		seen[d] = true
	}
	return errs.Err()
}

// limit is the bound on the file's pages in use: max_size less a quarter
// for the pages a commit frees but cannot reuse yet and the file's growth
// step.
func (c *Config) limit() int64 { return int64(c.MaxSize) - int64(c.MaxSize)/4 }
