package main

import (
	"context"
	"fmt"
	"io"

	"github.com/ferry-edge/ferry/drivers/modbus"
	"github.com/ferry-edge/ferry/internal/config"
)

// cmdPlan prints what the Modbus driver will put on the wire: per link and
// device, the read requests of one poll.
func cmdPlan(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("plan", stderr)
	cfgFlag := configFlag(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ferry plan [-config FILE | FILE]\n\nLoads FILE (default %s) like `ferry validate` and prints, per Modbus link and\ndevice, the read requests one poll makes: which registers or bits, and which points\neach request carries. Devices on one link share its time; the totals say how busy it is.\n", config.DefaultPath)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	_, c, err := loadFileArg(fs, *cfgFlag, stderr)
	if err != nil {
		return err
	}
	return printModbusPlan(stdout, config.DevicesOf[modbus.Device](c))
}

// printModbusPlan groups devices by link as `ferry run` does and prints
// each group's plan.
func printModbusPlan(w io.Writer, devices []modbus.Device) error {
	if len(devices) == 0 {
		fmt.Fprintln(w, "no Modbus devices")
		return nil
	}
	var keys []string
	groups := map[string][]modbus.Device{}
	for _, d := range devices {
		k := modbus.GroupKey(&d)
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], d)
	}
	var nreq int
	var rate float64
	for _, k := range keys {
		drv, err := modbus.New(groups[k], modbus.Options{})
		if err != nil {
			return &exitError{code: 1, err: err}
		}
		for _, lp := range drv.Plan() {
			head := lp.Link
			if lp.Serial != "" {
				head += "  " + lp.Serial
			}
			fmt.Fprintln(w, head)
			var busy float64 // share of the line's time, serial links
			for _, dp := range lp.Devices {
				fmt.Fprintf(w, "  %s  unit %d  every %s  timeout %s: %s in %s\n",
					dp.Device, dp.Unit, dp.Interval, dp.Timeout, planCount(dp.Points, "point"), planCount(len(dp.Requests), "request"))
				for _, r := range dp.Requests {
					fmt.Fprintf(w, "    %s\n", r)
				}
				nreq += len(dp.Requests)
				rate += float64(len(dp.Requests)) / dp.Interval.Seconds()
				if lp.Serial != "" {
					busy += dp.WireTime(lp.Baud).Seconds() / dp.Interval.Seconds()
				}
			}
			if lp.Serial != "" {
				fmt.Fprintf(w, "  line busy ≈ %.0f%% (request and reply frames; gaps and turnaround add more)\n", 100*busy)
			}
		}
	}
	fmt.Fprintf(w, "total: %s, %s, %s per poll of each, %.1f requests/s\n", planCount(len(keys), "link"), planCount(len(devices), "device"), planCount(nreq, "request"), rate)
	return nil
}

// planCount returns "1 link", "2 links".
func planCount(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
