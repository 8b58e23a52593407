package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/gateway"
)

const readUsage = `Usage:
  ferry read [-config FILE] [-timeout D] [DEVICE [POINT...]]
  ferry read modbus URL [-unit N] (-holding|-input|-coils|-discrete) START:COUNT [-type T] [-order O] [-scale S]

Connects to the devices of FILE (default %s), reads every point of the
named DEVICE (every device when none is named) once, prints one line per
point — device, point, value, unit, quality, reason — and exits 1 if any
point is not Good. It reads exactly as ferry run does (the Modbus driver's
planned requests, one OPC UA read or subscription, the first MQTT message
per topic; an MQTT probe uses a client id and a clean session of its own)
but buffers nothing and sends nothing upstream.

The modbus form needs no configuration, for a first probe of a device:
COUNT values of -type from address START (0-based), e.g.
  ferry read modbus tcp://10.0.0.20:502 -unit 1 -holding 0:10 -type float32 -order CDAB

Flags:
`

func cmdRead(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "modbus" {
		return cmdReadModbus(ctx, args[1:], stdout, stderr)
	}
	fs := newFlags("read", stderr)
	cfgPath := configFlag(fs)
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for every point's first value")
	fs.Usage = func() {
		fmt.Fprintf(stderr, readUsage, config.DefaultPath)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	path := *cfgPath
	if path == "" {
		path = config.DefaultPath
	}
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return &exitError{code: 1, err: fmt.Errorf("%s is not valid", path)}
	}
	var devices, points []string
	if fs.NArg() > 0 {
		devices = fs.Args()[:1]
		points = fs.Args()[1:]
	}
	if err := knownPoints(cfg, devices, points); err != nil {
		return usageError("%v", err)
	}
	return readAndPrint(ctx, cfg, devices, points, *timeout, stdout)
}

// knownPoints checks that every named point is a point of the device.
func knownPoints(cfg *config.Config, devices, points []string) error {
	if len(points) == 0 {
		return nil
	}
	have := map[string]bool{}
	var names []string
	for _, p := range cfg.Points {
		if p.Device == devices[0] {
			have[p.Point] = true
			names = append(names, p.Point)
		}
	}
	for _, p := range points {
		if !have[p] {
			return fmt.Errorf("device %s has no point %q (it has: %s)", devices[0], p, strings.Join(names, ", "))
		}
	}
	return nil
}

