package sparkplug

import (
	"errors"
	"strings"
	"testing"

	"github.com/ferry-edge/ferry"
)

// TestConfigValidate: each bad setting is refused with its path.
func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string // a path and message fragment; "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"no broker", func(c *Config) { c.Brokers = nil }, "brokers: at least one"},
		{"bad scheme", func(c *Config) { c.Brokers = []string{"nats://h:4222"} }, `brokers[0]: "nats://h:4222": scheme`},
		{"credentials in URL", func(c *Config) { c.Brokers = []string{"tcp://u:p@h:1883"} }, "brokers[0]"},
		{"mixed TLS", func(c *Config) { c.Brokers = []string{"ssl://a:8883", "tcp://b:1883"} }, "brokers: mixes TLS"},
		{"no group", func(c *Config) { c.GroupID = "" }, "group_id: is required"},
		{"group with slash", func(c *Config) { c.GroupID = "a/b" }, "group_id"},
		{"edge node with wildcard", func(c *Config) { c.EdgeNodeID = "gw+" }, "edge_node_id"},
		{"host with hash", func(c *Config) { c.PrimaryHostID = "h#" }, "primary_host_id"},
		{"device filter", func(c *Config) { c.Devices = []string{"ok", "x/y"} }, "devices[1]"},
		{"name bound", func(c *Config) { c.MaxMetricName = 8 }, "max_metric_name"},
		{"keepalive", func(c *Config) { c.KeepAlive = 500_000_000 }, "keepalive"},
		{"password without user", func(c *Config) { c.Password = "x" }, "username: is required"},
		{"tls cert without key", func(c *Config) { c.TLS = &TLSConfig{Cert: "c.pem"} }, "tls: cert and key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig("plant", "tcp://127.0.0.1:1883")
			tc.mod(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate() = %v, want %q", err, tc.wantErr)
			}
			if _, err := New(c, idleSource{}, Options{Gateway: "gw"}); !errors.Is(err, ferry.ErrInvalidConfig) {
				t.Fatalf("New() = %v, want ErrInvalidConfig", err)
			}
		})
	}
	c := DefaultConfig("plant", "tcp://127.0.0.1:1883")
	if err := c.ValidateGateway("gw/1"); err == nil || !strings.Contains(err.Error(), "edge_node_id") {
		t.Errorf("ValidateGateway(gw/1) = %v, want an edge_node_id error", err)
	}
	c.EdgeNodeID = "gw1"
	if err := c.ValidateGateway("gw/1"); err != nil {
		t.Errorf("ValidateGateway with edge_node_id set = %v", err)
	}
}
