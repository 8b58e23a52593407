package setting

import (
	"net/url"
	"testing"
)

func TestRedactURL(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"tcp://127.0.0.1:1883", "tcp://127.0.0.1:1883"},
		{"tcp://user:canary@127.0.0.1:1883", "tcp://REDACTED@127.0.0.1:1883"},
		{"tcp://user:can@ry@host:1883/path@x", "tcp://REDACTED@host:1883/path@x"},
		{"opc.tcp://op:canary@plc:4840/ua/server", "opc.tcp://REDACTED@plc:4840/ua/server"},
		{"tcp://u:canary@host:1883/%zz", "tcp://REDACTED@host:1883/%zz"},
		{"tcp:u:canary@host", "tcp:REDACTED@host"},
		{"u:canary@host:1883", "u:REDACTED@host:1883"},
		{"canary@host", "REDACTED@host"},
		{"http://host/a@b", "http://host/a@b"},
		{"http://host?x=a@b", "http://host?x=a@b"},
		{"", ""},
	} {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got := URLUserinfo(tt.in); got != (tt.in != tt.want) {
			t.Errorf("URLUserinfo(%q) = %v", tt.in, got)
		}
	}
}

// FuzzRedactURL: whatever user information url.Parse finds in a URL,
// RedactURL takes the password out.
func FuzzRedactURL(f *testing.F) {
	for _, s := range []string{"tcp://u:p@h:1", "opc.tcp://a:b@c/d@e", "u:p@h", "tcp:u:p@h", "http://h/p?q=@", "//u:p@h", "tcp://u:p@[::1]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil || u.User == nil {
			return
		}
		if !URLUserinfo(raw) {
			t.Fatalf("URLUserinfo(%q) = false, url.Parse finds user information", raw)
		}
		red := RedactURL(raw)
		if v, err := url.Parse(red); err == nil && v.User != nil && v.User.String() != "REDACTED" {
			t.Fatalf("RedactURL(%q) = %q still holds user information %q", raw, red, v.User.String())
		}
	})
}
