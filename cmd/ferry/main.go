// Command ferry is the industrial IoT edge gateway daemon: it polls Modbus
// and OPC UA devices, subscribes to MQTT, evaluates local alert rules,
// keeps every sample and alert in a crash-safe buffer and forwards them to
// NATS JetStream.
//
// Usage:
//
//	ferry run [-config FILE]          run the gateway (default /etc/ferry/ferry.yaml)
//	ferry validate [FILE]             check a configuration and print a summary
//	ferry version                     print version, commit and Go version
//	ferry schema                      print the configuration's JSON Schema
//	ferry write DEVICE POINT VALUE    write a point through the running daemon (operator)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/ferry-edge/ferry/internal/setting"
)

// Set with -ldflags "-X main.version=… -X main.commit=…" by `make build`.
var (
	version = ""
	commit  = ""
)

// exitError carries a process exit code through the command functions.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError marks a mistake in the command line (exit code 2).
func usageError(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "run the gateway", cmdRun},
		{"validate", "check a configuration file and print a summary", cmdValidate},
		{"init", "write a commented starter configuration (ferry.yaml, devices.d/)", cmdInit},
		{"read", "read every point of a device once and print it (commissioning)", cmdRead},
		{"modbus", "find the unit ids that answer on a Modbus link: modbus scan URL", cmdModbus},
		{"plan", "print the Modbus requests each poll makes, per link and device", cmdPlan},
		{"version", "print version, commit and Go version", cmdVersion},
		{"schema", "print the JSON Schema of the configuration", cmdSchema},
		{"opcua", "browse an OPC UA server: opcua browse ENDPOINT [NODE]", cmdOPCUA},
		{"pki", "OPC UA certificates: pki list | trust FILE | own", cmdPKI},
		{"tail", "print what arrives in the NATS stream (the upstream view)", cmdTail},
		{"buffer", "inspect a stopped ferry's buffer: stats, dump", cmdBuffer},
		{"fleet", "fleet configuration and status over NATS KV: push, status, diff, rollback, watch", cmdFleet},
		{"write", "write a point through the running daemon: write DEVICE POINT VALUE", cmdWrite},
		{"history", "print a point's local history: history DEVICE POINT -since 24h [-csv]", cmdHistory},
	}
}

func main() {
	os.Exit(runMain(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "-version", "--version":
		args = []string{"version"}
	case "help":
		// ferry help CMD is ferry CMD -h, on stdout.
		if len(args) == 1 {
			usage(stdout)
			return 0
		}
		args = []string{args[1], "-h"}
		stderr = stdout
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		if err == nil {
			return 0
		}
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		code := 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		fmt.Fprintf(stderr, "ferry %s: %v\n", c.name, err)
		return code
	}
	fmt.Fprintf(stderr, "ferry: unknown command %q%s\n\n", args[0], setting.DidYouMean(args[0], commandNames()))
	usage(stderr)
	return 2
}

func commandNames() []string {
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	return names
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "ferry — industrial IoT edge gateway\n\nUsage: ferry COMMAND [ARGS]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'ferry help COMMAND' (or 'ferry COMMAND -h') for a command's flags; 'ferry --version' for the version.\n")
}

// newFlags returns a FlagSet that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ferry "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args, turning a flag mistake into a usage error; an
// unknown flag names the nearest one the command has.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
			var have []string
			fs.VisitAll(func(f *flag.Flag) { have = append(have, f.Name) })
			err = fmt.Errorf("%w%s", err, setting.DidYouMean(name, have))
		}
		return &exitError{code: 2, err: err}
	}
	return nil
}

// buildVersion returns ferry's version and commit, from -ldflags when set,
// else from the module build info.
func buildVersion() (ver, rev string) {
	ver, rev = version, commit
	if bi, ok := debug.ReadBuildInfo(); ok {
		if ver == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			ver = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && rev == "" {
				rev = s.Value
				if len(rev) > 12 {
					rev = rev[:12]
				}
			}
			if s.Key == "vcs.modified" && s.Value == "true" && rev != "" && !strings.HasSuffix(rev, "-dirty") {
				rev += "-dirty"
			}
		}
	}
	if ver == "" {
		ver = "dev"
	}
	if rev == "" {
		rev = "unknown"
	}
	return ver, rev
}
