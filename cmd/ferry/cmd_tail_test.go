package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/codec"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink"
)

// sliceSource hands out its records once and records the acks.
type sliceSource struct {
	mu    sync.Mutex
	recs  []ferry.Record
	acked int
}

func (s *sliceSource) Next(ctx context.Context, max, _ int) ([]ferry.Record, error) {
	s.mu.Lock()
	if len(s.recs) > 0 {
		n := min(max, len(s.recs))
		out := s.recs[:n]
		s.recs = s.recs[n:]
		s.mu.Unlock()
		return out, nil
	}
	s.mu.Unlock()
	<-ctx.Done()
	return nil, ctx.Err()
}

func (s *sliceSource) Ack(recs ...ferry.Record) error {
	s.mu.Lock()
	s.acked += len(recs)
	s.mu.Unlock()
	return nil
}

func (s *sliceSource) Release(recs ...ferry.Record) {
	s.mu.Lock()
	s.recs = append(recs, s.recs...)
	s.mu.Unlock()
}

// TestTail publishes through a real uplink to an in-process JetStream and
// reads it back with `ferry tail`, by URL and by configuration file.
func TestTail(t *testing.T) {
	srv, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(srv.Shutdown)
	url := srv.ClientURL()

	t0 := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	src := &sliceSource{}
	tel := codec.AppendTelemetry(nil, "cfg1", "press3", []ferry.Scan{{Device: "press3", Time: t0, Samples: []ferry.Sample{
		{Point: "oil_temp", Value: ferry.FloatValue(81.5), Time: t0},
		{Point: "dead", Quality: ferry.BadQuality("timeout"), Time: t0},
	}}})
	al := codec.AppendAlert(nil, "cfg1", &ferry.Alert{ID: "a1", Rule: "oil_hot", Device: "press3", Point: "oil_temp", Severity: ferry.SeverityCritical, Value: ferry.FloatValue(81.5), Message: "too hot", Time: t0.Add(time.Second)})
	src.recs = []ferry.Record{
		{Lane: ferry.LaneAlerts, Seq: 1, ID: "gw1-alerts-1", Data: al},
		{Lane: ferry.LaneTelemetry, Seq: 1, ID: "gw1-telemetry-1", Data: tel},
	}
	cfg := uplink.DefaultNATSConfig(url)
	cfg.CreateStream = true
	u, err := uplink.New(cfg, src, uplink.Options{Gateway: "gw1", Site: "lyon", Version: "test", Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	u.SetCatalog(uplink.Catalog{ConfigVersion: "cfg1", Points: []ferry.PointInfo{{Device: "press3", Point: "oil_temp", Protocol: "modbus", Source: "unit 1 holding 100"}}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testutil.WaitFor(t, 10*time.Second, "both records acknowledged", func() bool {
		src.mu.Lock()
		defer src.mu.Unlock()
		return src.acked == 2
	})

	dir := t.TempDir()
	conf := filepath.Join(dir, "ferry.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf("gateway: {id: gw1, site: lyon}\nuplink:\n  nats:\n    urls: [%q]\n", url)), 0o600)

	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"compact by url", []string{"-url", url, "-all", "-n", "3", "-compact"}, []string{
			`2025-03-01T10:00:01.000Z gw1 ALERT critical raised oil_hot press3.oil_temp=81.5 "too hot"`,
			`2025-03-01T10:00:00.000Z gw1/press3 oil_temp=81.5 dead=null(bad: timeout)`,
			`2025-03-01T10:00:00.000Z gw1 CATALOG cfg1: 1 devices, 1 points`,
		}},
		{"json by config", []string{"-config", conf, "-all", "-n", "3"}, []string{
			`"subject":"ferry.lyon.gw1.alerts","id":"gw1-alerts-1","kind":"alert","ferry_version":"test","config_version":"cfg1","data":{"gateway":"gw1"`,
			`"subject":"ferry.lyon.gw1.telemetry.press3","id":"gw1-telemetry-1","kind":"telemetry"`,
			`"subject":"ferry.lyon.gw1.catalog","kind":"catalog"`,
		}},
		// -since goes back by the time the stream stored each message:
		// all three were stored within the last hour.
		{"since", []string{"-config", conf, "-since", "1h", "-n", "3", "-compact"}, []string{
			`gw1 ALERT critical raised oil_hot`,
			`gw1/press3 oil_temp=81.5`,
			`gw1 CATALOG cfg1`,
		}},
		{"one subject", []string{"-config", conf, "-all", "-n", "1", "-compact", "-subject", "ferry.*.*.telemetry.>"}, []string{
			`gw1/press3 oil_temp=81.5`,
		}},
		{"one point", []string{"-url", url, "-all", "-n", "3", "-compact", "-point", "press3.oil_temp"}, []string{
			`2025-03-01T10:00:01.000Z gw1 ALERT critical raised oil_hot`,
			`2025-03-01T10:00:00.000Z gw1/press3 oil_temp=81.5` + "\n",
			`gw1 CATALOG cfg1`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var out, errOut bytes.Buffer
			code := runMain(ctx, append([]string{"tail"}, tt.args...), &out, &errOut)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			lines := strings.SplitAfter(strings.TrimSpace(out.String())+"\n", "\n")
			lines = lines[:len(lines)-1]
			if len(lines) != len(tt.want) {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), len(tt.want), out.String())
			}
			for _, w := range tt.want {
				found := false
				for _, l := range lines {
					if strings.Contains(l, w) {
						found = true
					}
				}
				if !found {
					t.Errorf("no line contains %s\n%s", w, out.String())
				}
			}
			if !slices.Contains(tt.args, "-compact") {
				for _, l := range lines {
					if !json.Valid([]byte(l)) {
						t.Errorf("not JSON: %s", l)
					}
				}
			}
		})
	}

	// Usage mistakes.
	for _, args := range [][]string{{"tail"}, {"tail", "-url", url, "-all", "-since", "1m"}, {"tail", "-url", url, "-n", "-1"}} {
		if code, _, errOut := run(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errOut)
		}
	}
	if code, _, errOut := run(t, "tail", "-url", url, "-stream", "NOPE", "-n", "1"); code != 1 || !strings.Contains(errOut, "NOPE") {
		t.Errorf("missing stream: exit %d, %s", code, errOut)
	}
}
