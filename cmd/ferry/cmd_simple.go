package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"

	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/gateway"
)

func cmdVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ver, rev := buildVersion()
	fmt.Fprintf(stdout, "ferry %s (commit %s, %s, %s/%s)\n", ver, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

func cmdValidate(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("validate", stderr)
	cfgFlag := configFlag(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ferry validate [-config FILE | FILE]\n\nLoads FILE (default %s) and its devices_dir exactly as `ferry run` would,\nprints every problem with file:line:column and exits 1, or prints a summary and exits 0.\n", config.DefaultPath)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	path, c, err := loadFileArg(fs, *cfgFlag, stderr)
	if err != nil {
		return err
	}
	// What only a driver can tell: devices that share a link or a
	// connection must agree on its settings (a serial port's baud rate,
	// an MQTT connection's keepalive).
	if err := gateway.CheckGroups(c); err != nil {
		fmt.Fprintln(stderr, err)
		return &exitError{code: 1, err: fmt.Errorf("%s is not valid", path)}
	}
	fmt.Fprintf(stdout, "%s: ok: %s\n", path, c.Summary())
	return nil
}

// configFlag registers the -config flag every command that reads a
// configuration has.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", "", "configuration file (default "+config.DefaultPath+")")
}

// loadFileArg loads the configuration named by -config (flagPath) or the
// command's optional FILE argument (default config.DefaultPath). A file
// that does not load has its problems printed to stderr, one per line with
// its place, and gives an exit error.
func loadFileArg(fs *flag.FlagSet, flagPath string, stderr io.Writer) (string, *config.Config, error) {
	path := config.DefaultPath
	switch {
	case fs.NArg() > 1:
		return "", nil, usageError("want at most one FILE, got %d", fs.NArg())
	case fs.NArg() == 1 && flagPath != "":
		return "", nil, usageError("give the file as -config FILE or as FILE, not both")
	case fs.NArg() == 1:
		path = fs.Arg(0)
	case flagPath != "":
		path = flagPath
	}
	c, err := gateway.LoadConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return "", nil, &exitError{code: 1, err: fmt.Errorf("%s is not valid", path)}
	}
	return path, c, nil
}

func cmdSchema(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("schema", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	b, err := config.Schema(gateway.Protocols)
	if err != nil {
		return err
	}
	_, err = stdout.Write(b)
	return err
}
