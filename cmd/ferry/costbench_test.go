package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/plantsim"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink"
)

// TestCostBench measures what the gateway costs as a user's top shows it:
// real processes end to end, Debian's mosquitto → the ferry binary →
// nats-server (JetStream, built from the module cache), with a paho
// publisher in this process sending JSON messages of 50 numeric fields and
// a seq at QoS 1, paced at each rate for the window. For each rate every
// process is new. It reports ferry's CPU (utime+stime from /proc, from the
// first publish until every sample is in the stream) per million samples,
// the part of it in the kernel, its threads' sleeps (voluntary context
// switches) per message, its peak RSS (VmHWM), its buffer commits (ferry_buffer_commits_total,
// read after the CPU), the stream's message count and bytes, and whether
// every message arrived exactly once, as one table on stdout.
//
// It runs only with FERRY_BENCH=cost (scripts/bench.sh cost, make
// bench-cost) and asserts nothing about speed; it fails when a message is
// missing or duplicated upstream. FERRY_BENCH_RATES (default "200,1000"
// msg/s) and FERRY_BENCH_COST_WINDOW (default 15s) change the load;
// FERRY_BENCH_PROFILES=DIR saves a CPU and heap profile of ferry during
// the first rate's window (that row is marked: profiling costs CPU).
// FERRY_BENCH_UPLINK adds keys to the uplink.nats block, FERRY_BENCH_BUFFER
// a buffer block (e.g. "commit_max_waiting: 16"), to compare settings;
// FERRY_BENCH_INFLIGHT sets mosquitto's max_inflight_messages (20);
// FERRY_BENCH_BINARY runs that ferry binary instead of building this one
// (an A/B of two builds).
func TestCostBench(t *testing.T) {
	if os.Getenv("FERRY_BENCH") != "cost" {
		t.Skip("set FERRY_BENCH=cost (scripts/bench.sh cost does)")
	}
	rates := []int{200, 1000}
	if v := os.Getenv("FERRY_BENCH_RATES"); v != "" {
		rates = nil
		for _, f := range strings.Split(v, ",") {
			r, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || r <= 0 {
				t.Fatalf("FERRY_BENCH_RATES=%q: %q is not a positive rate", v, f)
			}
			rates = append(rates, r)
		}
	}
	window := testutil.EnvDuration(t, "FERRY_BENCH_COST_WINDOW", 15*time.Second)
	mosquitto := mosquittoPath(t)
	natsServer := buildNATSServer(t)
	bin := os.Getenv("FERRY_BENCH_BINARY")
	if bin == "" {
		bin = buildFerry(t)
	}
	profiles := os.Getenv("FERRY_BENCH_PROFILES")

	var results []costResult
	for i, rate := range rates {
		t.Run(fmt.Sprintf("rate=%d", rate), func(t *testing.T) {
			prof := ""
			if i == 0 {
				prof = profiles
			}
			r := runCost(t, bin, mosquitto, natsServer, rate, window, prof)
			results = append(results, r)
		})
	}

	host, _ := os.Hostname()
	fmt.Printf("\nferry end-to-end cost — mosquitto → ferry → nats-server (JetStream), QoS 1, JSON of %d numeric fields + seq, %v per rate; %s\n\n", costFields, window, host)
	fmt.Println("| rate (msg/s) | msgs published | samples | ferry CPU (s) | CPU s / M samples | in kernel | thread sleeps / msg | RSS peak (MiB) | buffer commits | upstream msgs | upstream bytes | bytes / sample | exactly once |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, r := range results {
		once := "yes"
		if r.missing > 0 || r.dups > 0 {
			once = fmt.Sprintf("no (%d missing, %d duplicated)", r.missing, r.dups)
		}
		note := ""
		if r.profiled {
			note = " (profiled)"
		}
		fmt.Printf("| %d%s | %d | %d | %.2f | %.2f | %.0f %% | %.1f | %.1f | %d | %d | %d | %.1f | %s |\n",
			r.rate, note, r.published, r.samples, r.cpu.Seconds(), r.cpu.Seconds()/float64(r.samples)*1e6,
			100*r.sys.Seconds()/max(r.cpu.Seconds(), 1e-9), float64(r.sleeps)/float64(r.published),
			r.hwm/(1<<20), r.commits, r.upMsgs, r.upBytes, float64(r.upBytes)/float64(r.samples), once)
	}
}

