package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/internal/web"
)

// TestMetricsAndReadiness scrapes /metrics after a short run against a
// whole plant and checks the series the operations guide names, with sane
// values; then stops NATS: /readyz turns 503 naming the uplink and why,
// and is ready again once NATS is back.
func TestMetricsAndReadiness(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and a daemon")
	}
	t.Parallel()
	p := startPlant(t, 2)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	cfg := plantConfig{
		DataDir: filepath.Join(dir, "data"),
		Boiler:  true, Env: true, Uplink: true,
		Rules: []string{
			`{name: fast, when: "press1.speed > 10", severity: critical}`,
			`{name: p2_silent, point: press2.oil_temp, stale: 5s, severity: warning}`,
		},
	}
	testutil.WriteFile(t, path, cfg.yaml(p))
	start := time.Now()
	h := startDaemon(t, path)
	devices := []string{"press1", "press2", "boiler", "env"}
	waitFor(t, 30*time.Second, "every device connected and records acknowledged upstream", func() bool {
		acked, _ := h.metric("ferry_uplink_acked_total", "lane=telemetry")
		alerts, _ := h.metric("ferry_uplink_acked_total", "lane=alerts")
		ok := acked >= 10 && alerts >= 1
		for _, dev := range devices {
			ok = ok && h.status(dev).Connected && h.scans(dev) >= 2
		}
		return ok
	})

	code, body := h.get("/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	ss, err := testpeer.ParseMetrics(body)
	if err != nil {
		t.Fatal(err)
	}
	type check struct {
		name   string
		labels []string
		ok     func(float64) bool
		want   string
	}
	one := func(v float64) bool { return v == 1 }
	zero := func(v float64) bool { return v == 0 }
	positive := func(v float64) bool { return v > 0 }
	nonNegative := func(v float64) bool { return v >= 0 }
	checks := []check{
		{"ferry_build_info", []string{"version=test", "commit=abc"}, one, "1"},
		{"ferry_config_info", []string{"version=" + h.d.cfg.Version}, one, "1"},
		{"ferry_config_reload_success", nil, one, "1"},
		{"ferry_config_reload_timestamp_seconds", nil, func(v float64) bool {
			return v >= float64(start.Unix()-1) && v <= float64(time.Now().Unix()+1)
		}, "the start time"},
		{"ferry_pipeline_scans_total", nil, positive, "> 0"},
		{"ferry_pipeline_samples_total", nil, positive, "> 0"},
		{"ferry_pipeline_dropped_scans_total", nil, zero, "0"},
		{"ferry_pipeline_queue_length", nil, nonNegative, ">= 0"},
		{"ferry_buffer_records", []string{"lane=telemetry"}, nonNegative, ">= 0"},
		{"ferry_buffer_records", []string{"lane=alerts"}, nonNegative, ">= 0"},
		{"ferry_buffer_bytes", []string{"lane=telemetry"}, nonNegative, ">= 0"},
		{"ferry_buffer_oldest_age_seconds", []string{"lane=telemetry"}, func(v float64) bool { return v >= 0 && v < 60 }, "0..60s"},
		{"ferry_buffer_appended_total", []string{"lane=telemetry"}, positive, "> 0"},
		{"ferry_buffer_acked_total", []string{"lane=telemetry"}, positive, "> 0"},
		{"ferry_buffer_commits_total", nil, positive, "> 0"},
		{"ferry_buffer_file_bytes", nil, positive, "> 0"},
		{"ferry_uplink_connected", nil, one, "1"},
		{"ferry_uplink_published_total", []string{"lane=telemetry"}, positive, "> 0"},
		{"ferry_uplink_acked_total", []string{"lane=telemetry"}, positive, "> 0"},
		{"ferry_uplink_acked_total", []string{"lane=alerts"}, positive, "> 0"},
		{"ferry_uplink_ack_latency_seconds_count", nil, positive, "> 0"},
		{"ferry_uplink_samples_total", nil, positive, "> 0"},
		{"ferry_alerts_active", []string{"severity=critical"}, one, "1"},
		{"ferry_alerts_transitions_total", []string{"rule=fast", "state=raised"}, one, "1"},
		{"ferry_rules_loaded", nil, func(v float64) bool { return v == 2 }, "2"},
		{"ferry_ready", []string{"check=uplink"}, one, "1"},
		{"ferry_ready", []string{"check=pipeline"}, one, "1"},
		{"ferry_ready", []string{"check=buffer"}, one, "1"},
		{"go_goroutines", nil, positive, "> 0"},
		{"process_start_time_seconds", nil, positive, "> 0"},
	}
	for _, dev := range devices {
		checks = append(checks,
			check{"ferry_device_connected", []string{"device=" + dev}, one, "1"},
			check{"ferry_device_scans_total", []string{"device=" + dev}, positive, "> 0"},
			check{"ferry_device_poll_duration_seconds_count", []string{"device=" + dev}, positive, "> 0"},
			check{"ferry_device_points", []string{"device=" + dev, "quality=good"}, positive, "> 0"},
			check{"ferry_device_points", []string{"device=" + dev, "quality=bad"}, zero, "0"},
		)
	}
	for _, c := range checks {
		v, ok := ss.Find(c.name, c.labels...)
		switch {
		case !ok:
			t.Errorf("/metrics has no %s%v", c.name, c.labels)
		case !c.ok(v):
			t.Errorf("%s%v = %v, want %s", c.name, c.labels, v, c.want)
		}
	}
	if v, _ := ss.Find("ferry_device_connected", "protocol=modbus"); v != 2 {
		t.Errorf("ferry_device_connected{protocol=modbus} sums to %v, want 2", v)
	}
	if v, _ := h.metric("ferry_http_requests_total", "handler=metrics", "code=200"); v != 1 {
		t.Errorf("ferry_http_requests_total{handler=\"metrics\",code=200} = %v after one scrape", v)
	}
	checkDocumentedMetrics(t, h.d.reg)

	code, body = h.get("/readyz")
	if code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/readyz with NATS up: %d %q", code, body)
	}

	// NATS goes away: not ready, and /readyz says it is the uplink and why.
	p.NATS.Shutdown()
	waitFor(t, 20*time.Second, "/readyz to fail", func() bool { c, _ := h.get("/readyz"); return c == 503 })
	// The console's lag grows while the link is down: it is the age of
	// the oldest record waiting, not of the last acknowledgement.
	lag := func() float64 {
		var hl web.Health
		if c, b := h.get("/api/health"); c == 200 {
			json.Unmarshal([]byte(b), &hl)
		}
		return hl.Traffic.LagSeconds
	}
	down := time.Now()
	waitFor(t, 20*time.Second, "the lag to grow past 3 s with NATS down", func() bool { return lag() > 3 })
	if l, since := lag(), time.Since(down).Seconds(); l > since+2 {
		t.Errorf("lag %.1fs, more than the %.1fs NATS has been down plus the last acknowledged lag", l, since)
	}
	code, body = h.get("/readyz")
	if code != 503 || !strings.Contains(body, "[-] uplink: ") || strings.Contains(body, "[-] pipeline") || strings.Contains(body, "[-] buffer") {
		t.Errorf("/readyz with NATS down: %d %q, want 503 naming the uplink alone", code, body)
	}
	if !regexp.MustCompile(`uplink: .*(refused|disconnected|not connected|closed)`).MatchString(body) {
		t.Errorf("/readyz does not say why the uplink is down: %q", body)
	}
	code, body = h.get("/readyz?format=json")
	var rd web.Readiness
	if err := json.Unmarshal([]byte(body), &rd); err != nil || code != 503 || rd.Ready {
		t.Fatalf("/readyz?format=json: %d %q (%v)", code, body, err)
	}
	for _, c := range rd.Checks {
		if c.OK == (c.Name == "uplink") {
			t.Errorf("readiness check %s ok=%v (%s)", c.Name, c.OK, c.Error)
		}
	}
	if v, _ := h.metric("ferry_ready", "check=uplink"); v != 0 {
		t.Errorf("ferry_ready{check=uplink} = %v with NATS down", v)
	}
	if v, _ := h.metric("ferry_uplink_connected"); v != 0 {
		t.Errorf("ferry_uplink_connected = %v with NATS down", v)
	}
	// The data is buffered meanwhile.
	waitFor(t, 10*time.Second, "telemetry to pile up in the buffer", func() bool {
		v, _ := h.metric("ferry_buffer_records", "lane=telemetry")
		return v >= 5
	})

	// NATS is back (same port, same store): ready again, backlog drained.
	if err := p.NATS.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "/readyz to pass again", func() bool { c, _ := h.get("/readyz"); return c == 200 })
	if v, _ := h.metric("ferry_ready", "check=uplink"); v != 1 {
		t.Errorf("ferry_ready{check=uplink} = %v with NATS back", v)
	}
	waitFor(t, 30*time.Second, "the backlog to drain", func() bool {
		v, _ := h.metric("ferry_buffer_oldest_age_seconds", "lane=telemetry")
		return v < 2
	})
}

