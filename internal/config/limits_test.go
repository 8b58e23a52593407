package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/config"
)

// writeDevices writes files device maps into dir/devices.d, each with
// perFile MQTT devices of points points, plus a main file naming it; it
// returns the main file's path.
func writeDevices(t *testing.T, files, perFile, points int) string {
	t.Helper()
	dir := t.TempDir()
	dd := filepath.Join(dir, "devices.d")
	if err := os.Mkdir(dd, 0o755); err != nil {
		t.Fatal(err)
	}
	for f := range files {
		var b strings.Builder
		b.WriteString("devices:\n")
		for d := range perFile {
			fmt.Fprintf(&b, "  - name: d%d_%d\n    mqtt: {broker: \"tcp://127.0.0.1:1883\", topic: \"t/%d/%d\"}\n    points:\n", f, d, f, d)
			for p := range points {
				fmt.Fprintf(&b, "      - {name: p%d, path: v%d}\n", p, p)
			}
		}
		if err := os.WriteFile(filepath.Join(dd, fmt.Sprintf("f%04d.yaml", f)), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	main := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(main, []byte("gateway: {id: gw1}\ndevices_dir: devices.d\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return main
}

// TestLimits: a configuration beyond each bound is refused with an error
// naming the bound and where it was crossed; one at the bound loads
// (issue 21 item 4).
func TestLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and loads up to 100,000 points")
	}
	tests := []struct {
		name                   string
		files, perFile, points int
		want                   string // "" loads
	}{
		{"files at the bound", config.MaxDeviceFiles, 1, 1, ""},
		{"files", config.MaxDeviceFiles + 1, 1, 1, fmt.Sprintf("ferry.yaml:2:14: devices_dir: devices.d holds %d device files; at most %d are read", config.MaxDeviceFiles+1, config.MaxDeviceFiles)},
		{"devices at the bound", 2, config.MaxDevices / 2, 1, ""},
		{"devices", 3, config.MaxDevices/3 + 1, 1, fmt.Sprintf("devices.d/f0002.yaml:%d:5: devices[%d]: is device %d of %d: a configuration holds at most %d devices",
			2+4*(config.MaxDevices-2*(config.MaxDevices/3+1)), config.MaxDevices-2*(config.MaxDevices/3+1), config.MaxDevices+1, 3*(config.MaxDevices/3+1), config.MaxDevices)},
		{"points at the bound", 10, 1, config.MaxPoints / 10, ""},
		{"points", 2, 1, config.MaxPoints/2 + 1, fmt.Sprintf("devices.d/f0001.yaml:5:7: devices[0].points: takes the configuration to %d points or more: it holds at most %d points", config.MaxPoints+2, config.MaxPoints)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(writeDevices(t, tt.files, tt.perFile, tt.points))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if len(c.Devices) != tt.files*tt.perFile || len(c.Points) != tt.files*tt.perFile*tt.points {
					t.Fatalf("loaded %d devices, %d points", len(c.Devices), len(c.Points))
				}
				return
			}
			if err == nil {
				t.Fatalf("Load accepted %d files of %d devices of %d points", tt.files, tt.perFile, tt.points)
			}
			if !errors.Is(err, ferry.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error:\n%v\nwant it to contain:\n%s", err, tt.want)
			}
			if n := len(strings.Split(err.Error(), "\n")); n > 3 {
				t.Errorf("%d error lines, want the one limit:\n%.2000s", n, err)
			}
		})
	}
}

// TestLimitBytes: device maps over MaxConfigBytes together are refused
// by their size before any is read.
func TestLimitBytes(t *testing.T) {
	main := writeDevices(t, 1, 1, 1)
	dd := filepath.Join(filepath.Dir(main), "devices.d")
	n := config.MaxConfigBytes/config.MaxFileSize + 1
	for i := range n {
		// Sparse files: their size counts, and none is read.
		f, err := os.Create(filepath.Join(dd, fmt.Sprintf("pad%04d.yaml", i)))
		if err == nil {
			err = f.Truncate(config.MaxFileSize)
			f.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := load(main)
	want := fmt.Sprintf("ferry.yaml:2:14: devices_dir: devices.d holds %d MiB of device files: the configuration (main file and devices_dir together) may hold at most 32 MiB", n*config.MaxFileSize>>20)
	if err == nil || err.Error() != filepath.Join(filepath.Dir(main), want) {
		t.Fatalf("error:\n%v\nwant:\n%s", err, want)
	}
}