// costFields is the number of numeric fields of each message besides seq.
const costFields = 50

type costResult struct {
	rate, published, samples int
	cpu                      time.Duration
	sys                      time.Duration // the part of cpu in the kernel
	sleeps                   int64         // voluntary context switches of ferry's threads in the window
	drain                    time.Duration
	hwm                      float64 // bytes
	commits                  int     // buffer commits (ferry_buffer_commits_total at the end)
	upMsgs, upBytes          uint64
	missing, dups            int
	profiled                 bool
}

// uplinkExtra returns FERRY_BENCH_UPLINK, more keys of the uplink.nats
// block (e.g. "compression: zstd" or "batch: {max_bytes: 0}"), to compare
// settings.
func uplinkExtra() string {
	if v := os.Getenv("FERRY_BENCH_UPLINK"); v != "" {
		return ", " + v
	}
	return ""
}

// inflight is mosquitto's max_inflight_messages for the run:
// FERRY_BENCH_INFLIGHT, or mosquitto's default of 20.
func inflight() int {
	if v := os.Getenv("FERRY_BENCH_INFLIGHT"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return n
		}
	}
	return 20
}

// bufferBlock returns a buffer block of FERRY_BENCH_BUFFER's keys, or
// nothing (the defaults).
func bufferBlock() string {
	if v := os.Getenv("FERRY_BENCH_BUFFER"); v != "" {
		return "buffer: {" + v + "}\n"
	}
	return ""
}

