package sparkplug

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/ferry-edge/ferry/internal/setting"
)

// Config is the `uplink.sparkplug:` block.
type Config struct {
	Brokers  []string       `yaml:"brokers" doc:"MQTT server URLs tried in order at each connect: tcp://host:1883, ssl://host:8883 (also tls://, mqtts://), ws://host/mqtt, wss://host/mqtt"`
	ClientID string         `yaml:"client_id" doc:"MQTT client id; default ferry-<group_id>-<edge_node_id>"`
	Username string         `yaml:"username" doc:"MQTT user name"`
	Password setting.Secret `yaml:"password" doc:"MQTT password (or password_file)"`
	TLS      *TLSConfig     `yaml:"tls" doc:"TLS settings of ssl://, tls://, mqtts:// and wss:// brokers"`

	GroupID       string `yaml:"group_id" doc:"Sparkplug group id"`
	EdgeNodeID    string `yaml:"edge_node_id" doc:"Sparkplug edge node id; default the gateway id"`
	PrimaryHostID string `yaml:"primary_host_id" doc:"host application whose spBv1.0/STATE/<id> ferry waits for: nothing is published (the buffer keeps it) while that host is offline, and the backlog goes out with is_historical when it is back; empty: publish whenever connected"`

	Devices []string `yaml:"devices" doc:"ferry devices published as Sparkplug devices; empty: every device"`
	// Commands lets DCMDs write: through the gateway's command path, with
	// all of its checks (commands.enabled, write: blocks, limits,
	// interlocks, ids, audit). Off: every DCMD is refused and counted.
	Commands bool `yaml:"commands" doc:"take DCMD writes through the command path (docs/commands.md; commands.enabled and each point's write: block still apply); whoever may publish on the DCMD topics at the broker may then ask for writes; default false: DCMDs are refused and counted"`
	Alerts   bool `yaml:"alerts" doc:"publish alerts as the node metric Alerts/Event (a JSON string); false: alerts are not sent to this upstream"`

	MaxMetricName  int               `yaml:"max_metric_name" doc:"longest metric name, in bytes; longer points are left out of births and data (counted)"`
	NodeProperties map[string]string `yaml:"node_properties" doc:"extra string metrics of the NBIRTH, as Properties/<key>"`

	BatchSize      int           `yaml:"batch_size" doc:"records taken from the buffer at once, at most"`
	BatchBytes     setting.Size  `yaml:"batch_bytes" doc:"bytes of records taken from the buffer at once, at most"`
	KeepAlive      time.Duration `yaml:"keepalive" doc:"MQTT keepalive; the broker publishes the NDEATH will about 1.5 times this after ferry goes silent"`
	ConnectTimeout time.Duration `yaml:"connect_timeout" doc:"time allowed to dial, handshake and get CONNACK or SUBACK"`
	AckTimeout     time.Duration `yaml:"ack_timeout" doc:"how long to wait for a PUBACK before the connection is dropped and the records are sent again"`
	ReconnectMax   time.Duration `yaml:"reconnect_max" doc:"longest wait between connection attempts (the backoff cap)"`
}

// TLSConfig is the `uplink.sparkplug.tls:` block. Files are re-read at
// every connect.
type TLSConfig struct {
	CA                 string `yaml:"ca" doc:"PEM file of the CA(s) that sign the broker's certificate; default the system roots"`
	Cert               string `yaml:"cert" doc:"PEM client certificate, for brokers that require one"`
	Key                string `yaml:"key" doc:"PEM private key of cert"`
	ServerName         string `yaml:"server_name" doc:"name expected in the broker's certificate; default the broker URL's host"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" doc:"do not verify the broker's certificate (tests only)"`
}

// SetDefaults sets the defaults applied before decoding.
func (c *Config) SetDefaults() {
	c.Alerts = true
	c.MaxMetricName = 256
	c.BatchSize = 256
	c.BatchBytes = 1 << 20
	c.KeepAlive = 30 * time.Second
	c.ConnectTimeout = 10 * time.Second
	c.AckTimeout = 10 * time.Second
	c.ReconnectMax = 30 * time.Second
}

// DefaultConfig returns a block with the defaults, the group id and the
// brokers.
func DefaultConfig(group string, brokers ...string) Config {
	var c Config
	c.SetDefaults()
	c.GroupID = group
	c.Brokers = brokers
	return c
}

