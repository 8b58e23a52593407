package uplink

import (
	"fmt"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/ferry-edge/ferry/internal/setting"
	"github.com/ferry-edge/ferry/uplink/sparkplug"
)

// Config is the `uplink:` section. An absent `nats:` block means no
// uplink: the gateway keeps its local alerts and its buffer, and forwards
// nothing.
//
// The section has two forms. The map form holds one block per kind
// (`uplink: {nats: {...}}`); the list form holds several upstreams, each
// named, with a filter (`uplink: [{name: cloud, nats: {...}}, ...]`),
// decoded into List. Entries gives both as one list.
type Config struct {
	NATS *NATSConfig `yaml:"nats" doc:"NATS JetStream uplink; omit to run without one"`
	// Sparkplug publishes the buffer as a Sparkplug B edge node
	// (uplink/sparkplug, docs/sparkplug.md).
	Sparkplug *sparkplug.Config `yaml:"sparkplug" doc:"Sparkplug B 3.0 edge node over MQTT (docs/sparkplug.md)"`

	// List is the list form; nil in the map form.
	List []Entry `yaml:"-"`
}

// ListForm is where the loader decodes the section when it is a list.
func (c *Config) ListForm() any { return &c.List }

// NATSConfig is the `uplink.nats:` block.
type NATSConfig struct {
	URLs []string `yaml:"urls" doc:"server URLs (nats://, tls://, ws://, wss://); any of them may be used, the client fails over between them"`

	// Authentication: at most one of creds, nkey, token, user/password.
	Creds    string         `yaml:"creds" doc:"NATS credentials file (JWT and NKey seed), re-read at every connect"`
	NKey     string         `yaml:"nkey" doc:"NKey user seed file, re-read at every connect"`
	Token    setting.Secret `yaml:"token" doc:"authentication token (or token_file)"`
	User     string         `yaml:"user" doc:"user name, with password"`
	Password setting.Secret `yaml:"password" doc:"password (or password_file), with user"`
	TLS      *TLSConfig     `yaml:"tls" doc:"TLS settings; tls:// URLs use TLS even without this block"`

	// Where the stream is: at most one of domain, api_prefix.
	Domain    string `yaml:"domain" doc:"JetStream domain of the stream (a hub's, reached through a leaf node); default: the domain of the server ferry connects to"`
	APIPrefix string `yaml:"api_prefix" doc:"JetStream API subject prefix of the stream's domain (e.g. $JS.hub.API), for accounts that import the API under their own prefix; not with domain"`

	Stream        string        `yaml:"stream" doc:"JetStream stream that must capture the telemetry and alert subjects"`
	CatalogStream string        `yaml:"catalog_stream" doc:"stream for catalog messages; default <stream>_CATALOG; may equal stream"`
	CreateStream  bool          `yaml:"create_stream" doc:"create the streams when missing and add ferry's subjects and limits to them"`
	Replicas      int           `yaml:"replicas" doc:"replicas of a created stream (1..5)"`
	MaxAge        time.Duration `yaml:"max_age" doc:"max age of messages in a created stream (0: no limit)"`

	DuplicateWindow time.Duration `yaml:"duplicate_window" doc:"dedupe window ferry relies on; set on created streams, checked on existing ones"`

	TelemetrySubject string `yaml:"telemetry_subject" doc:"subject template of telemetry; placeholders {site} {gateway} {device}"`
	AlertSubject     string `yaml:"alert_subject" doc:"subject template of alerts; placeholders {site} {gateway}"`
	CatalogSubject   string `yaml:"catalog_subject" doc:"subject template of the catalog; must hold {gateway}"`

	MaxInflight      int           `yaml:"max_inflight" doc:"messages published and not yet acknowledged, at most"`
	MaxInflightBytes setting.Size  `yaml:"max_inflight_bytes" doc:"bytes published and not yet acknowledged, at most"`
	BatchSize        int           `yaml:"batch_size" doc:"records taken from the buffer at once, at most"`
	BatchBytes       setting.Size  `yaml:"batch_bytes" doc:"bytes of records taken from the buffer at once, at most"`
	AckTimeout       time.Duration `yaml:"ack_timeout" doc:"how long to wait for a PubAck before publishing the record again"`
	FlushTimeout     time.Duration `yaml:"flush_timeout" doc:"at shutdown, how long to wait for outstanding PubAcks"`
	ConnectTimeout   time.Duration `yaml:"connect_timeout" doc:"timeout of one connection attempt and of stream requests"`
	ReconnectMax     time.Duration `yaml:"reconnect_max" doc:"longest wait between reconnect attempts (the backoff cap)"`

	Batch       BatchConfig `yaml:"batch" doc:"many telemetry records in one upstream message"`
	Compression string      `yaml:"compression" doc:"compression of batch and catalog message bodies: none, s2 or zstd"`

	LossCheck time.Duration `yaml:"loss_check" doc:"how often the stream is checked for acknowledged messages it lost (also after every reconnect), which are sent again from the buffer's retention (buffer.retain_acked); 0: after reconnects only"`
}

