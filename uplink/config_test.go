package uplink

import (
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/setting"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*NATSConfig)
		wantErr string // "path: message fragment"; "" for valid
	}{
		{"defaults", func(*NATSConfig) {}, ""},
		{"no urls", func(c *NATSConfig) { c.URLs = nil }, "urls: at least one"},
		{"bad scheme", func(c *NATSConfig) { c.URLs = []string{"nats://a:4222", "http://b"} }, `urls[1]: "http://b": scheme "http"`},
		{"no host", func(c *NATSConfig) { c.URLs = []string{"nats://:4222"} }, "urls[0]: \"nats://:4222\" has no host"},
		{"password in url", func(c *NATSConfig) { c.URLs = []string{"nats://u:secret@h:4222"} }, "urls[0]: \"nats://u:redacted@h:4222\" holds credentials"},
		{"two auths", func(c *NATSConfig) { c.Creds, c.Token = "/x.creds", "t" }, "creds: set one way to authenticate, not creds and token"},
		{"user without password", func(c *NATSConfig) { c.User = "gw" }, "password: is required with user"},
		{"tls cert without key", func(c *NATSConfig) { c.TLS = &TLSConfig{Cert: "/c.pem"} }, "tls: cert and key go together"},
		{"domain", func(c *NATSConfig) { c.Domain = "hub" }, ""},
		{"api prefix", func(c *NATSConfig) { c.APIPrefix = "$JS.hub.API" }, ""},
		{"domain and api prefix", func(c *NATSConfig) { c.Domain, c.APIPrefix = "hub", "$JS.hub.API" }, "api_prefix: set domain or api_prefix, not both"},
		{"domain with a dot", func(c *NATSConfig) { c.Domain = "hub.eu" }, `domain: "hub.eu" is not a JetStream domain`},
		{"api prefix wildcard", func(c *NATSConfig) { c.APIPrefix = "$JS.*.API" }, `api_prefix: "$JS.*.API" is not a subject prefix`},
		{"api prefix empty token", func(c *NATSConfig) { c.APIPrefix = "$JS..API" }, `api_prefix: "$JS..API" is not a subject prefix`},
		{"stream name", func(c *NATSConfig) { c.Stream = "ferry.data" }, `stream: "ferry.data" may not hold`},
		{"catalog stream name", func(c *NATSConfig) { c.CatalogStream = "a b" }, `catalog_stream: "a b" may not hold`},
		{"replicas", func(c *NATSConfig) { c.Replicas = 7 }, "replicas: 7 is out of range 1..5"},
		{"window vs ack timeout", func(c *NATSConfig) { c.DuplicateWindow = 5 * time.Second }, "duplicate_window: 5s must be longer than ack_timeout 10s"},
		{"max age below window", func(c *NATSConfig) { c.MaxAge = time.Minute }, "max_age: 1m0s is shorter than duplicate_window 2m0s"},
		{"template space", func(c *NATSConfig) { c.TelemetrySubject = "ferry.{gateway}. x" }, `telemetry_subject: "ferry.{gateway}. x" holds whitespace`},
		{"template empty token", func(c *NATSConfig) { c.AlertSubject = "ferry..alerts" }, "alert_subject: \"ferry..alerts\" has an empty token"},
		{"template trailing dot", func(c *NATSConfig) { c.AlertSubject = "ferry.alerts." }, "has an empty token"},
		{"template wildcard", func(c *NATSConfig) { c.TelemetrySubject = "ferry.*.{device}" }, "telemetry_subject: \"ferry.*.{device}\" holds a wildcard"},
		{"template gt", func(c *NATSConfig) { c.AlertSubject = "ferry.>" }, "holds a wildcard (>)"},
		{"unknown placeholder", func(c *NATSConfig) { c.TelemetrySubject = "ferry.{plant}.{device}" }, "unknown placeholder {plant}"},
		{"device in alerts", func(c *NATSConfig) { c.AlertSubject = "ferry.{gateway}.{device}" }, "alert_subject: \"ferry.{gateway}.{device}\": unknown placeholder {device}"},
		{"partial placeholder", func(c *NATSConfig) { c.TelemetrySubject = "ferry.gw-{gateway}.{device}" }, "must be a whole token"},
		{"twice", func(c *NATSConfig) { c.TelemetrySubject = "ferry.{device}.{device}" }, "{device} more than once"},
		{"catalog without gateway", func(c *NATSConfig) { c.CatalogSubject = "ferry.{site}.catalog" }, "catalog_subject: \"ferry.{site}.catalog\" must hold {gateway}"},
		{"overlap", func(c *NATSConfig) {
			c.TelemetrySubject = "ferry.{site}.{gateway}.{device}"
			c.AlertSubject = "ferry.{site}.{gateway}.alerts"
		},
			"alert_subject: \"ferry.{site}.{gateway}.alerts\" overlaps telemetry_subject"},
		{"own subjects", func(c *NATSConfig) {
			c.TelemetrySubject = "plant.{gateway}.t.{device}"
			c.AlertSubject = "plant.{gateway}.a"
			c.CatalogSubject = "plant.{gateway}.c"
		}, ""},
		{"window", func(c *NATSConfig) { c.MaxInflight = 0 }, "max_inflight: 0 is out of range"},
		{"window bytes", func(c *NATSConfig) { c.MaxInflightBytes = 1024 }, "max_inflight_bytes: 1KiB is below the minimum of 64KiB"},
		{"batch", func(c *NATSConfig) { c.BatchSize = 0 }, "batch_size: 0 is below"},
		{"batch bytes", func(c *NATSConfig) { c.BatchBytes = 10 }, "batch_bytes: 10B is below"},
		{"timeouts", func(c *NATSConfig) { c.FlushTimeout = 0 }, "flush_timeout: 0s is below the minimum of 10ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultNATSConfig("nats://127.0.0.1:4222")
			tt.mod(&c)
			up := Config{NATS: &c}
			err := up.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: nil, want %q", tt.wantErr)
			}
			found := false
			for _, fe := range setting.Flatten(err) {
				if strings.Contains(fe.Error(), tt.wantErr) {
					found = true
				}
				if !strings.HasPrefix(fe.Path, "nats") {
					t.Errorf("path %q is not relative to the uplink section", fe.Path)
				}
			}
			if !found {
				t.Fatalf("Validate: %v\nwant an error containing %q", err, tt.wantErr)
			}
		})
	}
	if err := (&Config{}).Validate(); err != nil {
		t.Errorf("absent nats block: %v", err)
	}
}

