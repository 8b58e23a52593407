package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPlan(t *testing.T) {
	dir := t.TempDir()
	serial := filepath.Join(dir, "serial.yaml")
	err := os.WriteFile(serial, []byte(`gateway: {id: gw}
devices:
  - name: meter1
    modbus: {url: "rtu:///dev/ttyUSB0", unit: 1, interval: 1s, serial: {baud: 9600}}
    points:
      - {name: v1, table: input, address: 0, type: float32}
      - {name: v2, table: input, address: 2, type: float32}
      - {name: e, table: input, address: 200, type: uint32}
  - name: meter2
    modbus: {url: "rtu:///dev/ttyUSB0", unit: 2, interval: 500ms}
    points:
      - {name: f, ref: "30001"}
  - name: meter3
    modbus: {url: "rtu:///dev/ttyUSB0", unit: 3, serial: {baud: 19200}}
    points:
      - {name: f, ref: "30001"}
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string
		wantErr  string
	}{
		{"example", []string{"plan", "../../configs/example.yaml"}, 0, []string{
			"tcp://10.0.0.21:502\n",
			"  press3  unit 1  every 1s  timeout 500ms: 2 points in 2 requests\n",
			"    unit 1 coil 5 (1 bit) → 1 point: running\n",
			"    unit 1 holding 100..101 (2 registers) → 1 point: oil_temp\n",
			"total: 1 link, 1 device, 2 requests per poll of each, 2.0 requests/s\n",
		}, ""},
		{"serial mismatch", []string{"plan", serial}, 1, nil, "19200 8N1 differs from 9600 8N1 of device meter1"},
		{"bad file", []string{"plan", "../../internal/config/testdata/wrong_types.bad.yaml"}, 1, nil, "is not valid"},
		{"two files", []string{"plan", "a", "b"}, 2, nil, "want at most one FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := run(t, tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr %s", code, tt.wantCode, errOut)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("stderr %q lacks %q", errOut, tt.wantErr)
			}
		})
	}

	if err := os.WriteFile(serial, []byte(strings.Replace(mustRead(t, serial), "serial: {baud: 19200}", "serial: {baud: 9600}", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, "plan", serial)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, w := range []string{
		"rtu:///dev/ttyUSB0  9600 8N1\n",
		"    unit 1 input 0..3 (4 registers) → 2 points: v1, v2\n",
		"    unit 1 input 200..201 (2 registers) → 1 point: e\n",
		"    unit 2 input 0 (1 register) → 1 point: f\n",
		"  line busy ≈ ",
		"total: 1 link, 3 devices, 4 requests per poll of each, 5.0 requests/s\n",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