// runCost starts mosquitto, nats-server and ferry, publishes at rate for
// window and measures ferry until every sample is upstream.
func runCost(t *testing.T, bin, mosquitto, natsServer string, rate int, window time.Duration, profiles string) costResult {
	dir := t.TempDir()
	// The default in-flight window towards ferry (20 QoS 1 messages, or
	// FERRY_BENCH_INFLIGHT), and room to queue every message of the run.
	mqAddr, _, _ := startMosquitto(t, mosquitto, dir, fmt.Sprintf("max_inflight_messages %d\nmax_queued_messages 1000000\n", inflight()))
	natsURL, _ := startNATSServer(t, natsServer, dir)
	createInteropStream(t, natsURL)

	var points strings.Builder
	points.WriteString("      - {name: seq, path: seq}\n")
	for i := range costFields {
		fmt.Fprintf(&points, "      - {name: f%02d, path: f%02d}\n", i, i)
	}
	cfg := filepath.Join(dir, "ferry.yaml")
	testutil.WriteFile(t, cfg, fmt.Sprintf(`gateway: {id: bench, site: test}
data_dir: %s
log: {level: info, format: text}
http: {listen: "127.0.0.1:0", pprof: true}
devices:
  - name: env
    mqtt: {broker: "tcp://%s", topic: "bench/env", qos: 1, format: json, client_id: ferry-bench}
    points:
%s%suplink:
  nats: {urls: ["%s"], stream: %s%s}
`, filepath.Join(dir, "data"), mqAddr, points.String(), bufferBlock(), natsURL, plantsim.StreamName, uplinkExtra()))
	f := startFerry(t, bin, cfg)
	base := httpBase(t, f)
	waitReady(t, base)
	eventually(t, 30*time.Second, "ferry subscribed on mosquitto", func() error {
		if v := scrape(t, base).sum("ferry_device_connected", `device="env"`); v != 1 {
			return fmt.Errorf("ferry_device_connected{device=\"env\"} = %v", v)
		}
		return nil
	})

	// What reaches the server, watched on a plain subscription (no request
	// to ferry, which would cost it CPU inside the window): the drain is
	// over when every seq published has been seen.
	var seen sync.Map
	var distinct atomic.Int64
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Subscribe(plantsim.StreamSubjects, func(m *nats.Msg) {
		all, err := uplink.DecodeAll(m.Subject, m.Header, m.Data)
		if err != nil {
			return
		}
		for _, msg := range all {
			if msg.Telemetry == nil || msg.Telemetry.Device != "env" {
				continue
			}
			for _, sc := range msg.Telemetry.Scans {
				for _, p := range sc.Points {
					if p.Name == "seq" && p.Quality == ferry.Good {
						if _, dup := seen.LoadOrStore(p.Value.Float64(), true); !dup {
							distinct.Add(1)
						}
					}
				}
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	pub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + mqAddr).SetClientID("bench-pub").SetCleanSession(true).SetAutoReconnect(false))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect to %s: %v", mqAddr, tok.Error())
	}
	defer pub.Disconnect(250)

	pid := f.Pid()
	user0, sys0 := procTimes(t, pid)
	sleeps0 := threadSleeps(t, pid)
	start := time.Now()
	n := int(window.Seconds() * float64(rate))
	type result struct {
		acked  int
		failed []error
	}
	done := make(chan result, 1)
	go func() {
		tokens := make([]paho.Token, 0, n)
		for seq := 1; seq <= n; seq++ {
			// Pacing the load is what this sleep is for: message seq is
			// due at start + (seq-1)/rate.
			if d := time.Until(start.Add(time.Duration(seq-1) * time.Second / time.Duration(rate))); d > 0 {
				time.Sleep(d)
			}
			tokens = append(tokens, pub.Publish("bench/env", 1, false, costPayload(seq)))
		}
		var r result
		for _, tok := range tokens {
			if !tok.WaitTimeout(30 * time.Second) {
				r.failed = append(r.failed, fmt.Errorf("no PUBACK within 30 s"))
			} else if err := tok.Error(); err != nil {
				r.failed = append(r.failed, err)
			} else {
				r.acked++
			}
		}
		done <- r
	}()
	profiled := false
	if profiles != "" {
		saveProfiles(t, base, profiles) // inside the window: 10 s of CPU profile
		profiled = true
	}
	pr := <-done
	if len(pr.failed) > 0 {
		t.Fatalf("%d of %d publishes not acknowledged by mosquitto, first: %v", len(pr.failed), n, pr.failed[0])
	}
	published := time.Since(start)
	testutil.WaitFor(t, 2*time.Minute, fmt.Sprintf("all %d messages upstream", n), func() bool { return distinct.Load() >= int64(n) })
	r := costResult{rate: rate, published: n, samples: n * (costFields + 1), profiled: profiled}
	user, sys := procTimes(t, pid)
	r.cpu, r.sys = user+sys-user0-sys0, sys-sys0
	r.sleeps = threadSleeps(t, pid) - sleeps0
	r.drain = time.Since(start) - published
	r.hwm = procStatusBytes(t, pid, "VmHWM")
	// After the CPU reading: a scrape costs ferry CPU.
	r.commits = int(scrape(t, base).sum("ferry_buffer_commits_total"))
	t.Logf("rate %d: published %d in %v (%.0f msg/s), upstream %v later; ferry CPU %v", rate, n, published.Round(time.Millisecond), float64(n)/published.Seconds(), r.drain.Round(time.Millisecond), r.cpu)

	// The stream, read back: its size, and every seq exactly once with all
	// its fields.
	js := testpeer.JetStream(t, natsURL)
	info, err := streamInfo(js)
	if err != nil {
		t.Fatal(err)
	}
	r.upMsgs, r.upBytes = info.State.Msgs, info.State.Bytes
	got, fields, bad := seqsUpstream(t, natsURL, "env")
	for _, b := range bad {
		t.Error(b)
	}
	for seq := 1; seq <= n; seq++ {
		switch c := got[seq]; {
		case c == 0:
			r.missing++
		case c > 1:
			r.dups++
		}
	}
	if r.missing > 0 || r.dups > 0 {
		t.Errorf("of %d messages, %d are not upstream and %d are upstream more than once", n, r.missing, r.dups)
	}
	if len(got) > n-r.missing {
		t.Errorf("%d seqs upstream, %d were published", len(got), n)
	}
	if want := n * costFields; fields != want && r.missing == 0 && r.dups == 0 {
		t.Errorf("%d field samples upstream, want %d", fields, want)
	}
	stopFerry(t, f)
	return r
}

// costPayload is message seq: {"seq":seq,"f00":…,…,"f49":…}, every field
// a different number in every message.
func costPayload(seq int) []byte {
	b := make([]byte, 0, 16*costFields)
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, int64(seq), 10)
	for i := range costFields {
		b = fmt.Appendf(b, `,"f%02d":`, i)
		b = strconv.AppendFloat(b, 100*float64(i+1)+10*math.Sin(float64(seq)/10+float64(i)), 'f', 3, 64)
	}
	return append(b, '}')
}