// BatchConfig is the `uplink.nats.batch:` block: how telemetry records
// are grouped into batch messages.
type BatchConfig struct {
	MaxBytes setting.Size  `yaml:"max_bytes" doc:"body bytes of one batch message, at most (capped by the server's max_payload); 0: one message per record"`
	MaxDelay time.Duration `yaml:"max_delay" doc:"how long a batch waits for more records before it is sent smaller"`
}

// Compression of batch message bodies, the values of compression and of
// the Ferry-Compression header.
const (
	CompressionNone = "none"
	CompressionS2   = "s2"
	CompressionZstd = "zstd"
)

// TLSConfig is the `uplink.nats.tls:` block. Files are re-read at every
// connect, so renewed certificates are picked up without a restart.
type TLSConfig struct {
	CA                 string `yaml:"ca" doc:"PEM file of the CAs that sign the server's certificate (default: system roots)"`
	Cert               string `yaml:"cert" doc:"PEM client certificate, with key"`
	Key                string `yaml:"key" doc:"PEM private key of cert"`
	ServerName         string `yaml:"server_name" doc:"name expected in the server's certificate (default: the URL's host)"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" doc:"do not verify the server's certificate (tests only)"`
}

// Defaults of the uplink.nats block.
const (
	DefaultStream           = "FERRY"
	DefaultTelemetrySubject = "ferry.{site}.{gateway}.telemetry.{device}"
	DefaultAlertSubject     = "ferry.{site}.{gateway}.alerts"
	DefaultCatalogSubject   = "ferry.{site}.{gateway}.catalog"
	DefaultBatchMaxBytes    = 256 << 10
	DefaultCompression      = CompressionZstd
)

// SetDefaults sets the defaults applied before decoding.
func (c *NATSConfig) SetDefaults() {
	c.Stream = DefaultStream
	c.Replicas = 1
	c.MaxAge = 7 * 24 * time.Hour
	c.DuplicateWindow = 2 * time.Minute
	c.TelemetrySubject = DefaultTelemetrySubject
	c.AlertSubject = DefaultAlertSubject
	c.CatalogSubject = DefaultCatalogSubject
	c.MaxInflight = 4096
	c.MaxInflightBytes = 16 << 20
	c.BatchSize = 512
	c.BatchBytes = 1 << 20
	c.AckTimeout = 10 * time.Second
	c.FlushTimeout = 5 * time.Second
	c.ConnectTimeout = 5 * time.Second
	c.ReconnectMax = 30 * time.Second
	c.Batch.MaxBytes = DefaultBatchMaxBytes
	c.Batch.MaxDelay = time.Second
	c.Compression = DefaultCompression
	c.LossCheck = 30 * time.Second
}

// DefaultNATSConfig returns a block with the defaults and the given URLs.
func DefaultNATSConfig(urls ...string) NATSConfig {
	var c NATSConfig
	c.SetDefaults()
	c.URLs = urls
	return c
}

