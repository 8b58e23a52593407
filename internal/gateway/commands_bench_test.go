package gateway

import (
	"encoding/json"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// BenchmarkCommandRoundTrip measures a command's round trip through a
// real gateway — NATS request → checks → id stored (fsync) → Modbus write
// → read back → reply stored (fsync) → reply — against the in-process
// Modbus server, and what the commands cost the polls of the same link:
// the poll duration (p50/p99) of the device while no command runs, and
// while commands run back to back.
//
//	go test -run '^$' -bench CommandRoundTrip -benchtime 500x ./internal/gateway
func BenchmarkCommandRoundTrip(b *testing.B) {
	bank := &testpeer.RegBank{}
	mb := testpeer.ModbusServer(b, bank)
	ns := testpeer.NATS(b)
	nc, _ := ns.Connect()
	dir := b.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	yaml := cmdConfigTB(b, filepath.Join(dir, "data"), mb.Addr(), ns.URL(), true, "50ms",
		"{name: speed, table: holding, address: 0, type: uint16}",
		"{name: temp, table: holding, address: 2, type: float32}",
		"{name: counter, table: holding, address: 30, type: uint32}",
		"{name: setpoint, table: holding, address: 10, type: float32, write: {min: 0, max: 1000000}}")
	testutil.WriteFile(b, path, yaml)
	cfg, err := LoadConfig(path)
	if err != nil {
		b.Fatal(err)
	}
	d, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler), Version: "bench", ShutdownTimeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	// Every scan of the device: record how long its poll took.
	var mu sync.Mutex
	var polls []time.Duration
	prev := d.pipe.observe
	d.pipe.observe = func(s *ferry.Scan) {
		prev(s)
		for _, st := range d.deviceStatus() {
			if st.Device == "press" && st.PollDuration > 0 {
				mu.Lock()
				polls = append(polls, st.PollDuration)
				mu.Unlock()
			}
		}
	}
	takePolls := func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		out := polls
		polls = nil
		return out
	}
	testutil.Run(b, "gateway", 30*time.Second, d.Run)
	testutil.Eventually(b, 20*time.Second, "the command subject to answer", func() error {
		_, err := nc.Request(cmdSubject, []byte(`{}`), time.Second)
		return err
	})

	// The polls alone, after a second of warm-up (the uplink connects),
	// for 3 s.
	time.Sleep(time.Second) // warm-up, not a wait for a condition
	takePolls()
	time.Sleep(3 * time.Second) // the measuring window of the baseline, not a wait for a condition
	base := takePolls()

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		req, _ := json.Marshal(ferry.CommandRequest{ID: "b" + strconv.Itoa(i), Device: "press", Point: "setpoint",
			Value: json.RawMessage(strconv.Itoa(i))})
		t0 := time.Now()
		m, err := nc.Request(cmdSubject, req, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		var r ferry.CommandReply
		if err := json.Unmarshal(m.Data, &r); err != nil || r.Status != ferry.CommandDone {
			b.Fatalf("reply %s (%v)", m.Data, err)
		}
	}
	b.StopTimer()
	took := time.Since(start)
	during := takePolls()
	b.ReportMetric(ms(pct(lat, 50)), "p50-ms")
	b.ReportMetric(ms(pct(lat, 99)), "p99-ms")
	b.ReportMetric(ms(pct(base, 50)), "poll-p50-ms")
	b.ReportMetric(ms(pct(base, 99)), "poll-p99-ms")
	b.ReportMetric(ms(pct(during, 50)), "poll-cmd-p50-ms")
	b.ReportMetric(ms(pct(during, 99)), "poll-cmd-p99-ms")
	b.ReportMetric(float64(len(during))/took.Seconds(), "polls/s-cmd")
	b.ReportMetric(float64(len(base))/3, "polls/s")
	if len(bank.Writes()) != b.N {
		b.Fatalf("%d writes at the server for %d commands", len(bank.Writes()), b.N)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// pct is the p-th percentile of ds (nearest rank); 0 for none.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

// cmdConfigTB is cmdConfig with the device's poll interval.
func cmdConfigTB(tb testing.TB, dataDir, mbAddr, natsURL string, enabled bool, interval string, points ...string) string {
	tb.Helper()
	y := cmdConfigWith(tb, dataDir, mbAddr, natsURL, enabled, points...)
	if !strings.Contains(y, "interval: 100ms") {
		tb.Fatal("no interval in the configuration")
	}
	return strings.Replace(y, "interval: 100ms", "interval: "+interval, 1)
}
