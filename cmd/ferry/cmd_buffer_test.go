package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
)

// fillBuffer writes 3 scans (one commit each) and 2 alerts into a buffer
// in dir and closes it, or leaves it open when keepOpen.
func fillBuffer(t *testing.T, dir string, keepOpen bool) *buffer.Buffer {
	t.Helper()
	var cfg buffer.Config
	cfg.SetDefaults()
	b, err := buffer.Open(dir, cfg, buffer.Options{Gateway: "press-line-3", ConfigVersion: "v7"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	at := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	for i := 0; i < 3; i++ {
		done := make(chan error, 1)
		b.AppendScan(ferry.Scan{Device: "press3", Time: at, Done: func(err error) { done <- err },
			Samples: []ferry.Sample{
				{Point: "oil_temp", Value: ferry.FloatValue(81.5), Time: at},
				{Point: "weird", Value: ferry.FloatValue(math.NaN()), Time: at.Add(time.Millisecond)},
				{Point: "dead", Quality: ferry.BadQuality(ferry.ReasonTimeout), Time: at},
			}})
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	b.AppendAlert(ferry.Alert{ID: "oil_hot/1", Rule: "oil_hot", Device: "press3", Point: "oil_temp", Severity: ferry.SeverityCritical, Value: ferry.FloatValue(81.5), Time: at})
	b.AppendAlert(ferry.Alert{ID: "oil_hot/1", Rule: "oil_hot", State: ferry.AlertCleared, Time: at})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if !keepOpen {
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestBufferStats(t *testing.T) {
	dir := t.TempDir()
	fillBuffer(t, dir, false)
	code, out, errOut := run(t, "buffer", "stats", "-data-dir", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"press-line-3", "pages free", "alerts        2", "telemetry        3", time.Now().UTC().Format("2006-01-02T")} {
		if !strings.Contains(out, want) {
			t.Errorf("stats output lacks %q:\n%s", want, out)
		}
	}
	code, out, errOut = run(t, "buffer", "stats", "-data-dir", dir, "-json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var st struct {
		FileBytes int64 `json:"file_bytes"`
		Lanes     []struct {
			Lane    string `json:"lane"`
			Records int    `json:"records"`
		} `json:"lanes"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if st.FileBytes == 0 || len(st.Lanes) != 2 || st.Lanes[0].Records != 2 || st.Lanes[1].Records != 3 {
		t.Fatalf("stats %+v", st)
	}
	// -config finds data_dir in the configuration.
	cfg := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(cfg, []byte("gateway: {id: gw1}\ndata_dir: "+dir+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := run(t, "buffer", "stats", "-config", cfg); code != 0 || !strings.Contains(out, dir) {
		t.Fatalf("-config: exit %d\n%s%s", code, out, errOut)
	}
}

func TestBufferDump(t *testing.T) {
	dir := t.TempDir()
	fillBuffer(t, dir, false)
	code, out, errOut := run(t, "buffer", "dump", "-data-dir", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var recs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		recs = append(recs, m)
	}
	if len(recs) != 5 {
		t.Fatalf("%d records, want 5 (2 alerts, then a telemetry record per commit):\n%s", len(recs), out)
	}
	if recs[0]["lane"] != "alerts" || recs[2]["lane"] != "telemetry" || !strings.HasPrefix(recs[2]["id"].(string), "press-line-3-telemetry-") {
		t.Fatalf("order or ids wrong:\n%s", out)
	}
	if a := recs[0]["alert"].(map[string]any); a["rule"] != "oil_hot" || a["severity"] != "critical" || a["value"] != 81.5 {
		t.Fatalf("alert %v", a)
	}
	scans := recs[2]["scans"].([]any)
	smp := scans[0].(map[string]any)["samples"].([]any)
	if len(scans) != 1 || recs[2]["config_version"] != "v7" || recs[2]["device"] != "press3" {
		t.Fatalf("telemetry record %v", recs[2])
	}
	if s := smp[1].(map[string]any); s["value"] != "NaN" || s["time"] == nil {
		t.Fatalf("NaN sample %v", s)
	}
	if s := smp[2].(map[string]any); s["quality"] != "bad: timeout" || s["value"] != nil {
		t.Fatalf("bad sample %v", s)
	}
	// -lane and -limit.
	_, out, _ = run(t, "buffer", "dump", "-data-dir", dir, "-lane", "telemetry")
	if n := strings.Count(out, "\n"); n != 3 || strings.Contains(out, `"alerts"`) {
		t.Fatalf("-lane telemetry: %d lines\n%s", n, out)
	}
	_, out, _ = run(t, "buffer", "dump", "-data-dir", dir, "-limit", "1")
	if n := strings.Count(out, "\n"); n != 1 || !strings.Contains(out, `"lane":"alerts"`) {
		t.Fatalf("-limit 1: %q", out)
	}
}

func TestBufferCommandErrors(t *testing.T) {
	dir := t.TempDir()
	fillBuffer(t, dir, true) // a ferry runs: the lock is held
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"locked", []string{"buffer", "stats", "-data-dir", dir}, 1, "another ferry probably runs"},
		{"locked dump", []string{"buffer", "dump", "-data-dir", dir}, 1, "stop it first"},
		{"no buffer", []string{"buffer", "stats", "-data-dir", t.TempDir()}, 1, "no buffer in"},
		{"both flags", []string{"buffer", "stats", "-data-dir", dir, "-config", "x"}, 2, "not both"},
		{"bad lane", []string{"buffer", "dump", "-data-dir", dir, "-lane", "video"}, 2, `lane "video" is not one of alerts, telemetry`},
		{"bad subcommand", []string{"buffer", "shrink"}, 2, `unknown buffer subcommand "shrink"`},
		{"no subcommand", []string{"buffer"}, 2, "want a subcommand"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := run(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(errOut, tt.wantErr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut, tt.wantCode, tt.wantErr)
			}
		})
	}
}

// TestBufferDumpDamagedFileFails: on a damaged file, dump prints what can
// be read and exits 1, as stats does and the buffer README says; a script
// that saves a dump before deleting the file must not take a partial (here
// empty) dump for a whole one.
func TestBufferDumpDamagedFileFails(t *testing.T) {
	dir := t.TempDir()
	fillBuffer(t, dir, false)
	p := filepath.Join(dir, "buffer.db")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// Give every page after the two meta pages an invalid page type, so
	// that the tree cannot be walked whatever bbolt's layout.
	pageSize := int(binary.LittleEndian.Uint32(data[24:]))
	for off := 2 * pageSize; off+10 <= len(data); off += pageSize {
		data[off+8], data[off+9] = 0xff, 0xff
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"stats", "dump"} {
		code, _, errOut := run(t, "buffer", sub, "-data-dir", dir)
		if code != 1 || !strings.Contains(errOut, "damaged") {
			t.Errorf("buffer %s: exit %d, stderr %q; want 1 and the damage named", sub, code, errOut)
		}
	}
}
