package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/gateway"
	"github.com/ferry-edge/ferry/internal/history"
)

const historyUsage = `Usage:
  ferry history DEVICE POINT [-since 24h] [-step D] [-csv] [-config FILE | -url URL | -data-dir DIR]

Prints one point's local history (docs/history.md): raw samples for a range
up to an hour, per-minute rollups (min, max, mean, last, count, worst
quality) merged into buckets for longer ones, or the bucket -step asks for
(below 1m: raw samples).

Where it reads:
  -url URL       a running ferry's API (http://127.0.0.1:9440)
  -data-dir DIR  the history file (DIR/history.db) of a stopped ferry
  otherwise      the configuration (-config, default %s): its http.listen
                 if a ferry answers there, else its data_dir's history.db

With -csv it prints device,point,time,min,max,mean,last,count,quality, one
row per bucket; an empty value is a gap (only Bad samples in it).
`

// histRow is one bucket as the command prints it; nil is a gap.
type histRow struct {
	T       time.Time `json:"t"`
	Min     *float64  `json:"min"`
	Max     *float64  `json:"max"`
	Mean    *float64  `json:"mean"`
	Last    *float64  `json:"last"`
	Count   uint32    `json:"count"`
	Quality string    `json:"quality"`
}

type histSeries struct {
	Device     string    `json:"device"`
	Point      string    `json:"point"`
	Resolution string    `json:"resolution"`
	Points     []histRow `json:"points"`
}

func cmdHistory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("history", stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, historyUsage, config.DefaultPath) }
	since := fs.Duration("since", 24*time.Hour, "how far back")
	step := fs.Duration("step", 0, "bucket (0: chosen for the range; below 1m: raw samples)")
	asCSV := fs.Bool("csv", false, "print CSV")
	cfgPath := fs.String("config", "", "the configuration of the ferry to read (default "+config.DefaultPath+")")
	apiURL := fs.String("url", "", "read a running ferry's API at this URL")
	dataDir := fs.String("data-dir", "", "read DIR/history.db of a stopped ferry")
	// Flags may come before, between or after DEVICE and POINT.
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != 2 {
		fs.Usage()
		return usageError("want DEVICE and POINT")
	}
	if *since <= 0 || *step < 0 {
		return usageError("-since must be positive and -step not negative")
	}
	n := 0
	for _, s := range []string{*cfgPath, *apiURL, *dataDir} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return usageError("give at most one of -config, -url and -data-dir")
	}
	dev, pt := pos[0], pos[1]
	to := time.Now()
	from := to.Add(-*since)

	var s histSeries
	var err error
	switch {
	case *apiURL != "":
		s, err = historyFromAPI(ctx, *apiURL, dev, pt, from, to, *step)
	case *dataDir != "":
		s, err = historyFromFile(*dataDir, dev, pt, from, to, *step)
	default:
		path := *cfgPath
		if path == "" {
			path = config.DefaultPath
		}
		c, lerr := gateway.LoadConfig(path)
		if lerr != nil {
			return fmt.Errorf("load %s: %w", path, lerr)
		}
		s, err = historyFromConfig(ctx, c, dev, pt, from, to, *step)
	}
	if err != nil {
		return err
	}
	if *asCSV {
		return writeHistoryCSV(stdout, s)
	}
	return writeHistoryTable(stdout, s)
}

// historyFromConfig asks the ferry of c over its API, or reads its file
// when none answers.
func historyFromConfig(ctx context.Context, c *config.Config, dev, pt string, from, to time.Time, step time.Duration) (histSeries, error) {
	if !c.HTTP.Disabled() {
		host, port, err := net.SplitHostPort(c.HTTP.Listen)
		if err == nil {
			if host == "" || host == "0.0.0.0" || host == "::" {
				host = "127.0.0.1"
			}
			scheme := "http"
			if c.HTTP.TLS != nil {
				scheme = "https"
			}
			base := scheme + "://" + net.JoinHostPort(host, port)
			s, err := historyFromAPI(ctx, base, dev, pt, from, to, step)
			var op *net.OpError
			if !errors.As(err, &op) {
				return s, err
			}
			// Nothing listens: a stopped ferry; read its file.
		}
	}
	s, err := historyFromFile(c.DataDir, dev, pt, from, to, step)
	if errors.Is(err, history.ErrLocked) {
		return s, fmt.Errorf("%w: a ferry runs but its API did not answer at %s (give -url)", err, c.HTTP.Listen)
	}
	return s, err
}

