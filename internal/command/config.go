package command

import (
	"strings"
	"time"

	"github.com/ferry-edge/ferry/internal/setting"
)

// Defaults and bounds of the `commands:` section.
const (
	DefaultSubject         = "ferry.{site}.{gateway}.cmd"
	DefaultDefaultDeadline = 30 * time.Second
	DefaultMaxDeadline     = 10 * time.Minute
	DefaultKeep            = 24 * time.Hour
	DefaultMaxIDs          = 10000
	DefaultWriteTimeout    = 10 * time.Second

	// MaxIDLen bounds a command id, in bytes.
	MaxIDLen = 128
)

// Config is the `commands:` section: whether this gateway takes commands
// at all, where, and the bounds on their ids and deadlines. What may be
// written is declared per point (`write:` in the device map).
type Config struct {
	Enabled bool `yaml:"enabled" doc:"take commands (writes to devices) at all; off by default"`
	// Subject is the NATS request subject; {site} and {gateway} are
	// replaced by the gateway's identity.
	Subject string `yaml:"subject" doc:"NATS subject of command requests ({site} and {gateway} are replaced)"`
	// DefaultDeadline is the deadline of a request that gives none,
	// counted from when the gateway received it.
	DefaultDeadline time.Duration `yaml:"default_deadline" doc:"deadline of a command that gives none, from its receipt"`
	// MaxDeadline refuses a request whose deadline is further ahead:
	// no command may wait longer than this to land.
	MaxDeadline time.Duration `yaml:"max_deadline" doc:"a command whose deadline is further ahead than this is refused"`
	// Keep is how long a command id (and its reply) is remembered; it must
	// be longer than MaxDeadline, so that a repeat of a forgotten id is
	// past its deadline and refused.
	Keep time.Duration `yaml:"keep" doc:"how long command ids and their replies are remembered (longer than max_deadline)"`
	// MaxIDs bounds the remembered ids; the oldest are forgotten first.
	MaxIDs int `yaml:"max_ids" doc:"most command ids remembered; the oldest are forgotten first"`
	// WriteTimeout bounds one write and its read back.
	WriteTimeout time.Duration `yaml:"write_timeout" doc:"bound on one write and its read back; past it the outcome is unknown"`
}

// SetDefaults sets the defaults applied before decoding.
func (c *Config) SetDefaults() {
	c.Subject = DefaultSubject
	c.DefaultDeadline = DefaultDefaultDeadline
	c.MaxDeadline = DefaultMaxDeadline
	c.Keep = DefaultKeep
	c.MaxIDs = DefaultMaxIDs
	c.WriteTimeout = DefaultWriteTimeout
}

// Validate checks the section; paths are relative to it.
func (c *Config) Validate() error {
	var errs setting.Errors
	if c.Subject == "" || strings.ContainsAny(c.Subject, " \t\r\n") || strings.Contains(c.Subject, "..") ||
		strings.HasPrefix(c.Subject, ".") || strings.HasSuffix(c.Subject, ".") || strings.ContainsAny(c.Subject, "*>") {
		errs.Add("subject", "%q is not a NATS subject without wildcards", c.Subject)
	}
	if c.DefaultDeadline <= 0 {
		errs.Add("default_deadline", "must be positive")
	}
	if c.MaxDeadline <= 0 {
		errs.Add("max_deadline", "must be positive")
	} else if c.DefaultDeadline > c.MaxDeadline {
		errs.Add("default_deadline", "%v is longer than max_deadline %v", c.DefaultDeadline, c.MaxDeadline)
	}
	if c.Keep <= c.MaxDeadline {
		errs.Add("keep", "%v must be longer than max_deadline %v (a forgotten id must be past its deadline)", c.Keep, c.MaxDeadline)
	}
	if c.MaxIDs < 1 || c.MaxIDs > 10_000_000 {
		errs.Add("max_ids", "%d is out of range 1..10000000", c.MaxIDs)
	}
	if c.WriteTimeout <= 0 || c.WriteTimeout > time.Minute {
		errs.Add("write_timeout", "%v is out of range (0, 1m]", c.WriteTimeout)
	}
	return errs.Err()
}

// SubjectFor returns the command subject of gateway id at site.
func (c *Config) SubjectFor(site, id string) string {
	return strings.NewReplacer("{site}", site, "{gateway}", id).Replace(c.Subject)
}