// Validate checks the section; paths are relative to it ("nats.urls",
// "[1].name").
func (c *Config) Validate() error {
	var errs setting.Errors
	if c.List == nil {
		if c.NATS != nil {
			errs.Merge("nats", c.NATS.Validate())
		}
		if c.Sparkplug != nil {
			errs.Merge("sparkplug", c.Sparkplug.Validate())
		}
		return errs.Err()
	}
	if c.NATS != nil {
		errs.Add("nats", "set the map form or the list form of uplink, not both")
	}
	if c.Sparkplug != nil {
		errs.Add("sparkplug", "set the map form or the list form of uplink, not both")
	}
	if len(c.List) > MaxUpstreams {
		errs.Add("", "%d upstreams; at most %d", len(c.List), MaxUpstreams)
	}
	names := map[string]int{}
	for i := range c.List {
		e := &c.List[i]
		p := setting.Index("", i)
		var kinds []string
		if e.NATS != nil {
			kinds = append(kinds, KindNATS)
			errs.Merge(setting.Join(p, "nats"), e.NATS.Validate())
		}
		if e.Sparkplug != nil {
			kinds = append(kinds, KindSparkplug)
			errs.Merge(setting.Join(p, "sparkplug"), e.Sparkplug.Validate())
		}
		switch len(kinds) {
		case 0:
			errs.Add(p, "needs one upstream block (%s)", strings.Join(Kinds, ", "))
		case 1:
		default:
			errs.Add(p, "holds %s: one upstream block per entry", strings.Join(kinds, " and "))
		}
		name := e.Name
		if name == "" && len(kinds) == 1 {
			name = kinds[0]
		}
		switch {
		case e.Name != "" && !setting.ValidName(e.Name):
			errs.Add(setting.Join(p, "name"), "%q is not a valid name: 1 to 64 letters, digits, '_' or '-'", e.Name)
		case name == "":
		case names[name] > 0:
			what := "name"
			if e.Name == "" {
				what = "default name"
			}
			errs.Add(setting.Join(p, "name"), "%s %q is already used by uplink[%d]; names must be unique", what, name, names[name]-1)
		default:
			names[name] = i + 1
		}
		errs.Merge(setting.Join(p, "filter"), e.Filter.Validate())
	}
	return errs.Err()
}

// Upstream kinds: the key of each kind's block, and an entry's default
// name.
const (
	KindNATS      = "nats"
	KindSparkplug = "sparkplug"
)

// Kinds lists the upstream kinds.
var Kinds = []string{KindNATS, KindSparkplug}

// MaxUpstreams is how many upstreams the list form may hold (the buffer
// keeps a cursor per upstream, at most 8).
const MaxUpstreams = 8

// Entry is one upstream of the list form: a name, a filter, and the block
// of its kind (exactly one).
type Entry struct {
	Name   string      `yaml:"name" doc:"the upstream's name (letters, digits, _ and -; unique): its buffer cursor, metrics label and status; default its kind (nats)"`
	Filter Filter      `yaml:"filter" doc:"which records this upstream takes; default all"`
	NATS   *NATSConfig `yaml:"nats" doc:"a NATS JetStream upstream"`
	// Sparkplug is a Sparkplug B edge node (docs/sparkplug.md).
	Sparkplug *sparkplug.Config `yaml:"sparkplug" doc:"a Sparkplug B 3.0 edge node over MQTT (docs/sparkplug.md)"`
}

// Kind returns the kind of the entry's block ("" when it has none).
func (e *Entry) Kind() string {
	switch {
	case e.NATS != nil:
		return KindNATS
	case e.Sparkplug != nil:
		return KindSparkplug
	}
	return ""
}

// Entries returns the upstreams of the section, in order, each with its
// name (the kind's when the file gives none): the list form as it is, the
// map form's nats block as the entry "nats". A new kind adds its map
// form's block here.
func (c *Config) Entries() []Entry {
	if c.List != nil {
		out := make([]Entry, len(c.List))
		for i, e := range c.List {
			if e.Name == "" {
				e.Name = e.Kind()
			}
			out[i] = e
		}
		return out
	}
	var out []Entry
	if c.NATS != nil {
		out = append(out, Entry{Name: KindNATS, NATS: c.NATS})
	}
	if c.Sparkplug != nil {
		out = append(out, Entry{Name: KindSparkplug, Sparkplug: c.Sparkplug})
	}
	return out
}

