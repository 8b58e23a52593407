package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = runMain(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantOut    string
		wantErrOut string
	}{
		{"example", []string{"validate", "../../configs/example.yaml"}, 0, "ok: 3 devices, 5 points, 2 rules", ""},
		{"bad", []string{"validate", "../../internal/config/testdata/unknown_field.bad.yaml"}, 1, "",
			`unknown_field.bad.yaml:3:3: buffer.max_sise: unknown field "max_sise" (did you mean "max_size"?)`},
		{"missing", []string{"validate", "/nonexistent/ferry.yaml"}, 1, "", "no such file or directory"},
		// Only the driver can tell that two devices sharing a connection
		// disagree on its settings: validate builds the drivers too.
		{"group mismatch", []string{"validate", "testdata/mqtt_group_mismatch.yaml"}, 1, "", "differ in mqtt.keepalive"},
		{"two files", []string{"validate", "a", "b"}, 2, "", "want at most one FILE"},
		{"bad flag", []string{"validate", "-nope"}, 2, "", "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := run(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.wantCode, errOut)
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("stdout %q does not contain %q", out, tt.wantOut)
			}
			if !strings.Contains(errOut, tt.wantErrOut) {
				t.Errorf("stderr %q does not contain %q", errOut, tt.wantErrOut)
			}
		})
	}
}

func TestVersionAndUsage(t *testing.T) {
	code, out, _ := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "ferry ") || !strings.Contains(out, "go1.") {
		t.Fatalf("version: %d %q", code, out)
	}
	if code, _, errOut := run(t, "frobnicate"); code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Fatalf("unknown command: %d %q", code, errOut)
	}
	if code, _, _ := run(t); code != 2 {
		t.Fatalf("no command: exit %d, want 2", code)
	}
	if code, out, _ := run(t, "schema"); code != 0 || !strings.Contains(out, `"$schema"`) {
		t.Fatalf("schema: %d", code)
	}
}