func TestSubjectsFor(t *testing.T) {
	c := DefaultNATSConfig("nats://h:4222")
	s, err := c.SubjectsFor("lyon", "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	want := Subjects{Telemetry: "ferry.lyon.gw-1.telemetry.*", Alerts: "ferry.lyon.gw-1.alerts", Catalog: "ferry.lyon.gw-1.catalog"}
	if s != want {
		t.Errorf("SubjectsFor = %+v, want %+v", s, want)
	}
	if _, err := c.SubjectsFor("", "gw"); err == nil || !strings.Contains(err.Error(), "gateway.site") {
		t.Errorf("empty site: %v, want an error naming gateway.site", err)
	}
	c.TelemetrySubject, c.AlertSubject, c.CatalogSubject = "t.{gateway}.{device}", "a.{gateway}", "c.{gateway}"
	if _, err := c.SubjectsFor("", "gw"); err != nil {
		t.Errorf("templates without {site} and an empty site: %v", err)
	}
}

func TestSubjectMatch(t *testing.T) {
	tests := []struct {
		filter, pattern string
		covers, collide bool
	}{
		{"ferry.>", "ferry.lyon.gw.telemetry.*", true, true},
		{"ferry.*.*.telemetry.*", "ferry.lyon.gw.telemetry.*", true, true},
		{"ferry.lyon.gw.telemetry.press3", "ferry.lyon.gw.telemetry.*", false, true},
		{"ferry.*.*.alerts", "ferry.lyon.gw.alerts", true, true},
		{"ferry.*.*.alerts", "ferry.lyon.gw.catalog", false, false},
		{"ferry.*", "ferry.lyon.gw.alerts", false, false},
		{">", "a.b", true, true},
		{"a.b.c", "a.b", false, false},
		{"a.>", "a", false, false},
	}
	for _, tt := range tests {
		if got := subjectCovers(tt.filter, tt.pattern); got != tt.covers {
			t.Errorf("subjectCovers(%q, %q) = %v", tt.filter, tt.pattern, got)
		}
		if got := subjectsCollide(tt.filter, tt.pattern); got != tt.collide {
			t.Errorf("subjectsCollide(%q, %q) = %v", tt.filter, tt.pattern, got)
		}
	}
}

func TestTelemetrySubjects(t *testing.T) {
	ts := newTelemetrySubjects("ferry.lyon.gw.telemetry.*", true)
	if s, ok := ts.subject("press3"); !ok || s != "ferry.lyon.gw.telemetry.press3" {
		t.Errorf("subject = %q, %v", s, ok)
	}
	for _, bad := range []string{"", "a.b", "a b", "*", ">"} {
		if _, ok := ts.subject(bad); ok {
			t.Errorf("device %q accepted as a subject token", bad)
		}
	}
	ts = newTelemetrySubjects("*.y", true)
	if s, _ := ts.subject("d"); s != "d.y" {
		t.Errorf("leading device: %q", s)
	}
	ts = newTelemetrySubjects("all.telemetry", false)
	if s, _ := ts.subject("d"); s != "all.telemetry" {
		t.Errorf("no device placeholder: %q", s)
	}
}

// FuzzTemplate: parseTemplate never panics, and an accepted template
// filled with valid tokens is a valid publish subject.
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{DefaultTelemetrySubject, DefaultAlertSubject, "a..b", "{", "{}", "a.{device", "x.{device}.{device}", "\u00a0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tp, err := parseTemplate(s, "site", "gateway", "device")
		if err != nil {
			return
		}
		subj := tp.fill(map[string]string{"site": "s", "gateway": "g", "device": "d"})
		for _, tok := range strings.Split(subj, ".") {
			if !validToken(tok) {
				t.Fatalf("template %q gives subject %q with bad token %q", s, subj, tok)
			}
		}
	})
}

func TestValidateGateway(t *testing.T) {
	c := DefaultNATSConfig("nats://h:4222")
	up := Config{NATS: &c}
	err := up.ValidateGateway("gw", "")
	if err == nil || !strings.Contains(err.Error(), "nats.telemetry_subject") || !strings.Contains(err.Error(), "gateway.site is not set") {
		t.Errorf("no site: %v", err)
	}
	if err := up.ValidateGateway("gw", "lyon"); err != nil {
		t.Errorf("with site: %v", err)
	}
	if err := (&Config{}).ValidateGateway("gw", ""); err != nil {
		t.Errorf("no uplink: %v", err)
	}
}