// readAndPrint reads once and prints the table; an exit error when any
// printed point is not Good.
func readAndPrint(ctx context.Context, cfg *config.Config, devices, points []string, timeout time.Duration, stdout io.Writer) error {
	res, err := gateway.ReadOnce(ctx, cfg, devices, timeout, nil)
	if err != nil {
		return usageError("%v", err)
	}
	only := map[string]bool{}
	for _, p := range points {
		only[p] = true
	}
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tPOINT\tVALUE\tUNIT\tQUALITY\tREASON")
	bad := 0
	for _, r := range res {
		if len(only) > 0 && !only[r.Info.Point] {
			continue
		}
		q := r.Sample.Quality
		if !q.IsGood() {
			bad++
		}
		val := "-"
		if !r.Sample.Value.IsNone() {
			val = ferry.FormatPoint(r.Sample.Value, r.Info)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Info.Device, r.Info.Point, val, dash(r.Info.Unit), q.Status, dash(q.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if bad > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d point(s) not good", bad)}
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// cmdReadModbus is the direct form: it writes a one-device configuration
// to a temporary directory and reads it as the config form would, so the
// probe is validated and decoded by the same code as a running gateway.
func cmdReadModbus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(stderr, readUsage, config.DefaultPath)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return flag.ErrHelp
		}
		return usageError("want a link URL: ferry read modbus tcp://host:502 ...")
	}
	url := args[0]
	fs := newFlags("read modbus", stderr)
	var (
		unit     = fs.Uint("unit", 1, "unit (slave) id")
		holding  = fs.String("holding", "", "START:COUNT of holding registers")
		input    = fs.String("input", "", "START:COUNT of input registers")
		coils    = fs.String("coils", "", "START:COUNT of coils")
		discrete = fs.String("discrete", "", "START:COUNT of discrete inputs")
		typ      = fs.String("type", "", "value type of register points: int16, uint16 (default), int32, uint32, int64, uint64, float32, float64")
		order    = fs.String("order", "", "byte layout of multi-register values: ABCD (default), CDAB, BADC, DCBA")
		scale    = fs.Float64("scale", 0, "value = raw x scale (0 means 1)")
		timeout  = fs.Duration("timeout", 3*time.Second, "time to wait for each response and for the first values")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, readUsage, config.DefaultPath)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("unexpected argument %q (flags go after the URL)", fs.Arg(0))
	}
	var table, span string
	for _, t := range []struct{ name, v string }{{"holding", *holding}, {"input", *input}, {"coil", *coils}, {"discrete", *discrete}} {
		if t.v == "" {
			continue
		}
		if table != "" {
			return usageError("give one of -holding, -input, -coils, -discrete")
		}
		table, span = t.name, t.v
	}
	if table == "" {
		return usageError("give one of -holding, -input, -coils, -discrete (START:COUNT)")
	}
	start, count, err := parseSpan(span)
	if err != nil {
		return usageError("-%s: %v", table, err)
	}
	if *unit > 255 {
		return usageError("-unit %d is out of range 0..255", *unit)
	}
	width := 1
	pointType := *typ
	if table == "coil" || table == "discrete" {
		pointType = ""
	} else if w, ok := registerWidth[pointType]; ok {
		width = w
	} else {
		return usageError("-type %q is not one of int16, uint16, int32, uint32, int64, uint64, float32, float64", pointType)
	}
	dir, err := os.MkdirTemp("", "ferry-read-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var b strings.Builder
	fmt.Fprintf(&b, "gateway: {id: ferry-read}\ndata_dir: %s\nhttp: {listen: \"off\"}\n", strconv.Quote(dir))
	fmt.Fprintf(&b, "devices:\n  - name: probe\n    modbus: {url: %s, unit: %d, timeout: %s, interval: %s}\n    points:\n",
		strconv.Quote(url), *unit, *timeout, *timeout)
	for i := 0; i < count; i++ {
		addr := start + i*width
		if addr > 65535 {
			return usageError("-%s %s runs past address 65535", table, span)
		}
		fmt.Fprintf(&b, "      - {name: %s%d, table: %s, address: %d", table[:1], addr, table, addr)
		if pointType != "" {
			fmt.Fprintf(&b, ", type: %s", pointType)
		}
		if *order != "" {
			fmt.Fprintf(&b, ", order: %s", strings.ToUpper(*order))
		}
		if *scale != 0 {
			fmt.Fprintf(&b, ", scale: %s", strconv.FormatFloat(*scale, 'g', -1, 64))
		}
		b.WriteString("}\n")
	}
	path := filepath.Join(dir, "probe.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return err
	}
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		// The flags made a configuration the loader refuses: say what,
		// without the temporary file's name.
		return usageError("%s", strings.ReplaceAll(err.Error(), path+":", ""))
	}
	return readAndPrint(ctx, cfg, nil, nil, *timeout+2*time.Second, stdout)
}

// registerWidth is the registers one value of each type takes.
var registerWidth = map[string]int{"": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "int64": 4, "uint64": 4, "float64": 4}

// parseSpan parses START:COUNT (START alone reads one value).
func parseSpan(s string) (start, count int, err error) {
	a, c, found := strings.Cut(s, ":")
	start, err = strconv.Atoi(a)
	if err != nil || start < 0 || start > 65535 {
		return 0, 0, fmt.Errorf("%q: START must be an address 0..65535", s)
	}
	count = 1
	if found {
		count, err = strconv.Atoi(c)
		if err != nil || count < 1 || count > 2000 {
			return 0, 0, fmt.Errorf("%q: COUNT must be 1..2000", s)
		}
	}
	return start, count, nil
}
