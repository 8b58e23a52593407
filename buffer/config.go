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
	// CommitInterval and CommitMaxWaiting make the group commit: see
	// buffer/README.md, "Group commit".
	CommitInterval   time.Duration `yaml:"commit_interval" doc:"how long telemetry waits to be committed together with what arrives after it (one fsync for all); alerts commit at once; 0 commits at once"`
	CommitMaxWaiting int           `yaml:"commit_max_waiting" doc:"commit at once when this many scans wait for their commit to be acknowledged to their source (MQTT QoS 1): keep it below the broker's in-flight window (mosquitto: 20); 0 commits every scan at once"`
	// RetainAcked and RetainMaxSize make the retention of acknowledged
	// records: see buffer/retain.go and docs/durability.md.
	RetainAcked   time.Duration `yaml:"retain_acked" doc:"how long records are kept after the upstream acknowledged them, so that what an upstream server loses (it acknowledges before it syncs to disk) is sent again; longer than the server's sync_interval (nats-server: 2m); 0 disables"`
	RetainMaxSize setting.Size  `yaml:"retain_max_size" doc:"bound on the retained acknowledged records (not counted in max_size); the oldest go first"`
}

// SetDefaults sets the defaults applied before decoding.
func (c *Config) SetDefaults() {
	c.MaxSize = 1 << 30
	c.MaxAge = 7 * 24 * time.Hour
	c.DedupeWindow = 10 * time.Minute
	c.CommitInterval = defaultCommitInterval
	c.CommitMaxWaiting = defaultCommitMaxWaiting
	c.RetainAcked = 5 * time.Minute
	c.RetainMaxSize = 256 << 20
}

const (
	// defaultCommitInterval: see buffer/README.md, "Group commit", for
	// the measurements it was chosen from.
	defaultCommitInterval = 100 * time.Millisecond
	// defaultCommitMaxWaiting is mosquitto's default in-flight window
	// (max_inflight_messages 20) less 4 for the messages that arrive while
	// the commit runs (2-4 ms here at 1000 msg/s): the broker sends no
	// more QoS 1 messages on a connection until it has acks, so a commit
	// that waited for a full window would stall the stream for the rest
	// of its interval. A broker with a smaller window needs a smaller
	// value (buffer/README.md).
	defaultCommitMaxWaiting = 16
)

// Validate checks the section; paths are relative to it.
func (c *Config) Validate() error {
	var errs setting.Errors
	if c.MaxSize < 1<<20 {
		errs.Add("max_size", "%v is below the minimum of 1MiB", c.MaxSize)
	}
	if c.MaxAge < time.Minute {
		errs.Add("max_age", "%v is below the minimum of 1m", c.MaxAge)
	}
	if c.CommitInterval < 0 || c.CommitInterval > time.Second {
		errs.Add("commit_interval", "%v is outside 0..1s", c.CommitInterval)
	}
	if c.CommitMaxWaiting < 0 || c.CommitMaxWaiting > 65535 {
		errs.Add("commit_max_waiting", "%d is outside 0..65535", c.CommitMaxWaiting)
	}
	if c.DedupeWindow < 0 || c.DedupeWindow > 24*time.Hour {
		errs.Add("dedupe_window", "%v is outside 0..24h", c.DedupeWindow)
	}
	if c.RetainAcked < 0 || c.RetainAcked > 24*time.Hour {
		errs.Add("retain_acked", "%v is outside 0..24h", c.RetainAcked)
	}
	if c.RetainAcked > 0 && c.RetainMaxSize < 1<<20 {
		errs.Add("retain_max_size", "%v is below the minimum of 1MiB", c.RetainMaxSize)
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
