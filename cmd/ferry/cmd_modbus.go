package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-edge/ferry/drivers/modbus"
)

func cmdModbus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "scan" {
		fmt.Fprintf(stderr, "Usage: ferry modbus scan URL [-units 1-247] [-timeout 200ms]\n")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return flag.ErrHelp
		}
		if len(args) == 0 {
			return usageError("want a subcommand: scan")
		}
		return usageError("unknown subcommand %q (want scan)", args[0])
	}
	args = args[1:]
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usageError("want a link URL: ferry modbus scan tcp://host:502 [-units 1-247]")
	}
	url := args[0]
	fs := newFlags("modbus scan", stderr)
	var (
		unitsFlag = fs.String("units", "1-247", "unit ids to try: 1-247, or 1,2,10-20")
		timeout   = fs.Duration("timeout", 200*time.Millisecond, "time to wait for each unit's answer")
		baud      = fs.Int("baud", 9600, "rtu:// only: baud rate (8N1)")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: ferry modbus scan URL [flags]

Asks each unit id for holding register 0 (FC03, one register, read only) and
prints the units that answered — with the register or with an exception of
their own, which also shows a device is there. URL: tcp://host:502,
rtuovertcp://host:4001 or rtu:///dev/ttyUSB0. Stop ferry on an rtu:// port
first: the port has one owner.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	units, err := parseUnits(*unitsFlag)
	if err != nil {
		return usageError("-units: %v", err)
	}
	if *timeout <= 0 {
		return usageError("-timeout must be positive")
	}
	serial := modbus.Serial{}
	serial.SetDefaults()
	serial.Baud = *baud
	fmt.Fprintf(stdout, "scanning %d unit ids on %s, %s each (at most %s)\n", len(units), url, *timeout, (time.Duration(len(units)) * *timeout).Round(time.Second))
	var found []string
	res, err := modbus.ScanUnits(ctx, url, serial, units, *timeout, func(a modbus.UnitAnswer) {
		if a.Answered {
			fmt.Fprintf(stdout, "  unit %3d  answered  %s (%s)\n", a.Unit, a.Reason, a.Took.Round(time.Millisecond))
			found = append(found, strconv.Itoa(int(a.Unit)))
		}
	})
	if err != nil && len(res) == 0 {
		return err
	}
	silent := map[string]int{}
	for _, a := range res {
		if !a.Answered {
			silent[a.Reason]++
		}
	}
	var why []string
	for r, n := range silent {
		why = append(why, fmt.Sprintf("%d %s", n, r))
	}
	switch {
	case len(found) == 0:
		fmt.Fprintf(stdout, "no unit answered (%s)\n", strings.Join(why, ", "))
		return &exitError{code: 1, err: fmt.Errorf("no unit answered on %s", url)}
	case len(found) == len(res) && len(res) > 2:
		fmt.Fprintf(stdout, "every unit id answered: the device ignores the unit id (common on Modbus TCP); use unit 1 or the one its manual names\n")
	default:
		fmt.Fprintf(stdout, "%d of %d answered: units %s", len(found), len(res), strings.Join(found, ", "))
		if len(why) > 0 {
			fmt.Fprintf(stdout, " (the rest: %s)", strings.Join(why, ", "))
		}
		fmt.Fprintln(stdout)
	}
	return nil
}

// parseUnits parses "1-247" or "1,2,10-20" into unit ids.
func parseUnits(s string) ([]uint8, error) {
	var out []uint8
	seen := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b > 255 || a > b {
			return nil, fmt.Errorf("%q: want unit ids 0..255 as N, N-M or a comma list", part)
		}
		for u := a; u <= b; u++ {
			if !seen[u] {
				seen[u] = true
				out = append(out, uint8(u))
			}
		}
	}
	return out, nil
}
