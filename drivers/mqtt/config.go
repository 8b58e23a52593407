package mqtt

import (
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/setting"
)

// The payload formats.
const (
	FormatJSON      = "json"
	FormatValue     = "value"
	FormatSparkplug = "sparkplug_b"
)

// The time layouts with a name; any other layout is a Go reference layout
// (it must contain "2006").
const (
	LayoutRFC3339 = "rfc3339"
	LayoutUnixS   = "unix_s"
	LayoutUnixMS  = "unix_ms"
	LayoutUnixNS  = "unix_ns"
)

// The point types a value can be coerced to.
var pointTypes = []string{"", "float", "int", "bool", "string"}

// Config is the `mqtt:` block of a device.
//
// The connection settings (broker, fallback_brokers, client_id, username,
// password, tls, keepalive, connect_timeout) are shared by every device of
// one connection: devices with the same broker, username and client_id
// share one MQTT connection and must agree on the rest (see GroupKey).
type Config struct {
	Broker string `yaml:"broker" doc:"broker URL: tcp://host:1883, ssl://host:8883 (also tls://, mqtts://), ws://host/mqtt, wss://host/mqtt"`
	// FallbackBrokers are tried in order after Broker at each connection
	// attempt (a redundant pair, the other nodes of a cluster). They use
	// TLS if Broker does, and no other.
	FallbackBrokers []string       `yaml:"fallback_brokers" doc:"brokers tried in order after broker when it cannot be reached (redundant pair, cluster nodes); same URL forms, all TLS or all plain like broker"`
	ClientID        string         `yaml:"client_id" doc:"MQTT client id, fixed so that the broker keeps the session; default ferry-<gateway>-<hash of broker and username>"`
	Username        string         `yaml:"username"`
	Password        setting.Secret `yaml:"password"`
	TLS             TLS            `yaml:"tls"`
	KeepAlive       time.Duration  `yaml:"keepalive" doc:"MQTT keepalive; a silent connection is declared lost after about 1.5 times this"`
	ConnectTimeout  time.Duration  `yaml:"connect_timeout" doc:"time allowed to dial, handshake and get CONNACK or SUBACK"`

	Topic string `yaml:"topic" doc:"topic filter with + and # wildcards and {name} captures of whole levels, e.g. plant/{line}/{machine}/telemetry"`
	// Device names the device of each message from the topic's captures,
	// e.g. "{line}-{machine}". Default: the configured device name, or
	// "{device}" when the topic has a {device} capture.
	Device     string       `yaml:"device" doc:"device name template from topic captures, e.g. {line}-{machine}; default the device's name, or {device} when the topic captures device"`
	QoS        uint8        `yaml:"qos" doc:"subscription QoS 0, 1 or 2; 1 and 2 are acknowledged only once stored"`
	Format     string       `yaml:"format" enum:"json,value,sparkplug_b" doc:"payload format"`
	Time       Time         `yaml:"time" doc:"json: where the message's timestamp is"`
	MaxPayload setting.Size `yaml:"max_payload" doc:"larger payloads are refused (counted, Bad samples)"`
	Sparkplug  Sparkplug    `yaml:"sparkplug" doc:"sparkplug_b: which edge node (and device) this device is"`
}

// TLS configures a TLS connection (ssl://, tls://, mqtts://, wss://).
type TLS struct {
	CA                 string `yaml:"ca" doc:"PEM file of the CA(s) that sign the broker's certificate; default the system roots"`
	Cert               string `yaml:"cert" doc:"PEM client certificate, for brokers that require one"`
	Key                string `yaml:"key" doc:"PEM private key of cert"`
	ServerName         string `yaml:"server_name" doc:"name expected in the broker's certificate; default the broker URL's host"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" doc:"do not verify the broker's certificate (testing only)"`
}

// Time says where a JSON payload carries its timestamp.
type Time struct {
	Path   string `yaml:"path" doc:"JSON path of the timestamp, e.g. ts or meta.time"`
	Layout string `yaml:"layout" doc:"rfc3339, unix_s, unix_ms, unix_ns, or a Go layout such as \"2006-01-02 15:04:05\""`
}

// Sparkplug names the Sparkplug B edge node, and optionally the device
// under it, that a ferry device stands for.
type Sparkplug struct {
	GroupID  string `yaml:"group_id" doc:"Sparkplug group id"`
	EdgeNode string `yaml:"edge_node" doc:"Sparkplug edge node id"`
	Device   string `yaml:"device" doc:"Sparkplug device id under the edge node; empty for the node's own metrics"`
	// Rebirth makes ferry publish a rebirth request (NCMD Node
	// Control/Rebirth) when it gets data it cannot resolve. Off by
	// default: ferry then publishes nothing.
	Rebirth bool `yaml:"rebirth" doc:"publish an NCMD Node Control/Rebirth to the edge node when its data cannot be resolved (unknown alias, data before BIRTH, seq gap), at most once per 30s per node; default false: ferry publishes nothing"`
}

