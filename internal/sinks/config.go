package sinks

import (
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/ferry-edge/ferry/internal/setting"
)

// Config is the `alerts:` section: where alerts go on the gateway itself.
// The log sink is on by default; MQTT and the webhook are on when their
// block is present. The SSE stream (GET /api/alerts/stream) is always
// available on the local HTTP listener.
type Config struct {
	Log     LogConfig      `yaml:"log"`
	MQTT    *MQTTConfig    `yaml:"mqtt"`
	Webhook *WebhookConfig `yaml:"webhook"`
	Stream  StreamConfig   `yaml:"stream"`
}

// LogConfig writes every transition to ferry's log.
type LogConfig struct {
	Enabled bool `yaml:"enabled" doc:"log every alert transition (default true)"`
	Queue   int  `yaml:"queue" doc:"alerts waiting to be logged before new ones are dropped"`
}

// SetDefaults sets the defaults applied before decoding.
func (c *LogConfig) SetDefaults() { c.Enabled, c.Queue = true, 1000 }

// MQTTConfig publishes alerts to a broker: each transition on Topic (QoS
// 1, not retained) and, for HMIs, the active alerts of each rule retained
// on ActiveTopic/<rule> (an empty retained message when none is active).
type MQTTConfig struct {
	Broker      string         `yaml:"broker" doc:"tcp://, ssl://, ws:// or wss:// URL of the broker"`
	Topic       string         `yaml:"topic" doc:"topic for every transition (QoS 1)"`
	ActiveTopic string         `yaml:"active_topic" doc:"prefix of the retained per-rule active-alerts topics (default <topic>/active)"`
	ClientID    string         `yaml:"client_id" doc:"MQTT client id (default <gateway>-alerts)"`
	Username    string         `yaml:"username"`
	Password    setting.Secret `yaml:"password"`
	TLS         *TLSConfig     `yaml:"tls"`
	KeepAlive   time.Duration  `yaml:"keep_alive"`
	Timeout     time.Duration  `yaml:"timeout" doc:"connect and publish timeout"`
	Attempts    int            `yaml:"attempts" doc:"publish attempts on a live connection before an alert is dropped"`
	Queue       int            `yaml:"queue" doc:"alerts waiting to be published before new ones are dropped"`
}

// SetDefaults sets the defaults applied before decoding.
func (c *MQTTConfig) SetDefaults() {
	c.Topic = "ferry/alerts"
	c.KeepAlive = 30 * time.Second
	c.Timeout = 10 * time.Second
	c.Attempts = 5
	c.Queue = 1000
}

// TLSConfig configures TLS to a broker.
type TLSConfig struct {
	CAFile             string `yaml:"ca_file" doc:"PEM file of the CAs to trust (default: the system's)"`
	CertFile           string `yaml:"cert_file" doc:"client certificate (PEM), with key_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" doc:"do not check the broker's certificate (testing only)"`
}

// WebhookConfig POSTs each transition as JSON.
type WebhookConfig struct {
	URL      string                    `yaml:"url"`
	Headers  map[string]setting.Secret `yaml:"headers" doc:"extra request headers (e.g. Authorization); values are not logged"`
	Timeout  time.Duration             `yaml:"timeout" doc:"per request"`
	Attempts int                       `yaml:"attempts" doc:"tries per alert before it is dropped"`
	RetryMin time.Duration             `yaml:"retry_min" doc:"first retry delay (doubles up to retry_max, jittered)"`
	RetryMax time.Duration             `yaml:"retry_max"`
	Queue    int                       `yaml:"queue" doc:"alerts waiting to be posted before new ones are dropped"`
}

// SetDefaults sets the defaults applied before decoding.
func (c *WebhookConfig) SetDefaults() {
	c.Timeout = 5 * time.Second
	c.Attempts = 5
	c.RetryMin = time.Second
	c.RetryMax = 30 * time.Second
	c.Queue = 1000
}

// StreamConfig bounds the Server-Sent Events stream.
type StreamConfig struct {
	Buffer    int           `yaml:"buffer" doc:"alerts buffered per client; a client that falls this far behind is disconnected"`
	Clients   int           `yaml:"clients" doc:"most clients at once"`
	Heartbeat time.Duration `yaml:"heartbeat" doc:"comment line sent when idle, so proxies keep the stream open"`
}