// Control returns the NATS connection of the control plane (commands,
// fleet, ferry tail): the map form's nats block, or the first NATS
// upstream of the list; nil when there is none.
func (c *Config) Control() *NATSConfig {
	for _, e := range c.Entries() {
		if e.NATS != nil {
			return e.NATS
		}
	}
	return nil
}

// Filter is an upstream's `filter:` block: which records it takes. A
// record the filter excludes counts as acknowledged by that upstream.
// Devices filter whole records (a telemetry record holds one device's
// scans); points filter the samples inside a telemetry record, which is
// sent with only those (the same bytes at every send, so a replay keeps
// its id and bytes). An alert passes when its device (if any) and its
// point (if any) match.
type Filter struct {
	Devices   []string `yaml:"devices" doc:"globs (as path.Match: * ? [a-z]) of the device names whose records this upstream takes; empty: every device"`
	Points    []string `yaml:"points" doc:"globs of the point names this upstream takes; a telemetry record is sent with only those points; empty: every point"`
	Alerts    *bool    `yaml:"alerts" doc:"take alerts and audit events (default true)"`
	Telemetry *bool    `yaml:"telemetry" doc:"take telemetry (default true)"`
}

// Validate checks the globs.
func (f *Filter) Validate() error {
	var errs setting.Errors
	for _, g := range []struct {
		path  string
		globs []string
	}{{"devices", f.Devices}, {"points", f.Points}} {
		for i, p := range g.globs {
			if _, err := path.Match(p, ""); err != nil || p == "" {
				errs.Add(setting.Index(g.path, i), "%q is not a glob (as path.Match: * ? [a-z])", p)
			}
		}
	}
	return errs.Err()
}

// All reports whether the filter takes every record whole.
func (f *Filter) All() bool {
	return len(f.Devices) == 0 && len(f.Points) == 0 && f.TakesAlerts() && f.TakesTelemetry()
}

// TakesAlerts reports whether alerts pass.
func (f *Filter) TakesAlerts() bool { return f.Alerts == nil || *f.Alerts }

// TakesTelemetry reports whether telemetry passes.
func (f *Filter) TakesTelemetry() bool { return f.Telemetry == nil || *f.Telemetry }

// Device reports whether device passes.
func (f *Filter) Device(device string) bool { return matchAny(f.Devices, device) }

// Point reports whether point passes.
func (f *Filter) Point(point string) bool { return matchAny(f.Points, point) }

// PointsAll reports whether every point passes.
func (f *Filter) PointsAll() bool { return len(f.Points) == 0 }

func matchAny(globs []string, s string) bool {
	if len(globs) == 0 {
		return true
	}
	for _, g := range globs {
		if ok, _ := path.Match(g, s); ok {
			return true
		}
	}
	return false
}