// documentedMetric matches the first cell of a metrics table row in
// docs/operations.md.
var documentedMetric = regexp.MustCompile("(?m)^\\| `(ferry_[a-z0-9_]+)[`{]")

// checkDocumentedMetrics checks that every metric the operations guide
// lists is registered (a counter vector with no series yet counts), and
// that every ferry_ metric registered is listed in the guide or, for a
// protocol's own series, in its driver's README: the tables cannot drift
// from the code.
func checkDocumentedMetrics(t *testing.T, reg *prometheus.Registry) {
	t.Helper()
	documented := func(file string) map[string]bool {
		doc, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, m := range documentedMetric.FindAllStringSubmatch(string(doc), -1) {
			out[m[1]] = true
		}
		return out
	}
	guide := documented("../../docs/operations.md")
	registered := registeredNames(reg)
	for name := range guide {
		if !registered[name] {
			t.Errorf("docs/operations.md lists %s, which ferry does not export", name)
		}
	}
	for name := range registered {
		if !strings.HasPrefix(name, "ferry_") || guide[name] {
			continue
		}
		proto, _, _ := strings.Cut(strings.TrimPrefix(name, "ferry_"), "_")
		readme := filepath.Join("../../drivers", proto, "README.md")
		if _, err := os.Stat(readme); err != nil || !documented(readme)[name] {
			t.Errorf("ferry exports %s, which neither docs/operations.md nor a driver README lists", name)
		}
	}
}