func historyFromAPI(ctx context.Context, base, dev, pt string, from, to time.Time, step time.Duration) (histSeries, error) {
	q := url.Values{"device": {dev}, "point": {pt}, "from": {from.UTC().Format(time.RFC3339Nano)}, "to": {to.UTC().Format(time.RFC3339Nano)}}
	if step > 0 {
		q.Set("step", step.String())
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/history?"+q.Encode(), nil)
	if err != nil {
		return histSeries{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return histSeries{}, ue.Err
		}
		return histSeries{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return histSeries{}, fmt.Errorf("read %s: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		return histSeries{}, fmt.Errorf("GET %s/api/history: %s: %s", base, resp.Status, e.Error)
	}
	var out []histSeries
	if err := json.Unmarshal(body, &out); err != nil || len(out) != 1 {
		return histSeries{}, fmt.Errorf("GET %s/api/history: unexpected answer: %v", base, err)
	}
	return out[0], nil
}

func historyFromFile(dir, dev, pt string, from, to time.Time, step time.Duration) (histSeries, error) {
	var cfg history.Config
	cfg.SetDefaults()
	st, err := history.Open(dir, cfg, history.Options{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		return histSeries{}, fmt.Errorf("no history in %s (%s does not exist; is history.enabled on?)", dir, filepath.Join(dir, history.FileName))
	}
	if err != nil {
		return histSeries{}, err
	}
	defer st.Close()
	s, err := st.Query(history.Query{Device: dev, Point: pt, From: from, To: to, Step: step})
	if err != nil {
		return histSeries{}, err
	}
	out := histSeries{Device: dev, Point: pt, Resolution: "raw", Points: make([]histRow, len(s.Points))}
	if s.Step > 0 {
		out.Resolution = strings.TrimSuffix(strings.TrimSuffix(s.Step.String(), "0s"), "0m")
	}
	num := func(f float64) *float64 {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil
		}
		return &f
	}
	for i, p := range s.Points {
		out.Points[i] = histRow{T: p.Time, Min: num(p.Min), Max: num(p.Max), Mean: num(p.Mean), Last: num(p.Last), Count: p.Count, Quality: p.Quality.String()}
	}
	return out, nil
}

func fmtNum(f *float64) string {
	if f == nil {
		return ""
	}
	return strconv.FormatFloat(*f, 'g', -1, 64)
}

func writeHistoryCSV(w io.Writer, s histSeries) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"device", "point", "time", "min", "max", "mean", "last", "count", "quality"})
	for _, p := range s.Points {
		_ = cw.Write([]string{s.Device, s.Point, p.T.UTC().Format(time.RFC3339Nano), fmtNum(p.Min), fmtNum(p.Max), fmtNum(p.Mean), fmtNum(p.Last), strconv.FormatUint(uint64(p.Count), 10), p.Quality})
	}
	cw.Flush()
	return cw.Error()
}

func writeHistoryTable(w io.Writer, s histSeries) error {
	fmt.Fprintf(w, "%s.%s  resolution %s  %d rows\n", s.Device, s.Point, s.Resolution, len(s.Points))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if s.Resolution == "raw" {
		fmt.Fprintln(tw, "TIME\tVALUE\tQUALITY")
		for _, p := range s.Points {
			v := fmtNum(p.Last)
			if v == "" {
				v = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", p.T.Local().Format(time.DateTime+".000"), v, p.Quality)
		}
		return tw.Flush()
	}
	fmt.Fprintln(tw, "TIME\tMIN\tMAX\tMEAN\tLAST\tCOUNT\tWORST")
	for _, p := range s.Points {
		cell := func(f *float64) string {
			if f == nil {
				return "-"
			}
			return strconv.FormatFloat(*f, 'g', 6, 64)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", p.T.Local().Format(time.DateTime), cell(p.Min), cell(p.Max), cell(p.Mean), cell(p.Last), p.Count, p.Quality)
	}
	return tw.Flush()
}
