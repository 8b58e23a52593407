package sinks

// Config is the `alerts:` section: where alerts go on the gateway itself.
type Config struct {
	MQTT    *MQTTConfig    `yaml:"mqtt"`
	Webhook *WebhookConfig `yaml:"webhook"`
}

// MQTTConfig publishes alerts to a broker.
type MQTTConfig struct {
	Broker string `yaml:"broker"`
	Topic  string `yaml:"topic"`
}

// WebhookConfig POSTs alerts as JSON.
type WebhookConfig struct {
	URL string `yaml:"url"`
}

// Validate checks the section; paths are relative to it.
func (c *Config) Validate() error { return nil }
