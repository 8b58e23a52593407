package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
	"github.com/ferry-edge/ferry/internal/codec"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/gateway"
)

const bufferUsage = `Usage:
  ferry buffer stats [-data-dir DIR | -config FILE] [-json]
  ferry buffer dump  [-data-dir DIR | -config FILE] [-lane alerts|telemetry] [-limit N]

Reads the store-and-forward buffer (DATA_DIR/buffer.db) of a ferry that is
not running; while one runs (it holds the buffer's lock) both refuse.

  stats  per lane: records, bytes, oldest record; the file's size and free pages
  dump   the records, decoded, one JSON object per line, in the order the
         uplink sends them (alerts first)

The data directory is -data-dir, or the data_dir of -config (default %s).
`

func cmdBuffer(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(stderr, bufferUsage, config.DefaultPath)
		if len(args) == 0 {
			return usageError("want a subcommand: stats or dump")
		}
		return flag.ErrHelp
	}
	sub, args := args[0], args[1:]
	fs := newFlags("buffer "+sub, stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, bufferUsage, config.DefaultPath) }
	dataDir := fs.String("data-dir", "", "the data directory (holds buffer.db)")
	cfgPath := fs.String("config", "", "take data_dir from this configuration (default "+config.DefaultPath+")")
	var asJSON *bool
	var laneName *string
	var limit *int
	switch sub {
	case "stats":
		asJSON = fs.Bool("json", false, "print the figures as one JSON object")
	case "dump":
		laneName = fs.String("lane", "", "only this lane: alerts or telemetry (default both, alerts first)")
		limit = fs.Int("limit", 0, "print at most N records (0: all)")
	default:
		return usageError("unknown buffer subcommand %q (want stats or dump)", sub)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("unexpected argument %q", fs.Arg(0))
	}
	lanes := []ferry.Lane{ferry.LaneAlerts, ferry.LaneTelemetry}
	if sub == "dump" {
		if *laneName != "" {
			l, err := ferry.ParseLane(*laneName)
			if err != nil {
				return usageError("-lane: %v", err)
			}
			lanes = []ferry.Lane{l}
		}
		if *limit < 0 {
			return usageError("-limit %d is negative", *limit)
		}
	}
	dir, err := bufferDir(*dataDir, *cfgPath)
	if err != nil {
		return err
	}
	in, err := buffer.Inspect(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no buffer in %s (%s does not exist)", dir, filepath.Join(dir, "buffer.db"))
	}
	if err != nil {
		return err
	}
	defer in.Close()
	if sub == "stats" {
		return bufferStats(in, *asJSON, stdout, stderr)
	}
	return bufferDump(in, lanes, *limit, stdout, stderr)
}

// bufferDir resolves the data directory from the flags.
func bufferDir(dataDir, cfgPath string) (string, error) {
	if dataDir != "" && cfgPath != "" {
		return "", usageError("give -data-dir or -config, not both")
	}
	if dataDir != "" {
		return dataDir, nil
	}
	if cfgPath == "" {
		cfgPath = config.DefaultPath
	}
	c, err := gateway.LoadConfig(cfgPath)
	if err != nil {
		return "", fmt.Errorf("load %s for its data_dir: %w", cfgPath, err)
	}
	return c.DataDir, nil
}

