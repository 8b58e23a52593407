package opcua

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
)

func TestValidate(t *testing.T) {
	idx := func(i int) *int { return &i }
	tests := []struct {
		name    string
		mod     func(*Device)
		wantErr string // substring; "" = valid
	}{
		{"defaults", func(*Device) {}, ""},
		{"poll", func(d *Device) { d.Config.Mode = "poll" }, ""},
		{"explicit policy", func(d *Device) { d.Config.SecurityPolicy = "Aes128_Sha256_RsaOaep"; d.Config.SecurityMode = "Sign" }, ""},
		{"None allowed", func(d *Device) { d.Config.SecurityPolicy = "None"; d.Config.AllowInsecure = true }, ""},
		{"None mode with None", func(d *Device) {
			d.Config.SecurityPolicy, d.Config.SecurityMode, d.Config.AllowInsecure = "None", "None", true
		}, ""},
		{"username", func(d *Device) { d.Config.Auth = Auth{Username: "op", Password: "pw"} }, ""},
		{"certificate login", func(d *Device) { d.Config.Auth = Auth{CertFile: "/etc/ferry/u.der", KeyFile: "/etc/ferry/u.key"} }, ""},
		{"deadband", func(d *Device) { d.Config.Deadband = Deadband{Type: "percent", Value: 2} }, ""},
		{"index", func(d *Device) { d.Points[0].Index = idx(3) }, ""},

		{"no endpoint", func(d *Device) { d.Config.Endpoint = "" }, "opcua.endpoint: is required"},
		{"http endpoint", func(d *Device) { d.Config.Endpoint = "http://h:4840" }, "opcua.endpoint: \"http://h:4840\": want opc.tcp://host:port"},
		{"bad port", func(d *Device) { d.Config.Endpoint = "opc.tcp://h:99999" }, "out of range 1..65535"},
		{"unknown policy", func(d *Device) { d.Config.SecurityPolicy = "Basic256" }, `opcua.security_policy: "Basic256" is not one of None, Basic256Sha256`},
		{"None refused", func(d *Device) { d.Config.SecurityPolicy = "None" }, "set allow_insecure: true"},
		{"None mode", func(d *Device) { d.Config.SecurityMode = "None" }, "opcua.security_mode: None needs security_policy: None"},
		{"bad mode", func(d *Device) { d.Config.SecurityMode = "Encrypt" }, `opcua.security_mode: "Encrypt" is not one of`},
		{"password alone", func(d *Device) { d.Config.Auth.Password = "pw" }, "opcua.auth.username: is required with a password"},
		{"both logins", func(d *Device) {
			d.Config.Auth = Auth{Username: "op", CertFile: "/a", KeyFile: "/b"}
		}, "set username or cert_file, not both"},
		{"cert without key", func(d *Device) { d.Config.Auth.CertFile = "/a" }, "cert_file and key_file go together"},
		{"relative cert", func(d *Device) { d.Config.Auth = Auth{CertFile: "u.der", KeyFile: "/k"} }, `opcua.auth.cert_file: "u.der" must be an absolute path`},
		{"bad mode word", func(d *Device) { d.Config.Mode = "push" }, `opcua.mode: "push" is not one of subscribe, poll`},
		{"short interval", func(d *Device) { d.Config.Interval = time.Millisecond }, "opcua.interval: 1ms is too short"},
		{"queue 0", func(d *Device) { d.Config.QueueSize = 0 }, "opcua.queue_size: must be at least 1"},
		{"deadband in poll", func(d *Device) { d.Config.Mode = "poll"; d.Config.Deadband = Deadband{Type: "absolute", Value: 1} }, "opcua.deadband: applies to mode subscribe only"},
		{"deadband over 100%", func(d *Device) { d.Config.Deadband = Deadband{Type: "percent", Value: 150} }, "opcua.deadband.value: 150 is over 100 percent"},
		{"deadband value without type", func(d *Device) { d.Config.Deadband.Value = 1 }, "opcua.deadband.type: is none but a value is set"},
		{"point deadband", func(d *Device) { d.Points[0].Deadband = &Deadband{Type: "rel"} }, `points[0].deadband.type: "rel" is not one of`},
		{"timeout", func(d *Device) { d.Config.Timeouts.Request = 0 }, "opcua.timeouts.request: must be positive"},
		{"no points", func(d *Device) { d.Points = nil }, ""},
		{"no node", func(d *Device) { d.Points[0].Node = "" }, "points[0].node: is required"},
		{"bad node", func(d *Device) { d.Points = append(d.Points, Point{Name: "q", Node: "ns=2;Boiler"}) }, `points[1].node: "ns=2;Boiler": want i=, s=, g= or b=`},
		{"negative index", func(d *Device) { d.Points[0].Index = idx(-1) }, "points[0].index: -1 is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := testDevice("boiler", "opc.tcp://10.0.0.30:4840", nil, Point{Name: "p", Node: "ns=2;s=Boiler.Pressure"})
			tt.mod(&d)
			wantValid(t, d.Validate(), tt.wantErr)
		})
	}
}

