package opcua

import (
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/setting"
)

// The security policies ferry speaks, weakest first. The deprecated
// Basic128Rsa15 and Basic256 are not offered: a server that has nothing
// better must be upgraded or run with None and allow_insecure.
var policyNames = []string{"None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"}

// Config is the `opcua:` block of a device.
type Config struct {
	Endpoint string `yaml:"endpoint" doc:"server endpoint, opc.tcp://host:port[/path]"`
	// SecurityPolicy empty means the strongest policy the server offers
	// in SecurityMode.
	SecurityPolicy string `yaml:"security_policy" enum:",None,Basic256Sha256,Aes128_Sha256_RsaOaep,Aes256_Sha256_RsaPss" doc:"empty: the strongest the server offers"`
	SecurityMode   string `yaml:"security_mode" enum:"Sign,SignAndEncrypt,None" doc:"default SignAndEncrypt; ignored with security_policy None"`
	// AllowInsecure permits security policy None (no signing, no
	// encryption, passwords in clear). Without it None is refused.
	AllowInsecure bool `yaml:"allow_insecure" doc:"permit security policy None"`
	Auth          Auth `yaml:"auth"`
	// CheckServerHost and CheckServerURI check that the (trusted) server
	// certificate names the endpoint's host and the application URI the
	// server announces (identity.go).
	CheckServerHost bool `yaml:"check_server_host" doc:"default true: the server certificate must name the endpoint's host (DNS name or IP address)"`
	CheckServerURI  bool `yaml:"check_server_uri" doc:"default true: the server certificate's URI must be the application URI the server announces"`

	Mode string `yaml:"mode" enum:"subscribe,poll"`
	// Interval is the poll interval (poll) or the publishing interval of
	// the subscription (subscribe); it is also how often Bad samples are
	// emitted while the server is unreachable.
	Interval time.Duration `yaml:"interval" doc:"poll interval, or publishing interval in subscribe mode"`
	// SamplingInterval is how often the server samples each monitored
	// item; 0 means "the publishing interval".
	SamplingInterval time.Duration `yaml:"sampling_interval" doc:"subscribe: server-side sampling; 0 = the interval"`
	QueueSize        uint32        `yaml:"queue_size" doc:"subscribe: values the server queues per item between publishes"`
	Deadband         Deadband      `yaml:"deadband" doc:"subscribe: default deadband of every point"`
	Timeouts         Timeouts      `yaml:"timeouts"`
	// Methods declares the methods commands may call (method.go).
	Methods []Method `yaml:"methods" doc:"methods commands may call, each with its typed input and output arguments"`
	// Events subscribes to the server's events and alarms (events.go).
	Events *Events `yaml:"events" doc:"subscribe to events and Alarms & Conditions: notifiers, filter, severity table (docs/alarms.md)"`
}

// Auth selects the user identity: anonymous (nothing set), a user name
// and password, or an X.509 user certificate and its private key.
type Auth struct {
	Username string         `yaml:"username"`
	Password setting.Secret `yaml:"password"`
	CertFile string         `yaml:"cert_file" doc:"X.509 user certificate (DER or PEM), absolute path"`
	KeyFile  string         `yaml:"key_file" doc:"RSA private key of cert_file (PEM or DER), absolute path"`
}

// Kind returns "anonymous", "username" or "certificate".
func (a *Auth) Kind() string {
	switch {
	case a.CertFile != "":
		return "certificate"
	case a.Username != "":
		return "username"
	}
	return "anonymous"
}

// Deadband is a data-change filter: a new value is reported only when it
// differs from the last reported one by more than Value (absolute), or by
// more than Value percent of the node's EURange (percent).
type Deadband struct {
	Type  string  `yaml:"type" enum:"none,absolute,percent"`
	Value float64 `yaml:"value"`
}

// SetDefaults sets the defaults applied before decoding.
func (d *Deadband) SetDefaults() { d.Type = "none" }