func bufferStats(in *buffer.Inspection, asJSON bool, stdout, stderr io.Writer) error {
	now := time.Now()
	if asJSON {
		type lane struct {
			buffer.LaneStats
			Lane          string  `json:"lane"`
			OldestSeconds float64 `json:"oldest_age_seconds"`
			LastSeq       uint64  `json:"last_seq"`
		}
		out := struct {
			File           string `json:"file"`
			Gateway        string `json:"gateway"`
			FileBytes      int64  `json:"file_bytes"`
			FreeBytes      int64  `json:"free_bytes"`
			PageSize       int    `json:"page_size"`
			Pages          int    `json:"pages"`
			FreePages      int    `json:"free_pages"`
			DamagedRecords int    `json:"damaged_records"`
			Damaged        string `json:"damaged,omitempty"`
			Lanes          []lane `json:"lanes"`
		}{File: in.Path, Gateway: in.Gateway, FileBytes: in.Stats.FileBytes, FreeBytes: in.Stats.FreeBytes,
			PageSize: in.PageSize, Pages: in.Pages, FreePages: in.FreePages, DamagedRecords: in.DamagedRecords}
		if in.Damaged != nil {
			out.Damaged = in.Damaged.Error()
		}
		for l, s := range in.Stats.Lanes {
			ln := lane{LaneStats: s, Lane: ferry.Lane(l).String(), LastSeq: in.Sequences[l]}
			if !s.Oldest.IsZero() {
				ln.OldestSeconds = now.Sub(s.Oldest).Seconds()
			}
			out.Lanes = append(out.Lanes, ln)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "buffer   %s (gateway %q)\n", in.Path, in.Gateway)
		fmt.Fprintf(stdout, "file     %s in %d pages of %d bytes; %d pages free (%s)\n\n",
			size(in.Stats.FileBytes), in.Pages, in.PageSize, in.FreePages, size(in.Stats.FreeBytes))
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "lane\trecords\tbytes\toldest\tage\tlast seq\t")
		for l, s := range in.Stats.Lanes {
			oldest, age := "-", "-"
			if !s.Oldest.IsZero() {
				oldest = s.Oldest.UTC().Format(time.RFC3339)
				age = now.Sub(s.Oldest).Round(time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t\n", ferry.Lane(l), s.Records, size(s.Bytes), oldest, age, in.Sequences[l])
		}
		tw.Flush()
	}
	if in.DamagedRecords > 0 {
		fmt.Fprintf(stderr, "warning: %d records fail their checksum; the next `ferry run` drops them\n", in.DamagedRecords)
	}
	if in.Damaged != nil {
		fmt.Fprintf(stderr, "warning: the file is damaged (%v); the figures are what can be read, and the next `ferry run` moves the file aside and salvages them\n", in.Damaged)
		return &exitError{code: 1, err: errors.New("buffer file is damaged")}
	}
	return nil
}

func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// The JSON forms of `ferry buffer dump`.
type (
	dumpRecord struct {
		ID            string     `json:"id"`
		Lane          string     `json:"lane"`
		Seq           uint64     `json:"seq"`
		Time          time.Time  `json:"time"`
		Bytes         int        `json:"bytes"`
		ConfigVersion string     `json:"config_version,omitempty"`
		Device        string     `json:"device,omitempty"`
		Scans         []dumpScan `json:"scans,omitempty"`
		Alert         *dumpAlert `json:"alert,omitempty"`
		Error         string     `json:"error,omitempty"`
	}
	dumpScan struct {
		Time    time.Time    `json:"time"`
		Samples []dumpSample `json:"samples"`
	}
	dumpSample struct {
		Point   string     `json:"point"`
		Value   dumpValue  `json:"value"`
		Quality string     `json:"quality"`
		Time    *time.Time `json:"time,omitempty"` // when it differs from the scan's
	}
	dumpAlert struct {
		ID       string            `json:"id"`
		Rule     string            `json:"rule"`
		Device   string            `json:"device,omitempty"`
		Point    string            `json:"point,omitempty"`
		Severity string            `json:"severity"`
		State    string            `json:"state"`
		Value    dumpValue         `json:"value"`
		Message  string            `json:"message,omitempty"`
		Labels   map[string]string `json:"labels,omitempty"`
		Since    time.Time         `json:"since,omitzero"`
		Time     time.Time         `json:"time,omitzero"`
	}
	// dumpValue writes a ferry.Value as a JSON number, bool, string or
	// null; NaN and infinities, which JSON lacks, as strings.
	dumpValue struct{ v ferry.Value }
)

func (d dumpValue) MarshalJSON() ([]byte, error) {
	if d.v.Kind() == ferry.KindFloat {
		if f := d.v.Float64(); math.IsNaN(f) || math.IsInf(f, 0) {
			return json.Marshal(d.v.String())
		}
	}
	return json.Marshal(d.v.Any())
}

func bufferDump(in *buffer.Inspection, lanes []ferry.Lane, limit int, stdout, stderr io.Writer) error {
	enc := json.NewEncoder(stdout)
	n, bad := 0, 0
	for _, lane := range lanes {
		left := 0
		if limit > 0 {
			left = limit - n
			if left <= 0 {
				break
			}
		}
		err := in.Records(lane, left, func(r ferry.Record, err error) error {
			n++
			d := dumpRecord{ID: r.ID, Lane: lane.String(), Seq: r.Seq, Time: r.Time.UTC(), Bytes: len(r.Data)}
			if err == nil {
				err = decodeRecord(&d, r)
			}
			if err != nil {
				bad++
				d.Error = err.Error()
			}
			return enc.Encode(d)
		})
		if err != nil {
			return err
		}
	}
	if in.Damaged != nil {
		fmt.Fprintf(stderr, "warning: the file is damaged (%v); only what can be read was printed\n", in.Damaged)
	}
	if bad > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d of %d records could not be decoded", bad, n)}
	}
	if in.Damaged != nil {
		return &exitError{code: 1, err: errors.New("buffer file is damaged")}
	}
	return nil
}

func decodeRecord(d *dumpRecord, r ferry.Record) error {
	if r.Lane == ferry.LaneAlerts {
		h, a, err := codec.DecodeAlert(r.Data)
		if err != nil {
			return err
		}
		d.ConfigVersion = h.ConfigVersion
		d.Alert = &dumpAlert{ID: a.ID, Rule: a.Rule, Device: a.Device, Point: a.Point, Severity: a.Severity.String(),
			State: a.State.String(), Value: dumpValue{a.Value}, Message: a.Message, Labels: a.Labels, Since: a.Since.UTC(), Time: a.Time.UTC()}
		if a.Since.IsZero() {
			d.Alert.Since = time.Time{}
		}
		if a.Time.IsZero() {
			d.Alert.Time = time.Time{}
		}
		return nil
	}
	tel, err := codec.DecodeTelemetry(r.Data)
	if err != nil {
		return err
	}
	d.ConfigVersion, d.Device = tel.ConfigVersion, tel.Device
	for _, sc := range tel.Scans {
		ds := dumpScan{Time: sc.Time.UTC(), Samples: make([]dumpSample, 0, len(sc.Samples))}
		for _, s := range sc.Samples {
			smp := dumpSample{Point: s.Point, Value: dumpValue{s.Value}, Quality: s.Quality.String()}
			if !s.Time.Equal(sc.Time) {
				t := s.Time.UTC()
				smp.Time = &t
			}
			ds.Samples = append(ds.Samples, smp)
		}
		d.Scans = append(d.Scans, ds)
	}
	return nil
}