var descName = regexp.MustCompile(`fqName: "([^"]+)"`)

// registeredNames returns the names of every metric registered with reg.
func registeredNames(reg *prometheus.Registry) map[string]bool {
	ch := make(chan *prometheus.Desc)
	go func() {
		reg.Describe(ch)
		close(ch)
	}()
	out := map[string]bool{}
	for d := range ch {
		if m := descName.FindStringSubmatch(d.String()); m != nil {
			out[m[1]] = true
		}
	}
	return out
}

// TestShutdownDrainsAndRestarts stops a daemon under load (Run's context
// ends, as on SIGTERM) while NATS is down and a backlog waits: Run returns
// nil without waiting on the uplink, every goroutine it started is gone,
// and every scan the drivers emitted is in the stream or in the buffer. A
// second daemon on the same data directory then sends what was left
// (records in flight when NATS went away were released, never lost): the
// stream ends up with every scan exactly once.
func TestShutdownDrainsAndRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and two daemons")
	}
	p := startPlant(t, 2)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	cfg := plantConfig{
		DataDir:  filepath.Join(dir, "data"),
		Interval: map[string]string{"press1": "10ms", "press2": "10ms"},
		Boiler:   true, Env: true, Uplink: true,
		Rules: []string{`{name: fast, when: "press1.speed > 10", severity: critical}`},
	}
	testutil.WriteFile(t, path, cfg.yaml(p))
	// The plant's goroutines settle: the count holds over five polls.
	before, same := -1, 0
	waitFor(t, 10*time.Second, "the plant's goroutines settle", func() bool {
		if n := runtime.NumGoroutine(); n != before {
			before, same = n, 0
		} else {
			same++
		}
		return same >= 5
	})

	h := startDaemon(t, path)
	devices := []string{"press1", "press2", "boiler", "env"}
	waitFor(t, 30*time.Second, "every device read and records acknowledged", func() bool {
		acked, _ := h.metric("ferry_uplink_acked_total", "lane=telemetry")
		ok := acked >= 100
		for _, dev := range devices {
			ok = ok && h.scans(dev) >= 3
		}
		return ok
	})
	// NATS goes away: a backlog builds up in the buffer, and the stop
	// comes while the uplink is trying to reconnect (it must not hold up
	// the shutdown).
	p.NATS.Shutdown()
	waitFor(t, 20*time.Second, "a backlog", func() bool {
		v, _ := h.metric("ferry_buffer_records", "lane=telemetry")
		return v >= 100
	})
	stopped := time.Now()
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	took := time.Since(stopped)
	if lines := h.logs.lines("did not stop in time"); len(lines) > 0 {
		t.Errorf("shutdown waited on a part: %q", lines)
	}
	if len(h.logs.lines("ferry stopped")) != 1 {
		t.Error("no \"ferry stopped\" log line")
	}
	released, _ := h.metric("ferry_uplink_released_total")

	// No goroutine of ferry's is left, and the count is back to where it
	// was (the plant's goroutines for ferry's connections end too).
	var leaked []string
	waitFor(t, 15*time.Second, "the daemon's goroutines to end", func() bool {
		leaked = ferryGoroutines()
		return len(leaked) == 0 && runtime.NumGoroutine() <= before+2
	})

	if err := p.NATS.Start(); err != nil {
		t.Fatal(err)
	}
	dl := collect(t, p.NATS.URL, cfg.DataDir)
	checkNothingLost(t, h, dl, devices...)
	left := len(dl.telemetry) + len(dl.alerts) - len(dl.upstream)
	t.Logf("stopped in %v; %d records upstream, %d left in the buffer, %v released by the uplink",
		took.Round(time.Millisecond), len(dl.upstream), left, released)
	if left == 0 {
		t.Error("nothing left in the buffer after a stop during an outage")
	}

	// The second start, without devices, only forwards what is left.
	rest := cfg
	rest.Interval = nil
	testutil.WriteFile(t, path, noDevices(rest.yaml(p)))
	h2 := startDaemon(t, path)
	waitFor(t, 30*time.Second, "the buffer to drain", func() bool {
		tel, _ := h2.metric("ferry_buffer_records", "lane=telemetry")
		al, _ := h2.metric("ferry_buffer_records", "lane=alerts")
		return tel == 0 && al == 0
	})
	if err := h2.stop(); err != nil {
		t.Fatal(err)
	}
	dl2 := collect(t, p.NATS.URL, cfg.DataDir)
	for _, dev := range devices {
		if emitted, got := h.scans(dev), len(dl2.allScans(dev)); float64(got) != emitted {
			t.Errorf("%s: %v scans emitted before the stop, %d in the stream after the restart", dev, emitted, got)
		}
	}
	if n := len(dl2.telemetry) + len(dl2.alerts) - len(dl2.upstream); n != 0 {
		t.Errorf("%d records still in the buffer after the restart drained it", n)
	}
	if dl2.duplicates != 0 {
		t.Errorf("%d records twice in the stream", dl2.duplicates)
	}
	if n := dl2.transitions("fast", ferry.AlertRaised); n != 1 {
		t.Errorf("the alert was raised %d times upstream, want 1", n)
	}
}

