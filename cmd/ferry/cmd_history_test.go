package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/gateway"
	"github.com/ferry-edge/ferry/internal/history"
	"github.com/ferry-edge/ferry/internal/plantsim"
	"github.com/ferry-edge/ferry/internal/testutil"
)

func runHistory(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runMain(context.Background(), append([]string{"history"}, args...), &out, &errb)
	return out.String(), errb.String(), code
}

// TestHistoryCommandFile reads the history file of a stopped ferry: a
// table of raw samples, CSV, and rollups for a longer range.
func TestHistoryCommandFile(t *testing.T) {
	dir := t.TempDir()
	var cfg history.Config
	cfg.SetDefaults()
	st, err := history.Open(dir, cfg, history.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	for i := range 30 {
		at := now.Add(-time.Duration(30-i) * time.Minute)
		st.Add(&ferry.Scan{Device: "press3", Time: at, Samples: []ferry.Sample{{Device: "press3", Point: "oil_temp", Value: ferry.FloatValue(80 + float64(i)), Time: at}}})
	}
	at := now.Add(-90 * time.Second)
	st.Add(&ferry.Scan{Device: "press3", Time: at, Samples: []ferry.Sample{{Device: "press3", Point: "oil_temp", Quality: ferry.BadQuality(ferry.ReasonTimeout), Time: at}}})
	if err := st.Commit(); err != nil {
		t.Fatal(err)
	}
	st.Close()

	out, errs, code := runHistory(t, "press3", "oil_temp", "-since", "1h", "-data-dir", dir, "-csv")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(rows) != 32 {
		t.Fatalf("csv: %v, %d rows:\n%s", err, len(rows), out)
	}
	if rows[1][3] != "80" || rows[31][3] != "109" || rows[30][5] != "" || rows[30][8] != "bad" {
		t.Errorf("csv rows: %q %q %q", rows[1], rows[30], rows[31])
	}
	out, _, code = runHistory(t, "-since", "24h", "press3", "oil_temp", "-data-dir", dir)
	if code != 0 || !strings.Contains(out, "resolution 1m") || !strings.Contains(out, "MEAN") {
		t.Errorf("24h table (exit %d):\n%s", code, out)
	}
	if _, errs, code := runHistory(t, "press3", "-data-dir", dir); code != 2 {
		t.Errorf("one argument: exit %d: %s", code, errs)
	}
	if _, errs, code := runHistory(t, "press3", "oil_temp", "-data-dir", t.TempDir()); code != 1 || !strings.Contains(errs, "no history in") {
		t.Errorf("no file: exit %d: %s", code, errs)
	}
}

// TestHistoryCommandDaemon asks a running gateway's API, then, once it
// stopped, reads its file through the same configuration.
func TestHistoryCommandDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and a gateway")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	plant, err := plantsim.Start(ctx, plantsim.Options{Presses: 1, Rate: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer plant.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	pr := plant.Presses[0]
	testutil.WriteFile(t, path, fmt.Sprintf(`gateway: {id: gw1, site: test}
data_dir: %s
http: {listen: "127.0.0.1:0"}
history: {enabled: true, commit_interval: 100ms}
devices:
  - name: press1
    modbus: {url: "tcp://%s", unit: 1, interval: 50ms, timeout: 500ms}
    points:
      - {name: speed, table: holding, address: %d, type: uint16}
`, filepath.Join(dir, "data"), pr.Addr, plantsim.HRSpeed))
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	gw, err := gateway.New(cfg, gateway.Options{Logger: slog.New(slog.NewTextHandler(logs, nil)), ShutdownTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- gw.Run(runCtx) }()
	defer func() { stop(); <-done }()
	var base string
	eventually(t, 20*time.Second, "ferry's http listener", func() error {
		m := httpListening.FindStringSubmatch(logs.String())
		if m == nil {
			return fmt.Errorf("no http listening line")
		}
		base = m[2] + "://" + m[1]
		return nil
	})
	var rows [][]string
	eventually(t, 20*time.Second, "10 samples over the API", func() error {
		out, errs, code := runHistory(t, "press1", "speed", "-since", "10m", "-url", base, "-csv")
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, errs)
		}
		rows, _ = csv.NewReader(strings.NewReader(out)).ReadAll()
		if len(rows) < 11 {
			return fmt.Errorf("%d rows", len(rows))
		}
		return nil
	})
	// While it runs, -config with a listener on port 0 finds no API at
	// the configured address, and the file is locked: a clear error.
	if _, errs, code := runHistory(t, "press1", "speed", "-config", path); code != 1 || !strings.Contains(errs, "in use") {
		t.Errorf("running, -config: exit %d: %s", code, errs)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil // for the deferred receive
	out, errs, code := runHistory(t, "press1", "speed", "-since", "10m", "-config", path, "-csv")
	if code != 0 {
		t.Fatalf("stopped, -config: exit %d: %s", code, errs)
	}
	after, _ := csv.NewReader(strings.NewReader(out)).ReadAll()
	if len(after) < len(rows) {
		t.Errorf("from the file: %d rows, over the API before: %d", len(after), len(rows))
	}
	if _, err := os.Stat(filepath.Join(dir, "data", history.FileName)); err != nil {
		t.Fatal(err)
	}
}
