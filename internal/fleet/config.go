package fleet

import (
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry/internal/setting"
	"github.com/ferry-edge/ferry/uplink"
)

// Config is the `fleet:` block of the local file. Present, it turns fleet
// mode on: the gateway watches its key in the config bucket and reports
// to the status bucket, over its own connection made with the uplink's
// connection settings (uplink.nats urls, credentials, TLS) of the local
// file.
type Config struct {
	ConfigBucket    string        `yaml:"config_bucket" doc:"JetStream KV bucket holding the config bundles (key SITE.GATEWAY, site-wide key SITE)"`
	StatusBucket    string        `yaml:"status_bucket" doc:"JetStream KV bucket the gateway writes its status to (key SITE.GATEWAY)"`
	Domain          string        `yaml:"domain" doc:"JetStream domain of the buckets (a hub reached through a leaf node); excludes api_prefix"`
	APIPrefix       string        `yaml:"api_prefix" doc:"JetStream API prefix of the buckets (instead of domain)"`
	Heartbeat       time.Duration `yaml:"heartbeat" doc:"how often the status is written even when nothing changed"`
	ReadinessWindow time.Duration `yaml:"readiness_window" doc:"how long an applied bundle has to bring the devices that were connected back and the uplink up before it is rolled back"`
	MaxBundleBytes  setting.Size  `yaml:"max_bundle_bytes" doc:"largest bundle value accepted (the CLI creates the config bucket with this value size limit)"`
}

// Defaults of the fleet block.
const (
	DefaultConfigBucket    = "ferry_config"
	DefaultStatusBucket    = "ferry_status"
	DefaultHeartbeat       = 30 * time.Second
	DefaultReadinessWindow = 60 * time.Second
	DefaultMaxBundleBytes  = 1 << 20
)

// SetDefaults sets the defaults applied before decoding.
func (c *Config) SetDefaults() {
	c.ConfigBucket = DefaultConfigBucket
	c.StatusBucket = DefaultStatusBucket
	c.Heartbeat = DefaultHeartbeat
	c.ReadinessWindow = DefaultReadinessWindow
	c.MaxBundleBytes = DefaultMaxBundleBytes
}

// DefaultConfig returns a block with the defaults.
func DefaultConfig() Config {
	var c Config
	c.SetDefaults()
	return c
}

var bucketRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Validate checks the block; paths are relative to it.
func (c *Config) Validate() error {
	var errs setting.Errors
	for _, b := range []struct{ path, v string }{{"config_bucket", c.ConfigBucket}, {"status_bucket", c.StatusBucket}} {
		if !bucketRE.MatchString(b.v) {
			errs.Add(b.path, "%q is not a bucket name (letters, digits, _ and -)", b.v)
		}
	}
	if c.ConfigBucket == c.StatusBucket {
		errs.Add("status_bucket", "must differ from config_bucket")
	}
	if c.Domain != "" && c.APIPrefix != "" {
		errs.Add("api_prefix", "set domain or api_prefix, not both")
	}
	if c.Domain != "" && !bucketRE.MatchString(c.Domain) {
		errs.Add("domain", "%q is not a JetStream domain name (letters, digits, _ and -)", c.Domain)
	}
	if c.Heartbeat < time.Second {
		errs.Add("heartbeat", "%v is below the minimum of 1s", c.Heartbeat)
	}
	if c.ReadinessWindow < time.Second {
		errs.Add("readiness_window", "%v is below the minimum of 1s", c.ReadinessWindow)
	}
	if c.MaxBundleBytes < 1024 || c.MaxBundleBytes > 64<<20 {
		errs.Add("max_bundle_bytes", "%v is out of range 1KiB..64MiB", c.MaxBundleBytes)
	}
	return errs.Err()
}

// Key is the config and status key of a gateway: "SITE.GATEWAY". The
// site-wide config key is SiteKey.
func Key(site, gateway string) string { return site + "." + gateway }

// SiteKey is the site-wide config key: "SITE".
func SiteKey(site string) string { return site }

// checkToken reports a site or gateway name that cannot be a key token.
func checkToken(what, v string) error {
	if !bucketRE.MatchString(v) {
		return fmt.Errorf("%s %q is not a key token (letters, digits, _ and -)", what, v)
	}
	return nil
}

// CheckIdentity reports a site or gateway name that cannot name a key.
func CheckIdentity(site, gateway string) error {
	if site == "" {
		return fmt.Errorf("is required in fleet mode: the gateway's keys are SITE.GATEWAY")
	}
	if err := checkToken("site", site); err != nil {
		return err
	}
	return checkToken("gateway", gateway)
}

// InboxPrefix is the inbox prefix of a gateway's fleet connection,
// "_INBOX.SITE.GATEWAY", the same as its uplink's (uplink.InboxPrefix):
// its permissions allow it to subscribe to its own inboxes only, so that
// it cannot read the replies another gateway gets.
func InboxPrefix(site, gateway string) string { return uplink.InboxPrefix(site, gateway) }

// JetStream returns the JetStream context of the buckets on nc: in the
// configured domain or under the API prefix (a hub reached through a leaf
// node), else the server's own. The agent and `ferry fleet` share it.
func (c *Config) JetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	return uplink.NewJetStream(nc, uplink.NATSConfig{Domain: c.Domain, APIPrefix: c.APIPrefix})
}