// Validate checks the block; paths are relative to it ("brokers[1]").
func (c *Config) Validate() error {
	var errs setting.Errors
	if len(c.Brokers) == 0 {
		errs.Add("brokers", "at least one MQTT server URL is required")
	}
	tlsCount := 0
	for i, b := range c.Brokers {
		if !setting.CheckURLUserinfo(&errs, setting.Index("brokers", i), b, "username and password (or password_file)") {
			continue
		}
		u, err := url.Parse(b)
		if err != nil || u.Host == "" {
			errs.Add(setting.Index("brokers", i), "%q is not a broker URL such as tcp://host:1883", b)
			continue
		}
		switch u.Scheme {
		case "tcp", "mqtt", "ws":
		case "ssl", "tls", "mqtts", "wss":
			tlsCount++
		default:
			errs.Add(setting.Index("brokers", i), "%q: scheme %q is not one of tcp, mqtt, ssl, tls, mqtts, ws, wss", b, u.Scheme)
		}
	}
	if tlsCount != 0 && tlsCount != len(c.Brokers) {
		errs.Add("brokers", "mixes TLS and plain URLs: all of them or none use TLS")
	}
	if t := c.TLS; t != nil && (t.Cert == "") != (t.Key == "") {
		errs.Add("tls", "cert and key go together")
	}
	if c.Password != "" && c.Username == "" {
		errs.Add("username", "is required with password")
	}
	if err := checkID(c.GroupID); err != nil {
		errs.Add("group_id", "%v", err)
	}
	if c.EdgeNodeID != "" {
		if err := checkID(c.EdgeNodeID); err != nil {
			errs.Add("edge_node_id", "%v", err)
		}
	}
	if c.PrimaryHostID != "" {
		if err := checkID(c.PrimaryHostID); err != nil {
			errs.Add("primary_host_id", "%v", err)
		}
	}
	for i, d := range c.Devices {
		if err := checkID(d); err != nil {
			errs.Add(setting.Index("devices", i), "%v", err)
		}
	}
	for k := range c.NodeProperties {
		if k == "" || strings.ContainsAny(k, "+#") {
			errs.Add("node_properties", "key %q must be non-empty, without + or #", k)
		}
	}
	if c.MaxMetricName < 16 || c.MaxMetricName > 4096 {
		errs.Add("max_metric_name", "%d is out of range 16..4096", c.MaxMetricName)
	}
	if c.BatchSize < 1 || c.BatchSize > 65536 {
		errs.Add("batch_size", "%d is out of range 1..65536", c.BatchSize)
	}
	if c.BatchBytes < 1<<10 {
		errs.Add("batch_bytes", "%v is below the minimum of 1KiB", c.BatchBytes)
	}
	errs.AtLeast("keepalive", c.KeepAlive, 10*time.Millisecond)
	errs.AtLeast("connect_timeout", c.ConnectTimeout, 10*time.Millisecond)
	errs.AtLeast("ack_timeout", c.AckTimeout, 10*time.Millisecond)
	errs.AtLeast("reconnect_max", c.ReconnectMax, 10*time.Millisecond)
	if c.KeepAlive > 0 && c.KeepAlive < time.Second {
		errs.Add("keepalive", "%v is below the minimum of 1s (MQTT counts it in seconds)", c.KeepAlive)
	}
	return errs.Err()
}

// checkID accepts a Sparkplug group, edge node, device or host id: one
// MQTT topic level, without wildcards.
func checkID(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("is required")
	case len(s) > 255:
		return fmt.Errorf("%q is longer than 255 bytes", s)
	case strings.ContainsAny(s, "/+#"):
		return fmt.Errorf("%q may not hold / + or #: it is one MQTT topic level", s)
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			return fmt.Errorf("%q holds a control character", s)
		}
	}
	return nil
}

// ValidateGateway checks what depends on the gateway section: without
// edge_node_id the gateway id is the edge node id, and must be one.
func (c *Config) ValidateGateway(gatewayID string) error {
	if c.EdgeNodeID != "" {
		return nil
	}
	var errs setting.Errors
	if err := checkID(gatewayID); err != nil {
		errs.Add("edge_node_id", "is not set, and gateway.id cannot stand for it: %v", err)
	}
	return errs.Err()
}