// Validate checks the block; paths are relative to it ("urls[1]").
func (c *NATSConfig) Validate() error {
	var errs setting.Errors
	if len(c.URLs) == 0 {
		errs.Add("urls", "at least one server URL is required")
	}
	for i, u := range c.URLs {
		if err := checkURL(u); err != nil {
			errs.Add(setting.Index("urls", i), "%v", err)
		}
	}
	var auth []string
	if c.Creds != "" {
		auth = append(auth, "creds")
	}
	if c.NKey != "" {
		auth = append(auth, "nkey")
	}
	if c.Token != "" {
		auth = append(auth, "token")
	}
	if c.User != "" || c.Password != "" {
		auth = append(auth, "user/password")
		if c.User == "" {
			errs.Add("user", "is required with password")
		}
		if c.Password == "" {
			errs.Add("password", "is required with user")
		}
	}
	if len(auth) > 1 {
		errs.Add(authPath(c), "set one way to authenticate, not %s", strings.Join(auth, " and "))
	}
	if t := c.TLS; t != nil {
		if (t.Cert == "") != (t.Key == "") {
			errs.Add("tls", "cert and key go together")
		}
	}
	if c.Domain != "" && c.APIPrefix != "" {
		errs.Add("api_prefix", "set domain or api_prefix, not both: domain %q stands for api_prefix $JS.%s.API", c.Domain, c.Domain)
	}
	if c.Domain != "" && !validToken(c.Domain) {
		errs.Add("domain", "%q is not a JetStream domain: one subject token, no spaces, dots or wildcards", c.Domain)
	}
	if c.APIPrefix != "" {
		if err := checkAPIPrefix(c.APIPrefix); err != nil {
			errs.Add("api_prefix", "%v", err)
		}
	}
	if err := checkStreamName(c.Stream); err != nil {
		errs.Add("stream", "%v", err)
	}
	if c.CatalogStream != "" {
		if err := checkStreamName(c.CatalogStream); err != nil {
			errs.Add("catalog_stream", "%v", err)
		}
	}
	if c.LossCheck != 0 && c.LossCheck < time.Second {
		errs.Add("loss_check", "%v is below the minimum of 1s (0: after reconnects only)", c.LossCheck)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs.Add("replicas", "%d is out of range 1..5", c.Replicas)
	}
	if c.MaxAge < 0 {
		errs.Add("max_age", "%v is negative", c.MaxAge)
	} else if c.MaxAge > 0 && c.MaxAge < c.DuplicateWindow {
		errs.Add("max_age", "%v is shorter than duplicate_window %v", c.MaxAge, c.DuplicateWindow)
	}
	switch {
	case c.DuplicateWindow < time.Second:
		errs.Add("duplicate_window", "%v is below the minimum of 1s", c.DuplicateWindow)
	case c.DuplicateWindow <= c.AckTimeout:
		errs.Add("duplicate_window", "%v must be longer than ack_timeout %v, or a publish retried after a timeout escapes deduplication", c.DuplicateWindow, c.AckTimeout)
	}
	tmpls := []struct {
		path, tmpl string
		allowed    []string
	}{
		{"telemetry_subject", c.TelemetrySubject, []string{"site", "gateway", "device"}},
		{"alert_subject", c.AlertSubject, []string{"site", "gateway"}},
		{"catalog_subject", c.CatalogSubject, []string{"site", "gateway"}},
	}
	var parsed []template
	for _, t := range tmpls {
		p, err := parseTemplate(t.tmpl, t.allowed...)
		if err != nil {
			errs.Add(t.path, "%v", err)
			continue
		}
		parsed = append(parsed, p)
	}
	if len(parsed) == len(tmpls) {
		if !parsed[2].has("gateway") {
			errs.Add("catalog_subject", "%q must hold {gateway}: the stream keeps one catalog per subject", c.CatalogSubject)
		}
		for i := range parsed {
			for j := i + 1; j < len(parsed); j++ {
				if subjectsCollide(parsed[i].filter(), parsed[j].filter()) {
					errs.Add(tmpls[j].path, "%q overlaps %s %q: a subject must tell telemetry, alerts and catalog apart", tmpls[j].tmpl, tmpls[i].path, tmpls[i].tmpl)
				}
			}
		}
	}
	if c.MaxInflight < 1 || c.MaxInflight > 1<<20 {
		errs.Add("max_inflight", "%d is out of range 1..%d", c.MaxInflight, 1<<20)
	}
	if c.MaxInflightBytes < 64<<10 {
		errs.Add("max_inflight_bytes", "%v is below the minimum of 64KiB", c.MaxInflightBytes)
	}
	if c.BatchSize < 1 {
		errs.Add("batch_size", "%d is below the minimum of 1", c.BatchSize)
	}
	if c.BatchBytes < 1<<10 {
		errs.Add("batch_bytes", "%v is below the minimum of 1KiB", c.BatchBytes)
	}
	if c.Batch.MaxBytes != 0 && (c.Batch.MaxBytes < 4<<10 || c.Batch.MaxBytes > 64<<20) {
		errs.Add("batch.max_bytes", "%v is out of range 4KiB..64MiB (or 0: no batching)", c.Batch.MaxBytes)
	}
	if c.Batch.MaxDelay < 0 || c.Batch.MaxDelay > time.Minute {
		errs.Add("batch.max_delay", "%v is out of range 0..1m", c.Batch.MaxDelay)
	}
	switch c.Compression {
	case CompressionNone, CompressionS2, CompressionZstd:
	default:
		errs.Add("compression", "%q is not one of none, s2, zstd", c.Compression)
	}
	errs.AtLeast("ack_timeout", c.AckTimeout, 10*time.Millisecond)
	errs.AtLeast("flush_timeout", c.FlushTimeout, 10*time.Millisecond)
	errs.AtLeast("connect_timeout", c.ConnectTimeout, 10*time.Millisecond)
	errs.AtLeast("reconnect_max", c.ReconnectMax, 10*time.Millisecond)
	return errs.Err()
}