func TestParseNodeID(t *testing.T) {
	tests := []struct {
		in      string
		want    string // String() of the result; "" = error expected
		wantErr string
		wire    string // resolved with namespaces [ns0, urn:a, urn:b]
	}{
		{in: "i=2258", want: "i=2258", wire: "i=2258"},
		{in: "ns=2;s=Boiler.Pressure", want: "ns=2;s=Boiler.Pressure", wire: "ns=2;s=Boiler.Pressure"},
		{in: "ns=0;i=85", want: "i=85", wire: "i=85"},
		{in: "ns=3;s=a;b=c", want: "ns=3;s=a;b=c", wire: "ns=3;s=a;b=c"},
		{in: "nsu=urn:b;s=Line 1.Speed", want: "nsu=urn:b;s=Line 1.Speed", wire: "ns=2;s=Line 1.Speed"},
		{in: "nsu=urn:a;i=7", want: "nsu=urn:a;i=7", wire: "ns=1;i=7"},
		{in: "ns=1;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63", want: "ns=1;g=72962b91-fa75-4ae6-8d28-b404dc7daf63"},
		{in: "ns=1;b=AQID", want: "ns=1;b=AQID", wire: "ns=1;b=AQID"},
		{in: "ns=65535;i=4294967295", want: "ns=65535;i=4294967295"},
		{in: "", wantErr: "empty node id"},
		{in: "Boiler.Pressure", wantErr: "want i=, s=, g= or b="},
		{in: "ns=2;Boiler", wantErr: "want i=, s=, g= or b="},
		{in: "ns=x;s=a", wantErr: `namespace index "x" is not a number 0..65535`},
		{in: "ns=65536;s=a", wantErr: "is not a number 0..65535"},
		{in: "ns=-1;s=a", wantErr: "is not a number"},
		{in: "ns=2", wantErr: "want ns=<index>;"},
		{in: "nsu=;s=a", wantErr: "empty namespace URI"},
		{in: "nsu=urn:a", wantErr: "want nsu=<namespace URI>;"},
		{in: "i=4294967296", wantErr: "is not a number 0..4294967295"},
		{in: "i=+1", wantErr: "is not a number"},
		{in: "s=", wantErr: "empty string identifier"},
		{in: "g=1234", wantErr: "is not of the form"},
		{in: "b=!!", wantErr: "not base64"},
		{in: "x=1", wantErr: `identifier type "x" is not one of i, s, g, b`},
		{in: "s=\xff", wantErr: "not valid UTF-8"},
	}
	ns := []string{"http://opcfoundation.org/UA/", "urn:a", "urn:b"}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			n, err := ParseNodeID(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n.String() != tt.want {
				t.Errorf("String() = %q, want %q", n, tt.want)
			}
			w, err := n.resolve(ns)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wire != "" && w.String() != tt.wire {
				t.Errorf("wire id %q, want %q", w, tt.wire)
			}
		})
	}
	n, _ := ParseNodeID("nsu=urn:missing;s=a")
	if _, err := n.resolve(ns); err == nil || !strings.Contains(err.Error(), "urn:missing") {
		t.Errorf("unknown namespace: %v", err)
	}
}

func FuzzParseNodeID(f *testing.F) {
	for _, s := range []string{"i=85", "ns=2;s=Boiler.Pressure", "nsu=urn:x;s=a;b", "ns=1;g=72962b91-fa75-4ae6-8d28-b404dc7daf63",
		"ns=1;b=AQID", "ns=;s=", "nsu=;", "g=", "ns=99999;i=1"} {
		f.Add(s)
	}
	ns := []string{"http://opcfoundation.org/UA/", "urn:x"}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseNodeID(s)
		if err != nil {
			return
		}
		// The printed form parses back to the same id.
		m, err := ParseNodeID(n.String())
		if err != nil {
			t.Fatalf("%q printed as %q which does not parse: %v", s, n, err)
		}
		if m.String() != n.String() {
			t.Fatalf("%q: round trip %q -> %q", s, n, m)
		}
		if w, err := n.resolve(ns); err == nil && w == nil {
			t.Fatal("nil wire id without error")
		}
	})
}

func TestStatusName(t *testing.T) {
	tests := []struct {
		code ua.StatusCode
		want string
	}{
		{ua.StatusOK, "Good"},
		{ua.StatusBad, "Bad"},
		{ua.StatusBadNodeIDUnknown, "BadNodeIdUnknown"},
		{ua.StatusBadUserAccessDenied, "BadUserAccessDenied"},
		{ua.StatusBadCertificateURIInvalid, "BadCertificateUriInvalid"},
		{ua.StatusBadTCPEndpointURLInvalid, "BadTcpEndpointUrlInvalid"},
		{ua.StatusUncertainLastUsableValue, "UncertainLastUsableValue"},
		{ua.StatusBadNodeIDUnknown | 0x0400, "BadNodeIdUnknown"}, // info bits ignored
		{0x80FE0000, "0x80FE0000"},
	}
	for _, tt := range tests {
		if got := StatusName(tt.code); got != tt.want {
			t.Errorf("StatusName(%#x) = %q, want %q", uint32(tt.code), got, tt.want)
		}
	}
}

func TestWiden(t *testing.T) {
	for _, f := range []float32{0.1, -0.1, 1.1, 3.14159, 1e-7, 123456.7, 1e20, 3.4e38, 1.4e-45, -2.5} {
		got := widen(f)
		if float32(got) != f {
			t.Errorf("widen(%v) = %v does not round-trip", f, got)
		}
	}
	if got := widen(0.1); got != 0.1 {
		t.Errorf("widen(0.1) = %v", got)
	}
	if got := widen(float32(math.NaN())); got == got {
		t.Errorf("NaN became %v", got)
	}
	if n := testing.AllocsPerRun(100, func() { widen(1.1) }); n != 0 {
		t.Errorf("widen allocates %v times", n)
	}
}

// wantValid checks a Validate result: no error when want is "", else an
// error holding want.
func wantValid(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Fatalf("no error, want %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not contain %q", err, want)
	}
}
