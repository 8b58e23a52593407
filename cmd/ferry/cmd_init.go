package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

//go:embed initdata/*.yaml
var initData embed.FS

// initFiles maps what ferry init writes to its source in initData.
var initFiles = []struct{ dst, src string }{
	{"ferry.yaml", "initdata/ferry.yaml"},
	{"devices.d/modbus-example.yaml", "initdata/modbus.yaml"},
	{"devices.d/opcua-example.yaml", "initdata/opcua.yaml"},
	{"devices.d/mqtt-example.yaml", "initdata/mqtt.yaml"},
}

func cmdInit(_ context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlags("init", stderr)
	dataDir := flags.String("data-dir", "/var/lib/ferry", "data_dir the configuration names")
	flags.Usage = func() {
		fmt.Fprintf(stderr, `Usage: ferry init [-data-dir DIR] [DIR]

Writes a commented starter configuration into DIR (default the current
directory): ferry.yaml and devices.d/ with one example device map per
protocol (Modbus, OPC UA, MQTT). It refuses to overwrite any file. Edit the
lines marked CHANGE, then: ferry validate -config DIR/ferry.yaml.

Flags:
`)
		flags.PrintDefaults()
	}
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	dir := "."
	switch flags.NArg() {
	case 0:
	case 1:
		dir = flags.Arg(0)
	default:
		return usageError("want at most one DIR, got %d", flags.NArg())
	}
	if strings.ContainsAny(*dataDir, "\n\"'#") {
		return usageError("-data-dir %q: want a plain path", *dataDir)
	}
	// Refuse before writing anything: never half an init.
	for _, f := range initFiles {
		p := filepath.Join(dir, f.dst)
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s exists: ferry init never overwrites (move it away, or init another directory)", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	for _, f := range initFiles {
		b, err := initData.ReadFile(f.src)
		if err != nil {
			return err
		}
		text := strings.ReplaceAll(string(b), "@DATA_DIR@", *dataDir)
		p := filepath.Join(dir, f.dst)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		// O_EXCL: a file that appeared since the check is not overwritten.
		fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		_, err = fh.WriteString(text)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s\n", p)
	}
	fmt.Fprintf(stdout, "\nNext: edit the lines marked CHANGE, then\n  ferry validate -config %s\n  ferry read -config %s\n",
		filepath.Join(dir, "ferry.yaml"), filepath.Join(dir, "ferry.yaml"))
	return nil
}