// SetDefaults sets the defaults applied before decoding.
func (c *Config) SetDefaults() {
	c.QoS = 1
	c.Format = FormatJSON
	c.KeepAlive = 30 * time.Second
	c.ConnectTimeout = 10 * time.Second
	c.MaxPayload = 1 << 20
	c.Time.Layout = LayoutRFC3339
}

// Point is one value taken from a message.
type Point struct {
	Name string `yaml:"name"`
	// Path is the JSON path of the value (format json): temp, env.temp,
	// readings[0].value, ["odd.key"].
	Path string `yaml:"path" doc:"json: path of the value, e.g. temp, env.temp, readings[0].value"`
	// Metric is the Sparkplug metric name (format sparkplug_b).
	Metric      string `yaml:"metric" doc:"sparkplug_b: metric name, e.g. Inputs/Temperature"`
	Type        string `yaml:"type" enum:",float,int,bool,string" doc:"convert the value to this type; empty keeps the payload's own type"`
	Unit        string `yaml:"unit"`
	Description string `yaml:"description"`
}

// Info describes the point for the catalog and the console.
func (p *Point) Info() ferry.PointInfo {
	src := p.Path
	switch {
	case p.Metric != "":
		src = p.Metric
	case src == "":
		src = "payload"
	}
	return ferry.PointInfo{Point: p.Name, Protocol: "mqtt", Source: src, Type: p.Type, Unit: p.Unit, Description: p.Description}
}

// Device is one configured MQTT device.
type Device struct {
	Name   string
	Config Config
	Points []Point
}

// Validate checks the device; paths are relative to the device entry
// ("mqtt.topic", "points[0].path").
func (d *Device) Validate() error {
	var errs setting.Errors
	c := &d.Config
	validateBroker(&errs, c)
	if c.KeepAlive < time.Second {
		errs.Add("mqtt.keepalive", "%v is below the minimum of 1s", c.KeepAlive)
	} else if c.KeepAlive > 65535*time.Second {
		errs.Add("mqtt.keepalive", "%v is above the maximum of 65535s", c.KeepAlive)
	}
	if c.ConnectTimeout < 100*time.Millisecond {
		errs.Add("mqtt.connect_timeout", "%v is below the minimum of 100ms", c.ConnectTimeout)
	}
	if c.MaxPayload < 16 {
		errs.Add("mqtt.max_payload", "%v is below the minimum of 16B", c.MaxPayload)
	}
	if c.QoS > 2 {
		errs.Add("mqtt.qos", "%d is not one of 0, 1, 2", c.QoS)
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		errs.Add("mqtt.tls", "cert and key go together")
	}
	if (c.TLS != TLS{}) && !isTLSBroker(c.Broker) {
		errs.Add("mqtt.tls", "is set but broker %q is not ssl://, tls://, mqtts:// or wss://", c.Broker)
	}
	if err := setting.OneOf(c.Format, FormatJSON, FormatValue, FormatSparkplug); err != nil {
		errs.Add("mqtt.format", "%v", err)
		return errs.Err()
	}
	if c.Format == FormatSparkplug {
		validateSparkplug(&errs, d)
	} else {
		validateTopic(&errs, d)
	}
	if c.Format == FormatJSON && c.Time.Path != "" {
		if _, err := parsePath(c.Time.Path); err != nil {
			errs.Add("mqtt.time.path", "%v", err)
		}
		if !validLayout(c.Time.Layout) {
			errs.Add("mqtt.time.layout", "%q is not one of rfc3339, unix_s, unix_ms, unix_ns, or a Go layout holding 2006", c.Time.Layout)
		}
	} else if c.Time.Path != "" {
		errs.Add("mqtt.time.path", "applies to format json only")
	}
	if len(d.Points) == 0 {
		errs.Add("points", "at least one point is required")
	}
	if c.Format == FormatValue && len(d.Points) > 1 {
		errs.Add("points", "format value takes exactly one point (the payload is one value); got %d", len(d.Points))
	}
	for i := range d.Points {
		validatePoint(&errs, c.Format, setting.Index("points", i), &d.Points[i])
	}
	return errs.Err()
}

func validateBroker(errs *setting.Errors, c *Config) {
	if c.Broker == "" {
		errs.Add("mqtt.broker", "is required")
	} else {
		validateBrokerURL(errs, "mqtt.broker", c.Broker)
	}
	seen := map[string]string{c.Broker: "mqtt.broker"}
	for i, fb := range c.FallbackBrokers {
		p := setting.Index("mqtt.fallback_brokers", i)
		if fb == "" {
			errs.Add(p, "is empty")
			continue
		}
		if !validateBrokerURL(errs, p, fb) {
			continue
		}
		if first, dup := seen[fb]; dup {
			errs.Add(p, "%q is already %s", fb, first)
			continue
		}
		seen[fb] = p
		if c.Broker != "" && isTLSBroker(fb) != isTLSBroker(c.Broker) {
			errs.Add(p, "%q and broker %q must both use TLS or both not: the tls settings apply to every broker of the connection", fb, c.Broker)
		}
	}
	if c.ClientID != "" && (len(c.ClientID) > 65535 || !utf8.ValidString(c.ClientID) || strings.ContainsAny(c.ClientID, "\x00+#")) {
		errs.Add("mqtt.client_id", "%q must be UTF-8 without NUL, + or #", c.ClientID)
	}
}