// streamInfo returns the state of ferry's stream.
func streamInfo(js jetstream.JetStream) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, plantsim.StreamName)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

// mosquittoPath finds Debian's mosquitto (in /usr/sbin, off a user's PATH).
func mosquittoPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		return "/usr/sbin/mosquitto"
	}
	t.Fatal("mosquitto not found: apt-get install mosquitto (scripts/bench.sh cost installs it)")
	return ""
}

// startMosquitto starts mosquitto on 127.0.0.1 with the configuration
// lines extra, and returns its address, its process and its configuration
// file (Start the process again to restart it on the same port).
//
// Mosquitto cannot listen on port 0 and report the port, nor take a
// listener handed over open, so (for this external binary only) the test
// picks a random port, and tries another when mosquitto says it could not
// bind it.
func startMosquitto(t *testing.T, bin, dir, extra string) (string, *testpeer.Proc, string) {
	t.Helper()
	// As root mosquitto drops to its own user; it stays who we are.
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	for attempt := 0; attempt < 10; attempt++ {
		port := 20000 + rand.IntN(30000)
		text := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nuser %s\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type information\n%s", port, me.Username, extra)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		p := testpeer.Child(t, bin, "-c", conf)
		// "running" is logged once its listeners are open; a port in use
		// ends the process.
		testutil.WaitFor(t, 20*time.Second, "mosquitto running or exited", func() bool {
			return strings.Contains(p.RunLog(), " running") || !p.Running()
		})
		if strings.Contains(p.RunLog(), " running") {
			return fmt.Sprintf("127.0.0.1:%d", port), p, conf
		}
		if !strings.Contains(p.RunLog(), "in use") {
			t.Fatalf("mosquitto exited:\n%s", p.RunLog())
		}
		t.Logf("mosquitto: port %d in use, trying another", port)
	}
	t.Fatal("mosquitto found no free port in 10 tries")
	return "", nil, ""
}

// buildNATSServer builds nats-server from the module cache (the version of
// go.mod).
func buildNATSServer(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "nats-server")
	cmd := exec.Command("go", "build", "-o", out, "github.com/nats-io/nats-server/v2")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build nats-server: %v\n%s", err, b)
	}
	return out
}

// startNATSServer starts nats-server with JetStream (store in dir/nats)
// on a port of its own choosing and returns its URL, read from the ports
// file it writes, and its process.
func startNATSServer(t *testing.T, bin, dir string) (string, *testpeer.Proc) {
	t.Helper()
	p := testpeer.Child(t, bin, "-js", "-sd", filepath.Join(dir, "nats"), "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", dir)
	file := filepath.Join(dir, fmt.Sprintf("nats-server_%d.ports", p.Pid()))
	var url string
	eventually(t, 20*time.Second, "nats-server's ports file", func() error {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		var ports struct{ Nats []string }
		if err := json.Unmarshal(b, &ports); err != nil {
			return fmt.Errorf("%s: %v", file, err)
		}
		if len(ports.Nats) == 0 {
			return fmt.Errorf("%s: no client URL in %s", file, b)
		}
		url = ports.Nats[0]
		return nil
	})
	return url, p
}

// threadSleeps is the number of times the threads of process pid went to
// sleep so far (voluntary_ctxt_switches, summed over /proc/PID/task): a
// count of the wake-ups a workload costs, steadier than its CPU seconds.
// A thread that ended took its count with it; the Go runtime rarely ends
// one.
func threadSleeps(t *testing.T, pid int) int64 {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	var n int64
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread ended meanwhile
		}
		v, _ := statusField(b, "voluntary_ctxt_switches")
		c, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("%s: voluntary_ctxt_switches %q: %v", f, v, err)
		}
		n += c
	}
	return n
}

// procStatusBytes returns a size field of /proc/PID/status ("VmHWM") in
// bytes.
func procStatusBytes(t *testing.T, pid int, field string) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	v, ok := statusField(b, field)
	if !ok {
		t.Fatalf("/proc/%d/status has no %s", pid, field)
	}
	kb, err := strconv.ParseFloat(strings.TrimSuffix(v, " kB"), 64)
	if err != nil {
		t.Fatalf("/proc/%d/status %s %q: %v", pid, field, v, err)
	}
	return kb * 1024
}
