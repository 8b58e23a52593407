package command

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name    string
		mod     func(c *Config)
		wantErr string
	}{
		{"defaults", func(c *Config) {}, ""},
		{"wildcard subject", func(c *Config) { c.Subject = "ferry.*.cmd" }, `subject: "ferry.*.cmd" is not a NATS subject`},
		{"empty token", func(c *Config) { c.Subject = "ferry..cmd" }, "subject:"},
		{"keep not above max_deadline", func(c *Config) { c.Keep = c.MaxDeadline }, "keep: 10m0s must be longer than max_deadline 10m0s"},
		{"default above max", func(c *Config) { c.DefaultDeadline = time.Hour }, "default_deadline: 1h0m0s is longer than max_deadline"},
		{"no ids", func(c *Config) { c.MaxIDs = 0 }, "max_ids: 0 is out of range"},
		{"write timeout", func(c *Config) { c.WriteTimeout = 2 * time.Minute }, "write_timeout: 2m0s is out of range"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c Config
			c.SetDefaults()
			tc.mod(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
		})
	}
	var c Config
	c.SetDefaults()
	if got := c.SubjectFor("lyon", "gw1"); got != "ferry.lyon.gw1.cmd" {
		t.Fatalf("SubjectFor: %s", got)
	}
}

func TestParseInterlock(t *testing.T) {
	known := map[string]bool{"press.line_speed": true, "press.door": true, "cell-2.guard": true}
	cases := []struct {
		src     string
		want    string // refs
		wantErr string
	}{
		{src: "line_speed == 0", want: "press.line_speed"},
		{src: "press.line_speed == 0 && door", want: "press.line_speed press.door"},
		{src: `$env["cell-2"]["guard"] && press["door"]`, want: "cell-2.guard press.door"},
		{src: "line_sped == 0", wantErr: `unknown point "press.line_sped"`},
		{src: "line_speed ==", wantErr: "interlock"},
		{src: strings.Repeat("x", maxInterlockLen+1), wantErr: "longer than"},
	}
	for _, tc := range cases {
		refs, err := ParseInterlock("press", tc.src, func(r string) bool { return known[r] })
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%.40q: err %v, want %q", tc.src, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.src, err)
			continue
		}
		var got []string
		for _, r := range refs {
			got = append(got, r.String())
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%q: refs %v, want %s", tc.src, got, tc.want)
		}
	}
}