// validateBrokerURL checks one broker URL and reports whether it is usable.
func validateBrokerURL(errs *setting.Errors, path, broker string) bool {
	if !setting.CheckURLUserinfo(errs, path, broker, "mqtt.username and mqtt.password (or password_file)") {
		return false
	}
	u, err := url.Parse(broker)
	if err != nil {
		errs.Add(path, "%q is not a URL", broker)
		return false
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
	default:
		errs.Add(path, "scheme %q is not one of tcp, mqtt, ssl, tls, mqtts, ws, wss", u.Scheme)
		return false
	}
	ok := true
	if u.Hostname() == "" {
		errs.Add(path, "%q has no host", broker)
		ok = false
	} else if u.Port() == "" && u.Scheme != "ws" && u.Scheme != "wss" {
		errs.Add(path, "%q has no port (1883 for tcp, 8883 for TLS)", broker)
		ok = false
	}
	return ok
}

func isTLSBroker(broker string) bool {
	u, err := url.Parse(broker)
	if err != nil {
		return false
	}
	switch u.Scheme {
	case "ssl", "tls", "mqtts", "wss":
		return true
	}
	return false
}

func validateTopic(errs *setting.Errors, d *Device) {
	c := &d.Config
	if c.Sparkplug != (Sparkplug{}) {
		errs.Add("mqtt.sparkplug", "applies to format sparkplug_b only")
	}
	if c.Topic == "" {
		errs.Add("mqtt.topic", "is required")
		return
	}
	pat, err := compileTopic(c.Topic)
	if err != nil {
		errs.Add("mqtt.topic", "%v", err)
		return
	}
	if _, err := compileTemplate(c.Device, pat); err != nil {
		errs.Add("mqtt.device", "%v", err)
	}
}

func validateSparkplug(errs *setting.Errors, d *Device) {
	c := &d.Config
	if c.Topic != "" {
		errs.Add("mqtt.topic", "is set by mqtt.sparkplug for format sparkplug_b; leave it out")
	}
	if c.Device != "" {
		errs.Add("mqtt.device", "applies to formats json and value only")
	}
	check := func(key, v string, required bool) {
		switch {
		case v == "" && required:
			errs.Add("mqtt.sparkplug."+key, "is required for format sparkplug_b")
		case strings.ContainsAny(v, "/+#\x00"):
			errs.Add("mqtt.sparkplug."+key, "%q may not hold /, +, # or NUL", v)
		}
	}
	check("group_id", c.Sparkplug.GroupID, true)
	check("edge_node", c.Sparkplug.EdgeNode, true)
	check("device", c.Sparkplug.Device, false)
}

func validatePoint(errs *setting.Errors, format, p string, pt *Point) {
	if err := setting.OneOf(pt.Type, pointTypes...); err != nil {
		errs.Add(p+".type", "%q is not one of float, int, bool, string (or empty)", pt.Type)
	}
	switch format {
	case FormatJSON:
		if pt.Metric != "" {
			errs.Add(p+".metric", "applies to format sparkplug_b only")
		}
		if pt.Path == "" {
			errs.Add(p+".path", "is required for format json")
		} else if _, err := parsePath(pt.Path); err != nil {
			errs.Add(p+".path", "%v", err)
		}
	case FormatValue:
		if pt.Path != "" {
			errs.Add(p+".path", "format value has no paths: the whole payload is the value")
		}
		if pt.Metric != "" {
			errs.Add(p+".metric", "applies to format sparkplug_b only")
		}
	case FormatSparkplug:
		if pt.Path != "" {
			errs.Add(p+".path", "applies to format json only; use metric")
		}
		if pt.Metric == "" {
			errs.Add(p+".metric", "is required for format sparkplug_b")
		}
	}
}

func validLayout(l string) bool {
	switch l {
	case LayoutRFC3339, LayoutUnixS, LayoutUnixMS, LayoutUnixNS:
		return true
	}
	return strings.Contains(l, "2006")
}

// connSettings is what devices sharing a connection must agree on.
func (c *Config) connSettings() []struct{ key, val string } {
	return []struct{ key, val string }{
		{"fallback_brokers", strings.Join(c.FallbackBrokers, " ")},
		{"password", c.Password.Reveal()},
		{"tls.ca", c.TLS.CA},
		{"tls.cert", c.TLS.Cert},
		{"tls.key", c.TLS.Key},
		{"tls.server_name", c.TLS.ServerName},
		{"tls.insecure_skip_verify", fmt.Sprint(c.TLS.InsecureSkipVerify)},
		{"keepalive", c.KeepAlive.String()},
		{"connect_timeout", c.ConnectTimeout.String()},
	}
}

// brokers returns broker and the fallbacks, in the order they are tried.
func (c *Config) brokers() []string {
	return append([]string{c.Broker}, c.FallbackBrokers...)
}