// Timeouts bound every network step.
type Timeouts struct {
	Connect time.Duration `yaml:"connect" doc:"TCP connect, secure channel and session setup"`
	Request time.Duration `yaml:"request" doc:"one request (read, create monitored items, …)"`
	Session time.Duration `yaml:"session" doc:"session timeout requested from the server"`
	// Keepalive is how often a subscribed session that receives nothing
	// is probed; a failed probe counts as a lost connection.
	Keepalive time.Duration `yaml:"keepalive" doc:"subscribe: probe a quiet session this often"`
}

// SetDefaults sets the defaults applied before decoding.
func (t *Timeouts) SetDefaults() {
	t.Connect = 10 * time.Second
	t.Request = 10 * time.Second
	t.Session = time.Minute
	t.Keepalive = 10 * time.Second
}

// SetDefaults sets the defaults applied before decoding.
func (c *Config) SetDefaults() {
	c.SecurityMode = "SignAndEncrypt"
	c.CheckServerHost = true
	c.CheckServerURI = true
	c.Mode = "subscribe"
	c.Interval = time.Second
	c.QueueSize = 1
	c.Deadband.SetDefaults()
	c.Timeouts.SetDefaults()
}

// Point is one node read from the server.
type Point struct {
	Name string `yaml:"name"`
	// Node is the node id: ns=2;s=Boiler.Pressure, i=2258, g=<guid>,
	// b=<base64>, or nsu=<namespace URI>;s=… (see ParseNodeID).
	Node        string `yaml:"node" doc:"ns=<n>;s=… | i=… | g=… | b=… | nsu=<uri>;s=…"`
	Unit        string `yaml:"unit"`
	Description string `yaml:"description"`
	// Index selects one element of an array value. Without it an array
	// value is refused (Bad, reason "array value").
	Index *int `yaml:"index" doc:"element of an array value (0-based)"`
	// Deadband overrides the device's deadband for this point
	// ({type: none} switches it off).
	Deadband *Deadband `yaml:"deadband"`
	// Write declares the point writable by commands (write.go).
	Write *ferry.WriteSpec `yaml:"write" doc:"declares the point writable by commands: limits, interlock, rate limit"`
}

// Info describes the point for the catalog and the console.
func (p *Point) Info() ferry.PointInfo {
	src := p.Node
	if p.Index != nil {
		src += "[" + strconv.Itoa(*p.Index) + "]"
	}
	return ferry.PointInfo{Point: p.Name, Protocol: "opcua", Source: src, Unit: p.Unit, Description: p.Description, Write: p.Write}
}

// Device is one configured OPC UA device.
type Device struct {
	Name   string
	Config Config
	Points []Point
}

// Validate checks the device; paths are relative to the device entry.
func (d *Device) Validate() error {
	var errs setting.Errors
	c := &d.Config
	validateEndpoint(&errs, c.Endpoint)
	if c.SecurityPolicy != "" {
		if err := setting.OneOf(c.SecurityPolicy, policyNames...); err != nil {
			errs.Add("opcua.security_policy", "%v (leave it out for the strongest the server offers)", err)
		}
	}
	if err := setting.OneOf(c.SecurityMode, "Sign", "SignAndEncrypt", "None"); err != nil {
		errs.Add("opcua.security_mode", "%v", err)
	}
	insecure := c.SecurityPolicy == "None"
	switch {
	case c.SecurityMode == "None" && c.SecurityPolicy != "None":
		errs.Add("opcua.security_mode", "None needs security_policy: None (and allow_insecure: true)")
	case insecure && !c.AllowInsecure:
		errs.Add("opcua.security_policy", "None sends values and passwords unsigned and unencrypted; set allow_insecure: true to accept that")
	}
	validateAuth(&errs, &c.Auth, insecure)
	if err := setting.OneOf(c.Mode, "subscribe", "poll"); err != nil {
		errs.Add("opcua.mode", "%v", err)
	}
	if c.Interval < 10*time.Millisecond {
		errs.Add("opcua.interval", "%v is too short (at least 10ms)", c.Interval)
	}
	if c.SamplingInterval < 0 {
		errs.Add("opcua.sampling_interval", "must not be negative")
	}
	if c.QueueSize < 1 {
		errs.Add("opcua.queue_size", "must be at least 1")
	}
	validateDeadband(&errs, "opcua.deadband", &c.Deadband, c.Mode)
	validateKeepAlive(&errs, c)
	for _, t := range []struct {
		name string
		v    time.Duration
	}{{"connect", c.Timeouts.Connect}, {"request", c.Timeouts.Request}, {"session", c.Timeouts.Session}, {"keepalive", c.Timeouts.Keepalive}} {
		if t.v <= 0 {
			errs.Add("opcua.timeouts."+t.name, "must be positive")
		}
	}
	for i := range d.Points {
		p := &d.Points[i]
		pp := setting.Index("points", i)
		if p.Node == "" {
			errs.Add(pp+".node", "is required")
		} else if _, err := ParseNodeID(p.Node); err != nil {
			errs.Add(pp+".node", "%v", err)
		}
		if p.Index != nil && (*p.Index < 0 || *p.Index > 65535) {
			errs.Add(pp+".index", "%d is out of range 0..65535", *p.Index)
		}
		if p.Deadband != nil {
			validateDeadband(&errs, pp+".deadband", p.Deadband, c.Mode)
		}
		if p.Write != nil {
			validateWriteSpec(&errs, pp+".write", p)
		}
	}
	validateMethods(&errs, c.Methods, d.Points)
	validateEvents(&errs, c.Events, c.Mode)
	return errs.Err()
}