// noDevices removes the devices (and the rules that name them) from a
// configuration.
func noDevices(text string) string {
	var out []string
	skip := false
	for _, line := range strings.Split(text, "\n") {
		switch {
		case line == "devices:" || line == "rules:":
			skip = true
			continue
		case skip && strings.HasPrefix(line, " "):
			continue
		}
		skip = false
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// TestDeadDeviceDoesNotStallOthers takes one press off the network and
// points one device at a TCP peer that accepts and never answers (a hung
// PLC; no real Modbus server shows it): the other presses keep their rate
// and good values, the dead ones emit Bad samples at their interval with
// the reason, the stale rule fires, and it clears once the press is back.
func TestDeadDeviceDoesNotStallOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and a daemon for several seconds")
	}
	t.Parallel()
	p := startPlant(t, 3)
	// A PLC that takes the connection and never answers.
	silent := testutil.SilentTCP(t)

	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	cfg := plantConfig{
		DataDir: filepath.Join(dir, "data"),
		Rules: []string{
			`{name: p3_silent, point: press3.oil_temp, stale: 1s, severity: warning}`,
			`{name: hung_silent, point: hung.speed, stale: 1s, severity: warning}`,
		},
		Extra: "",
	}
	text := strings.Replace(cfg.yaml(p), "rules:\n", fmt.Sprintf(`  - name: hung
    modbus: {url: "tcp://%s", unit: 1, interval: 500ms, timeout: 300ms}
    points:
      - {name: speed, table: holding, address: 5, type: uint16}
rules:
`, silent), 1)
	testutil.WriteFile(t, path, text)
	h := startDaemon(t, path)
	waitFor(t, 20*time.Second, "the presses read", func() bool {
		return h.status("press1").Connected && h.status("press2").Connected && h.status("press3").Connected &&
			h.scans("press3") >= 5 && h.active("hung_silent")
	})
	if h.active("p3_silent") {
		t.Fatal("p3_silent active while press3 answers")
	}

	down := time.Now()
	if err := p.Presses[2].Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "press3 lost and its stale rule raised", func() bool {
		return !h.status("press3").Connected && h.active("p3_silent")
	})
	if v, _ := h.metric("ferry_device_connected", "device=press3"); v != 0 {
		t.Errorf("ferry_device_connected{device=press3} = %v while it is down", v)
	}
	if v, _ := h.metric("ferry_device_points", "device=press3", "quality=bad"); v != 4 {
		t.Errorf("ferry_device_points{device=press3,quality=bad} = %v, want 4", v)
	}
	if v, _ := h.metric("ferry_device_errors_total", "device=hung", "reason=timeout"); v == 0 {
		t.Error("no timeout counted for the device that never answers")
	}
	time.Sleep(1500 * time.Millisecond) // the outage itself: long enough for the link's backoff to grow
	up := time.Now()
	if err := p.Presses[2].Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 40*time.Second, "press3 back and its stale alert cleared", func() bool {
		return h.status("press3").Connected && !h.active("p3_silent")
	})
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}

	dl := collect(t, "", cfg.DataDir)
	checkNothingLost(t, h, dl, "press1", "press2", "press3", "hung")
	// While press3 was down (leaving the first 300 ms to notice), the
	// other presses kept their 100 ms rate with good values, press3 and
	// the hung device emitted Bad samples at theirs.
	from, to := down.Add(300*time.Millisecond), up
	for _, dev := range []string{"press1", "press2", "press3", "hung"} {
		var ts []time.Time
		bad := 0
		var reasons []string
		for _, s := range dl.allScans(dev) {
			if s.Time.Before(from) || !s.Time.Before(to) {
				continue
			}
			ts = append(ts, s.Time)
			for _, smp := range s.Samples {
				if smp.Quality.Status == ferry.Bad {
					bad++
					if !slices.Contains(reasons, smp.Quality.Reason) {
						reasons = append(reasons, smp.Quality.Reason)
					}
				}
			}
		}
		interval := 100 * time.Millisecond
		if dev == "hung" {
			interval = 500 * time.Millisecond
		}
		t.Logf("%s during the outage: %d scans, bad samples %d %q", dev, len(ts), bad, reasons)
		// Not stalled: at least half of its polls happened (a loaded
		// machine may skip some; a stalled device skips them all).
		if want := float64(to.Sub(from)) / float64(interval); float64(len(ts)) < want/2 {
			t.Errorf("%s: %d scans in %v, want about %.0f (interval %v)", dev, len(ts), to.Sub(from).Round(time.Millisecond), want, interval)
		}
		switch dev {
		case "press1", "press2":
			if bad != 0 {
				t.Errorf("%s: %d bad samples while press3 was down", dev, bad)
			}
		case "press3":
			if want := 4 * len(ts); bad != want || !slices.Contains(reasons, ferry.ReasonConnRefused) {
				t.Errorf("press3: %d bad samples of %d, reasons %q; want every sample bad, %q", bad, want, reasons, ferry.ReasonConnRefused)
			}
		case "hung":
			if bad != len(ts) || len(reasons) != 1 || reasons[0] != ferry.ReasonTimeout {
				t.Errorf("hung: %d bad samples of %d, reasons %q; want every sample bad, %q", bad, len(ts), reasons, ferry.ReasonTimeout)
			}
		}
	}
	if n := dl.transitions("p3_silent", ferry.AlertRaised); n != 1 {
		t.Errorf("p3_silent raised %d times, want 1", n)
	}
	if n := dl.transitions("p3_silent", ferry.AlertCleared); n != 1 {
		t.Errorf("p3_silent cleared %d times, want 1", n)
	}
}