// ValidateGateway checks the subject templates against the gateway's id
// and site: a template that uses {site} needs a site. Paths are relative
// to the uplink section. The loader calls it with the gateway section,
// which Validate does not see.
func (c *Config) ValidateGateway(id, site string) error {
	var errs setting.Errors
	if c.List == nil {
		if c.NATS != nil {
			errs.Merge("nats", c.NATS.validateGateway(id, site))
		}
		if c.Sparkplug != nil {
			errs.Merge("sparkplug", c.Sparkplug.ValidateGateway(id))
		}
		return errs.Err()
	}
	for i, e := range c.List {
		if e.NATS != nil {
			errs.Merge(setting.Join(setting.Index("", i), "nats"), e.NATS.validateGateway(id, site))
		}
		if e.Sparkplug != nil {
			errs.Merge(setting.Join(setting.Index("", i), "sparkplug"), e.Sparkplug.ValidateGateway(id))
		}
	}
	return errs.Err()
}

func (c *NATSConfig) validateGateway(id, site string) error {
	var errs setting.Errors
	for _, t := range []struct{ path, tmpl string }{
		{"telemetry_subject", c.TelemetrySubject},
		{"alert_subject", c.AlertSubject},
		{"catalog_subject", c.CatalogSubject},
	} {
		p, err := parseTemplate(t.tmpl, "site", "gateway", "device")
		if err != nil {
			continue // reported by Validate
		}
		if p.has("site") && !validToken(site) {
			errs.Add(t.path, "%q uses {site}, but gateway.site is not set", t.tmpl)
		}
		if p.has("gateway") && !validToken(id) {
			errs.Add(t.path, "%q uses {gateway}, but gateway.id is not a valid token", t.tmpl)
		}
	}
	return errs.Err()
}

// catalogStream returns the stream that holds the catalog.
func (c *NATSConfig) catalogStream() string {
	if c.CatalogStream != "" {
		return c.CatalogStream
	}
	return c.Stream + "_CATALOG"
}

func authPath(c *NATSConfig) string {
	switch {
	case c.Creds != "":
		return "creds"
	case c.NKey != "":
		return "nkey"
	}
	return "token"
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL", s)
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return fmt.Errorf("%q: scheme %q is not one of nats, tls, ws, wss", s, u.Scheme)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if u.User != nil {
		return fmt.Errorf("%q holds credentials; use user/password, token or creds instead", redactURL(u))
	}
	return nil
}

// redactURL prints u without its password, or without its user name when
// that is a token (nats://TOKEN@host).
func redactURL(u *url.URL) string {
	if u.User == nil {
		return u.String()
	}
	c := *u
	if _, has := u.User.Password(); has {
		c.User = url.UserPassword(u.User.Username(), "redacted")
	} else {
		c.User = url.User("redacted")
	}
	return c.String()
}

// checkAPIPrefix accepts a subject without wildcards, with or without
// the trailing dot nats.go adds.
func checkAPIPrefix(s string) error {
	for _, tok := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if !validToken(tok) {
			return fmt.Errorf("%q is not a subject prefix: tokens separated by single dots, no spaces or wildcards", s)
		}
	}
	return nil
}

// checkStreamName accepts what JetStream accepts as a stream name.
func checkStreamName(s string) error {
	if s == "" {
		return fmt.Errorf("is required")
	}
	if len(s) > 255 {
		return fmt.Errorf("%q is longer than 255 bytes", s)
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || strings.ContainsRune(`.*>/\`, r) {
			return fmt.Errorf("%q may not hold spaces, control characters or any of . * > / \\", s)
		}
	}
	return nil
}
