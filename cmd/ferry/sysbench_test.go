package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry/internal/plantsim"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink"
)

// TestSystemBench measures the whole gateway: the ferry binary reads a
// simulated plant of 20 Modbus presses with 513 points each (10k tags at
// 1 Hz), evaluates the demo rules, buffers and forwards to JetStream. It
// prints "BENCH name value unit" lines that scripts/bench.sh turns into a
// table. It runs only when FERRY_BENCH=1 (it takes about two minutes and
// asserts nothing about speed). FERRY_BENCH_SPARKLINES sets the console's
// http.sparklines; FERRY_BENCH_PROFILES=DIR saves heap and CPU profiles;
// FERRY_BENCH_LOG=FILE keeps ferry's output; FERRY_BENCH_ENV="GOGC=50 …"
// is added to ferry's environment; FERRY_BENCH_WARMUP (default 10s) is
// how long ferry runs before the measured window.
func TestSystemBench(t *testing.T) {
	if os.Getenv("FERRY_BENCH") == "" {
		t.Skip("set FERRY_BENCH=1 (scripts/bench.sh does)")
	}
	presses, extra := 20, 500
	if v, err := strconv.Atoi(os.Getenv("FERRY_BENCH_PRESSES")); err == nil && v > 0 {
		presses = v
	}
	window := testutil.EnvDuration(t, "FERRY_BENCH_WINDOW", 30*time.Second)
	// Longer than buffer.retain_acked (5 min), buffer.db reaches its
	// steady size.
	warmup := testutil.EnvDuration(t, "FERRY_BENCH_WARMUP", 10*time.Second)
	bin := buildFerry(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	plant, err := plantsim.Start(ctx, plantsim.Options{Presses: presses, ExtraPoints: extra, Rate: time.Second, NATSDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	defer plant.Close()
	httpAddr := "127.0.0.1:0" // the port is read from ferry's log
	b, err := plant.Config(plantsim.ConfigOptions{GatewayID: "bench", DataDir: filepath.Join(dir, "data"), HTTP: httpAddr, Interval: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	// The profiles saveProfiles reads are served only with http.pprof.
	if http := fmt.Sprintf("http: {listen: %q", httpAddr); bytes.Contains(b, []byte(http)) {
		b = bytes.Replace(b, []byte(http), []byte(http+", pprof: true"), 1)
	} else {
		t.Fatalf("the plantsim config has no %q", http)
	}
	if v := os.Getenv("FERRY_BENCH_SPARKLINES"); v != "" {
		// The console's sparkline history, the largest part of the heap.
		http := fmt.Sprintf("http: {listen: %q", httpAddr)
		if !bytes.Contains(b, []byte(http)) {
			t.Fatalf("the plantsim config has no %q", http)
		}
		b = bytes.Replace(b, []byte(http), []byte(http+", sparklines: "+v), 1)
	}
	cfg := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(cfg, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f := testpeer.NewChild(t, bin, "run", "-config", cfg)
	// For ferry only: GOGC=50 set for the whole go test would slow the
	// in-process plant too.
	f.Env = strings.Fields(os.Getenv("FERRY_BENCH_ENV"))
	f.Start()
	base := httpBase(t, f)
	waitReady(t, base)
	report := func(name string, v float64, unit string) {
		fmt.Printf("BENCH %s %.6g %s\n", name, v, unit)
	}

	// Steady state: 10k tags at 1 Hz.
	time.Sleep(warmup)
	m0 := scrape(t, base)
	cpu0 := procCPU(t, f.Pid())
	start := time.Now()
	time.Sleep(window)
	m1 := scrape(t, base)
	cpu1 := procCPU(t, f.Pid())
	el := time.Since(start)
	samples := m1.sum("ferry_pipeline_samples_total") - m0.sum("ferry_pipeline_samples_total")
	report("tags", float64(presses*(extra+13)+7), "")
	report("ingest_rate", samples/el.Seconds(), "samples/s")
	report("cpu_per_million", (cpu1-cpu0).Seconds()/samples*1e6, "s")
	rss, anon := procRSS(t, f.Pid())
	report("rss", rss/(1<<20), "MiB")
	report("rss_anon", anon/(1<<20), "MiB")
	db := filepath.Join(dir, "data", "buffer.db")
	files := testutil.MappedRSS(t, f.Pid())
	report("rss_binary", files[bin]/(1<<20), "MiB")
	// The kernel maps most of an executable it runs, used or not (here
	// about four fifths of it: a Go hello-world, perl and gdb measured the
	// same), so the binary's pages follow its size more than its use.
	if fi, err := os.Stat(bin); err == nil {
		report("binary_size", float64(fi.Size())/(1<<20), "MiB")
	}
	report("rss_buffer_file", files[db]/(1<<20), "MiB")
	// Where the anonymous part goes, as the Go runtime counts it: the heap
	// in use and the goal the next GC starts at (twice the live heap at
	// GOGC=100), goroutine stacks, and all the runtime holds from the OS.
	for _, g := range []string{"go_memstats_heap_inuse_bytes", "go_memstats_next_gc_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_sys_bytes"} {
		report(strings.TrimSuffix(strings.TrimPrefix(g, "go_memstats_"), "_bytes"), m1.sum(g)/(1<<20), "MiB")
	}
	report("goroutines", m1.sum("go_goroutines"), "")
	// How often the heap reached its goal: the collector's cost scales
	// with this (each cycle marks the live heap).
	report("gc_per_s", (m1.sum("go_gc_duration_seconds_count")-m0.sum("go_gc_duration_seconds_count"))/el.Seconds(), "")
	if dir := os.Getenv("FERRY_BENCH_PROFILES"); dir != "" {
		saveProfiles(t, base, dir)
	}
	reqs := m1.sum(`ferry_modbus_requests_total`) - m0.sum(`ferry_modbus_requests_total`)
	scans := m1.sum(`ferry_device_scans_total`, `protocol="modbus"`) - m0.sum(`ferry_device_scans_total`, `protocol="modbus"`)
	planned := m1.sum("ferry_modbus_planned_requests") / float64(presses)
	report("modbus_requests_per_scan", reqs/scans, "")
	report("modbus_planned_per_scan", planned, "")
	lat := streamLatency(t, plant.NATS.URL, start, start.Add(window))
	if len(lat) > 0 {
		report("scan_to_stream_p50", float64(lat[len(lat)/2])/float64(time.Millisecond), "ms")
		report("scan_to_stream_p99", float64(lat[len(lat)*99/100])/float64(time.Millisecond), "ms")
		report("scan_to_stream_max", float64(lat[len(lat)-1])/float64(time.Millisecond), "ms")
		if testing.Verbose() {
			for _, q := range []int{90, 95, 98, 99} {
				t.Logf("scan → stream p%d %v", q, lat[len(lat)*q/100])
			}
			for k, v := range m1 {
				if strings.Contains(k, "commit_duration_seconds_bucket") || strings.Contains(k, "ack_latency_seconds_bucket") {
					t.Logf("%s %v", k, v-m0[k])
				}
			}
		}
	}

	// A backlog: NATS down for the window, then the drain while live data
	// keeps coming.
	plant.NATS.Shutdown()
	time.Sleep(window)
	if err := plant.NATS.Start(); err != nil {
		t.Fatal(err)
	}
	// The drain starts when the uplink is connected again (its reconnect
	// backoff is not the drain's speed) and ends when the backlog is gone.
	// It is watched through /api/status: /metrics at 10k tags costs ferry
	// about 1.5 MB of garbage a scrape, and fifty scrapes a second (a
	// Prometheus scrapes every 15 s) were the largest part of what ferry
	// allocated during the drain.
	var drainStart time.Time
	var u0 float64
	testutil.WaitFor(t, 5*time.Minute, "the backlog drained", func() bool {
		connected, records := backlog(t, base)
		if drainStart.IsZero() {
			if connected {
				drainStart, u0 = time.Now(), scrape(t, base).sum("ferry_uplink_samples_total")
			}
			return false
		}
		return records <= presses*2
	})
	del := time.Since(drainStart)
	drained := scrape(t, base).sum("ferry_uplink_samples_total") - u0
	report("backlog_samples", drained, "")
	report("drain_rate", drained/del.Seconds(), "samples/s")
	report("rss_peak", procStatusBytes(t, f.Pid(), "VmHWM")/(1<<20), "MiB")
	// After a backlog the buffer file is larger, and the pages of it the
	// drain read last are still mapped (the writer releases them once a
	// second): clean page cache, counted in RSS while mapped. Measured as
	// the drain ends, and five seconds later.
	afterDrain := func(suffix string) {
		rss, anon := procRSS(t, f.Pid())
		report("rss_after_drain"+suffix, rss/(1<<20), "MiB")
		report("rss_anon_after_drain"+suffix, anon/(1<<20), "MiB")
		report("rss_buffer_file_after_drain"+suffix, testutil.MappedRSS(t, f.Pid())[db]/(1<<20), "MiB")
	}
	afterDrain("")
	time.Sleep(5 * time.Second)
	afterDrain("_5s")
	// The file stays this size until the acknowledged records it retains
	// (retain_acked, 5 min by default) have expired and the buffer
	// compacts it: longer than the bench waits.
	if fi, err := os.Stat(db); err == nil {
		report("buffer_file", float64(fi.Size())/(1<<20), "MiB")
	}
	stopFerry(t, f)
	if p := os.Getenv("FERRY_BENCH_LOG"); p != "" {
		// ferry's whole output, e.g. with GODEBUG=gctrace=1 in the
		// environment: one line per collection with its CPU time.
		if err := os.WriteFile(p, []byte(f.Log()), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// backlog reads ferry's /api/status: whether the uplink is connected, and
// the records waiting in the buffer.
func backlog(t *testing.T, base string) (connected bool, records int) {
	t.Helper()
	code, body, err := httpGet(base + "/api/status")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/api/status: %d %v", code, err)
	}
	var st struct {
		Uplink string `json:"uplink"`
		Buffer struct {
			Lanes []struct {
				Records int `json:"records"`
			} `json:"lanes"`
		} `json:"buffer"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/api/status: %v", err)
	}
	for _, l := range st.Buffer.Lanes {
		records += l.Records
	}
	return st.Uplink == "connected", records
}

// metrics is a scrape of /metrics: series line → value.
type metrics map[string]float64

func scrape(t *testing.T, base string) metrics {
	t.Helper()
	code, body, err := httpGet(base + "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	m := metrics{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// sum adds every series of the metric name that has all the given labels
// (`lane="telemetry"`).
func (m metrics) sum(name string, labels ...string) float64 {
	var s float64
next:
	for k, v := range m {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(k, l) {
				continue next
			}
		}
		s += v
	}
	return s
}

// procCPU returns the user+system CPU time of a process.
func procCPU(t *testing.T, pid int) time.Duration {
	user, sys := procTimes(t, pid)
	return user + sys
}

// procTimes returns a process's user and system CPU time so far.
func procTimes(t *testing.T, pid int) (user, sys time.Duration) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	tick := func(v float64) time.Duration { return time.Duration(v / 100 * float64(time.Second)) } // USER_HZ is 100 on Linux
	return tick(ut), tick(st)
}

// procRSS returns a process's resident set and its anonymous part, in bytes.
func procRSS(t *testing.T, pid int) (rss, anon float64) {
	t.Helper()
	return procStatusBytes(t, pid, "VmRSS"), procStatusBytes(t, pid, "RssAnon")
}

// statusField returns the value of field in a /proc status file ("VmHWM"
// → "1234 kB"), trimmed, and whether the file has it.
func statusField(b []byte, field string) (string, bool) {
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// streamLatency returns, sorted, for every telemetry scan stored in the
// stream between from and to, the time from the scan's completion (its
// last sample's read time) to its storage in the stream (JetStream stores
// before it sends the PubAck).
func streamLatency(t *testing.T, url string, from, to time.Time) []time.Duration {
	t.Helper()
	js := testpeer.JetStream(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, plantsim.StreamName, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &from,
	})
	if err != nil {
		t.Fatal(err)
	}
	var lat []time.Duration
	for {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n, done := 0, false
		for msg := range batch.Messages() {
			n++
			md, err := msg.Metadata()
			if err != nil {
				continue
			}
			if md.Timestamp.After(to) {
				done = true
				continue
			}
			all, err := uplink.DecodeAll(msg.Subject(), msg.Headers(), msg.Data())
			if err != nil {
				continue
			}
			for _, m := range all {
				// Polled devices only: an OPC UA subscription's samples carry
				// the server's source time (delivered at the next publishing
				// interval) and MQTT's the sensor's own clock.
				if m.Telemetry == nil || !strings.HasPrefix(m.Telemetry.Device, "press") {
					continue
				}
				for _, sc := range m.Telemetry.Scans {
					// A scan leaves its driver when its last point is read:
					// from there on the latency is ferry's (pipeline, rules,
					// group commit with fsync, publish, JetStream's store).
					// The poll itself (here up to 14 requests to a simulator
					// that builds its whole register map per request) is the
					// device's share.
					var done time.Time
					for _, p := range sc.Points {
						if p.Time.After(done) {
							done = p.Time
						}
					}
					lat = append(lat, md.Timestamp.Sub(done))
					if d := md.Timestamp.Sub(done); d > 100*time.Millisecond && os.Getenv("FERRY_BENCH_SLOW") != "" {
						fmt.Printf("SLOW %s %s done %s stored %s (%v)\n", m.ID, m.Telemetry.Device, done.Format("15:04:05.000"), md.Timestamp.Format("15:04:05.000"), d)
					}
				}
			}
		}
		if n == 0 || done {
			break
		}
	}
	slices.Sort(lat)
	return lat
}

// saveProfiles writes ferry's heap profile (after a GC) and a 10-second CPU
// profile into dir, for `go tool pprof`: where the memory and time of the
// steady state go.
func saveProfiles(t *testing.T, base, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	secs := "10"
	if v := os.Getenv("FERRY_BENCH_PROFILE_SECONDS"); v != "" {
		secs = v // a longer CPU profile: more samples at a low rate
	}
	for name, path := range map[string]string{
		"heap.pb.gz": "/debug/pprof/heap?gc=1",
		"cpu.pb.gz":  "/debug/pprof/profile?seconds=" + secs,
	} {
		c := http.Client{Timeout: time.Minute}
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("profiles in %s (go tool pprof %s)", dir, filepath.Join(dir, "heap.pb.gz"))
}