// SetDefaults sets the defaults applied before decoding.
func (c *StreamConfig) SetDefaults() { c.Buffer, c.Clients, c.Heartbeat = 64, 32, 15*time.Second }

// SetDefaults sets the defaults applied before decoding.
func (c *Config) SetDefaults() {
	c.Log.SetDefaults()
	c.Stream.SetDefaults()
}

// Validate checks the section; paths are relative to it.
func (c *Config) Validate() error {
	var errs setting.Errors
	positive(&errs, "log.queue", c.Log.Queue)
	if m := c.MQTT; m != nil {
		if m.Broker == "" {
			errs.Add("mqtt.broker", "is required (e.g. tcp://127.0.0.1:1883)")
		} else if !setting.CheckURLUserinfo(&errs, "mqtt.broker", m.Broker, "mqtt.username and mqtt.password (or password_file)") {
			// Refused: printed anywhere, the password would leak.
		} else if u, err := url.Parse(m.Broker); err != nil || u.Host == "" {
			errs.Add("mqtt.broker", "%q is not a URL (want e.g. tcp://127.0.0.1:1883)", m.Broker)
		} else if err := setting.OneOf(u.Scheme, "tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss"); err != nil {
			errs.Add("mqtt.broker", "scheme %v", err)
		}
		topic(&errs, "mqtt.topic", m.Topic, true)
		topic(&errs, "mqtt.active_topic", m.ActiveTopic, false)
		if m.TLS != nil && (m.TLS.CertFile == "") != (m.TLS.KeyFile == "") {
			errs.Add("mqtt.tls", "cert_file and key_file go together")
		}
		if m.Timeout <= 0 {
			errs.Add("mqtt.timeout", "must be positive")
		}
		if m.KeepAlive < 0 {
			errs.Add("mqtt.keep_alive", "%v is negative", m.KeepAlive)
		}
		positive(&errs, "mqtt.attempts", m.Attempts)
		positive(&errs, "mqtt.queue", m.Queue)
	}
	if w := c.Webhook; w != nil {
		if w.URL == "" {
			errs.Add("webhook.url", "is required")
		} else if !setting.CheckURLUserinfo(&errs, "webhook.url", w.URL, "webhook.headers (Authorization)") {
			// Refused: printed anywhere, the password would leak.
		} else if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs.Add("webhook.url", "%q is not an http:// or https:// URL", w.URL)
		}
		keys := make([]string, 0, len(w.Headers))
		for k := range w.Headers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if k == "" || strings.ContainsAny(k, " :\r\n") {
				errs.Add("webhook.headers."+k, "%q is not a header name", k)
			}
		}
		if w.Timeout <= 0 {
			errs.Add("webhook.timeout", "must be positive")
		}
		if w.RetryMin <= 0 {
			errs.Add("webhook.retry_min", "must be positive")
		}
		if w.RetryMax < w.RetryMin {
			errs.Add("webhook.retry_max", "%v is less than retry_min (%v)", w.RetryMax, w.RetryMin)
		}
		positive(&errs, "webhook.attempts", w.Attempts)
		positive(&errs, "webhook.queue", w.Queue)
	}
	positive(&errs, "stream.buffer", c.Stream.Buffer)
	positive(&errs, "stream.clients", c.Stream.Clients)
	if c.Stream.Heartbeat <= 0 {
		errs.Add("stream.heartbeat", "must be positive")
	}
	return errs.Err()
}

func positive(errs *setting.Errors, path string, n int) {
	if n < 1 {
		errs.Add(path, "%d must be at least 1", n)
	}
}

func topic(errs *setting.Errors, path, t string, required bool) {
	switch {
	case t == "":
		if required {
			errs.Add(path, "is required")
		}
	case strings.ContainsAny(t, "+#\x00"):
		errs.Add(path, "%q holds a wildcard (+ or #); publish topics cannot", t)
	case strings.HasSuffix(t, "/"):
		errs.Add(path, "%q ends with /", t)
	}
}