// TestStartPortTaken: a taken HTTP port stops the start with a clear error
// and leaves nothing open behind (the buffer's lock is free for the next
// try).
func TestStartPortTaken(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	file := func(listen string) string {
		return fmt.Sprintf("gateway: {id: %s}\ndata_dir: %s\nhttp: {listen: %q}\n", gatewayID, filepath.Join(dir, "data"), listen)
	}
	testutil.WriteFile(t, path, file(taken.Addr().String()))
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	_, err = New(cfg, Options{Logger: log})
	if err == nil || !strings.Contains(err.Error(), "http: listen on "+taken.Addr().String()) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("newDaemon with the port taken: %v", err)
	}
	testutil.WriteFile(t, path, file("127.0.0.1:0"))
	h := startDaemon(t, path)
	if code, _ := h.get("/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
}

// TestShutdownBounded stops a daemon whose driver waits on a PLC that
// never answers (5 s timeout) with a 1 s shutdown timeout: Run returns
// before the request ends, saying which group it left behind, and the
// driver's late scan, when its request finally fails, is refused by the
// closed pipeline instead of crashing the process.
func TestShutdownBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a 5 s Modbus timeout")
	}
	silent := testutil.SilentTCP(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	testutil.WriteFile(t, path, fmt.Sprintf(`gateway: {id: %s}
data_dir: %s
http: {listen: off}
devices:
  - name: hung
    modbus: {url: "tcp://%s", unit: 1, interval: 100ms, timeout: 5s}
    points:
      - {name: speed, table: holding, address: 5, type: uint16}
`, gatewayID, filepath.Join(dir, "data"), silent))
	h := newHarness(t, path)
	h.d.opts.ShutdownTimeout = time.Second
	h.run()
	waitFor(t, 10*time.Second, "the request to the hung device", func() bool { return len(h.logs.lines("link open")) > 0 })
	start := time.Now()
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("Run took %v to return with a 1s shutdown timeout", took)
	}
	if len(h.logs.lines("driver did not stop in time", "group=\"modbus tcp://"+silent)) != 1 {
		t.Error("no log line names the driver left behind")
	}
	// The request times out; the driver emits its Bad scan into the closed
	// pipeline and ends.
	waitFor(t, 15*time.Second, "the driver to end", func() bool { return len(ferryGoroutines()) == 0 })
	if n := h.scans("hung"); n != 1 {
		t.Errorf("the hung device emitted %v scans, want its one late scan", n)
	}
}