func validateEndpoint(errs *setting.Errors, ep string) {
	if ep == "" {
		errs.Add("opcua.endpoint", "is required")
		return
	}
	if !setting.CheckURLUserinfo(errs, "opcua.endpoint", ep, "opcua.auth.username and opcua.auth.password (or password_file)") {
		return
	}
	u, err := url.Parse(ep)
	switch {
	case err != nil:
		errs.Add("opcua.endpoint", "%q is not a URL", ep)
	case u.Scheme != "opc.tcp":
		errs.Add("opcua.endpoint", "%q: want opc.tcp://host:port", ep)
	case u.Hostname() == "":
		errs.Add("opcua.endpoint", "%q has no host", ep)
	case u.Port() != "":
		if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
			errs.Add("opcua.endpoint", "%q: port %q is out of range 1..65535", ep, u.Port())
		}
	}
}

func validateAuth(errs *setting.Errors, a *Auth, insecure bool) {
	if a.Password != "" && a.Username == "" {
		errs.Add("opcua.auth.username", "is required with a password")
	}
	if a.Username != "" && a.CertFile != "" {
		errs.Add("opcua.auth", "set username or cert_file, not both")
	}
	if (a.CertFile == "") != (a.KeyFile == "") {
		errs.Add("opcua.auth", "cert_file and key_file go together")
	}
	for _, f := range []struct{ name, v string }{{"cert_file", a.CertFile}, {"key_file", a.KeyFile}} {
		if f.v != "" && !filepath.IsAbs(f.v) {
			errs.Add("opcua.auth."+f.name, "%q must be an absolute path", f.v)
		}
	}
	if insecure && a.CertFile != "" {
		errs.Add("opcua.auth.cert_file", "a user certificate needs a security policy other than None")
	}
}

func validateDeadband(errs *setting.Errors, path string, d *Deadband, mode string) {
	if err := setting.OneOf(d.Type, "none", "absolute", "percent"); err != nil {
		errs.Add(path+".type", "%v", err)
		return
	}
	switch {
	case d.Type == "none" && d.Value != 0:
		errs.Add(path+".type", "is none but a value is set; want absolute or percent")
	case d.Value < 0 || d.Value != d.Value:
		errs.Add(path+".value", "must not be negative")
	case d.Type == "percent" && d.Value > 100:
		errs.Add(path+".value", "%v is over 100 percent", d.Value)
	case d.Type != "none" && mode == "poll":
		errs.Add(path, "applies to mode subscribe only")
	}
}

// securityModeName returns the mode used with policy (None for None).
func (c *Config) securityMode() string {
	if c.SecurityPolicy == "None" {
		return "None"
	}
	return c.SecurityMode
}
