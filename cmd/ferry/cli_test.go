package main

import (
	"strings"
	"testing"
)

// TestCLIConventions: help on stdout with exit 0, --version, help CMD,
// -config on validate (FILE still works), suggestions for typos.
func TestCLIConventions(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		code, out, errOut := run(t, args...)
		if code != 0 || !strings.Contains(out, "Commands:") || !strings.Contains(out, "  read ") || errOut != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
	if code, _, errOut := run(t); code != 2 || !strings.Contains(errOut, "Commands:") {
		t.Errorf("no args: exit %d, stderr %q", code, errOut)
	}
	if code, out, _ := run(t, "--version"); code != 0 || !strings.HasPrefix(out, "ferry ") || !strings.Contains(out, "commit") {
		t.Errorf("--version: exit %d, %q", code, out)
	}
	code, out, errOut := run(t, "help", "validate")
	if code != 0 || !strings.Contains(out, "Usage: ferry validate [-config FILE | FILE]") || errOut != "" {
		t.Errorf("help validate: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, _ := run(t, "validate", "-config", "../../configs/example.yaml"); code != 0 || !strings.Contains(out, "ok: ") {
		t.Errorf("validate -config: exit %d, %q", code, out)
	}
	if code, out, _ := run(t, "validate", "../../configs/example.yaml"); code != 0 || !strings.Contains(out, "ok: ") {
		t.Errorf("validate FILE: exit %d, %q", code, out)
	}
	if code, _, errOut := run(t, "validate", "-config", "a.yaml", "b.yaml"); code != 2 || !strings.Contains(errOut, "not both") {
		t.Errorf("validate -config and FILE: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run(t, "valdate"); code != 2 || !strings.Contains(errOut, `unknown command "valdate" (did you mean "validate"?)`) {
		t.Errorf("typo in command: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run(t, "validate", "-confg", "x"); code != 2 || !strings.Contains(errOut, `flag provided but not defined: -confg (did you mean "config"?)`) {
		t.Errorf("typo in flag: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run(t, "frobnicate"); code != 2 || strings.Contains(errOut, "did you mean") {
		t.Errorf("far from any command: exit %d, %q", code, errOut)
	}
}
