package uplink

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// The cost of the retention (issue 28), for scripts/bench.sh retention:
// a real buffer and uplink at 10k samples/s (100 devices of 100 points at
// 1 Hz) into a nats-server child process, with retain_acked off and at
// 5m: this process's CPU (the buffer, the uplink and the load generator,
// which is the same in both runs), buffer.db's size and the bytes
// retained. And the throughput a nats-server gives with sync_interval at
// its default (2m), 1s and always. FERRY_BENCH=retention runs it;
// FERRY_BENCH_WINDOW sets the measured time of each run (default 60s).
// Nothing is asserted but that the runs lose nothing: the figures are
// for reading.

func benchWindow(t *testing.T) time.Duration {
	return testutil.EnvDuration(t, "FERRY_BENCH_WINDOW", time.Minute)
}

type retentionRun struct {
	retain             time.Duration
	samples            int64
	cpu                time.Duration
	fileBytes          int64
	keptRecs           int
	keptBytes          int64
	published, pubByte float64
}

func TestRetentionCost(t *testing.T) {
	if os.Getenv("FERRY_BENCH") != "retention" {
		t.Skip("FERRY_BENCH=retention runs it (scripts/bench.sh retention)")
	}
	bin := testpeer.BuildNATSServer(t)
	window := benchWindow(t)
	var runs []retentionRun
	for _, retain := range []time.Duration{0, 5 * time.Minute} {
		runs = append(runs, retentionCostRun(t, bin, retain, window))
	}
	fmt.Printf("retention cost: 10k samples/s (100 devices x 100 points at 1 Hz), %v each, nats-server (child process, sync_interval 2m)\n", window)
	fmt.Printf("| retain_acked | samples | CPU of ferry's process | CPU per 1M samples | buffer.db | retained records | retained bytes | retained at 5m (projected) |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		proj := "—"
		if r.retain > 0 {
			proj = fmt.Sprintf("%.1f MiB", float64(r.keptBytes)/float64(window)*float64(r.retain)/(1<<20))
		}
		fmt.Printf("| %v | %d | %.2fs (%.1f%% of a core) | %.2fs | %.1f MiB | %d | %.1f MiB | %s |\n",
			r.retain, r.samples, r.cpu.Seconds(), 100*r.cpu.Seconds()/window.Seconds(), r.cpu.Seconds()/float64(r.samples)*1e6,
			float64(r.fileBytes)/(1<<20), r.keptRecs, float64(r.keptBytes)/(1<<20), proj)
	}
	fmt.Printf("upstream: %.0f messages, %.1f MiB (retention off); %.0f messages, %.1f MiB (on)\n",
		runs[0].published, runs[0].pubByte/(1<<20), runs[1].published, runs[1].pubByte/(1<<20))
}

func retentionCostRun(t *testing.T, bin string, retain, window time.Duration) retentionRun {
	srv := testpeer.NewNATSProc(t, bin, "bench")
	srv.Start()
	reg := prometheus.NewRegistry()
	var bcfg buffer.Config
	bcfg.SetDefaults()
	bcfg.RetainAcked = retain
	buf, err := buffer.Open(t.TempDir(), bcfg, buffer.Options{Gateway: "gw1", Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	cfg := DefaultNATSConfig(srv.URL())
	cfg.CreateStream = true
	u, err := New(cfg, buf, Options{Gateway: "gw1", Site: "bench", Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	stop := testutil.Run(t, "Run", 30*time.Second, u.Run)
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), window)
	defer cancel()
	var wg sync.WaitGroup
	var samples int64
	start := cpuTime()
	wg.Add(1)
	go func() {
		defer wg.Done()
		// 100 devices of 100 points each second: a tick every 10ms
		// takes one device (the pacing is the load, not a wait).
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			dev := "dev" + strconv.Itoa(i%100)
			now := time.Now()
			s := ferry.Scan{Device: dev, Time: now, Samples: make([]ferry.Sample, 100)}
			for p := range s.Samples {
				s.Samples[p] = ferry.Sample{Device: dev, Point: "p" + strconv.Itoa(p), Value: ferry.FloatValue(float64(i*100 + p)), Time: now}
			}
			buf.AppendScan(s)
			samples += 100
		}
	}()
	wg.Wait()
	cpu := cpuTime() - start
	testutil.WaitFor(t, time.Minute, "the backlog drained", func() bool {
		st := buf.Stats()
		return st.Lanes[ferry.LaneTelemetry].Records == 0 && st.QueueLength == 0
	})
	r := retentionRun{retain: retain, samples: samples, cpu: cpu, fileBytes: buf.Stats().FileBytes}
	r.keptRecs, r.keptBytes = buf.KeptStats()
	r.published = metric(t, reg, "ferry_uplink_published_total")
	r.pubByte = metric(t, reg, "ferry_uplink_bytes_total")
	if got := metric(t, reg, "ferry_uplink_samples_total"); got != float64(samples) {
		t.Errorf("stream acknowledged %v samples of %d", got, samples)
	}
	stop()
	srv.Kill()
	return r
}

// TestSyncIntervalCost: what sync_interval costs a nats-server in
// throughput, with messages of the size of ferry's batches and of single
// records, published with 256 outstanding (ferry's own window is larger).
func TestSyncIntervalCost(t *testing.T) {
	if os.Getenv("FERRY_BENCH") != "retention" {
		t.Skip("FERRY_BENCH=retention runs it (scripts/bench.sh retention)")
	}
	bin := testpeer.BuildNATSServer(t)
	window := min(benchWindow(t), 10*time.Second)
	fmt.Printf("nats-server throughput by sync_interval (child process, one stream R1 on the test's disk, async publishes with 256 outstanding, %v each)\n", window)
	fmt.Printf("| sync_interval | message | messages/s | MiB/s |\n|---|---|---|---|\n")
	for _, sync := range []string{"2m", "1s", "always"} {
		for _, size := range []int{1 << 10, 32 << 10} {
			n, d := syncThroughput(t, bin, sync, size, window)
			fmt.Printf("| %s | %d KiB | %.0f | %.1f |\n", sync, size>>10, float64(n)/d.Seconds(), float64(n)*float64(size)/d.Seconds()/(1<<20))
		}
	}
}

func syncThroughput(t *testing.T, bin, sync string, size int, window time.Duration) (int, time.Duration) {
	srv := testpeer.NewNATSProc(t, bin, "sync")
	srv.SyncInterval = sync
	srv.Start()
	defer srv.Kill()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	start := time.Now()
	n := 0
	for time.Since(start) < window {
		if _, err := js.PublishAsync("s.x", data); err != nil {
			if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				continue // the window is full: the server is the bottleneck
			}
			t.Fatal(err)
		}
		n++
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		t.Fatal("publishes not acknowledged within a minute")
	}
	return n, time.Since(start)
}