// TestQuarantineAlertReachesSinks starts on a damaged buffer file: the
// buffer moves it aside and raises buffer_quarantined while it opens,
// before the alert sinks exist; the log sink still delivers it.
func TestQuarantineAlertReachesSinks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "buffer.db"), bytes.Repeat([]byte("not a bbolt file "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ferry.yaml")
	testutil.WriteFile(t, path, fmt.Sprintf("gateway: {id: %s}\ndata_dir: %s\nhttp: {listen: off}\nalerts: {log: {enabled: true}}\n", gatewayID, data))
	h := startDaemon(t, path)
	waitFor(t, 10*time.Second, "the log sink to deliver buffer_quarantined", func() bool {
		return len(h.logs.lines("sink=log", "rule=buffer_quarantined", "state=raised")) == 1
	})
}

// TestShutdownPipelineStuck: a store that hangs (a dead disk) does not
// hold up the shutdown past its timeout; the log says what was left.
func TestShutdownPipelineStuck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	addr := testpeer.Reserve(t).Addr()
	testutil.WriteFile(t, path, fmt.Sprintf(`gateway: {id: %s}
data_dir: %s
http: {listen: off}
devices:
  - name: press1
    modbus: {url: "tcp://%s", unit: 1, interval: 10ms, timeout: 100ms}
    points:
      - {name: speed, table: holding, address: 5, type: uint16}
`, gatewayID, filepath.Join(dir, "data"), addr))
	h := newHarness(t, path)
	h.d.opts.ShutdownTimeout = time.Second
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	store := h.d.pipe.store
	h.d.pipe.store = func(s ferry.Scan) {
		<-release
		store(s)
	}
	h.run()
	waitFor(t, 10*time.Second, "scans waiting", func() bool { return len(h.d.pipe.in) > 2 })
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if len(h.logs.lines("pipeline did not drain in time")) != 1 {
		t.Error("no log line says the pipeline did not drain")
	}
	once.Do(func() { close(release) })
}
