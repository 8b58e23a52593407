package gateway

// The daemon-level test harness: a simulated plant (internal/plantsim) on
// free ports, a ferry configuration written for it, the daemon run
// in-process (newDaemon + Run), and readers for what came out of it — its
// metrics, its log, the NATS stream and the buffer left on disk.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
	"github.com/ferry-edge/ferry/internal/codec"
	"github.com/ferry-edge/ferry/internal/plantsim"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink"
)

const gatewayID = "gw1"

// startPlant starts a simulated plant with a NATS server; it is closed at
// the end of the test.
func startPlant(t *testing.T, presses int) *plantsim.Plant {
	t.Helper()
	p, err := plantsim.Start(context.Background(), plantsim.Options{
		Presses: presses,
		Rate:    100 * time.Millisecond,
		NATSDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// plantConfig describes the ferry configuration a test runs against a
// plant. The zero value of each optional part leaves it out.
type plantConfig struct {
	DataDir string
	// Interval of each press by name (default 100ms).
	Interval map[string]string
	// Boiler and Env add the OPC UA boiler and the MQTT sensor.
	Boiler, Env bool
	// Uplink forwards to the plant's NATS.
	Uplink bool
	// Rules are YAML flow mappings, one rule each.
	Rules []string
	// Extra is appended to the file as it is (a bad key, for instance).
	Extra string
}

// yaml renders the configuration for plant p.
func (c plantConfig) yaml(p *plantsim.Plant) string {
	var b strings.Builder
	fmt.Fprintf(&b, "gateway: {id: %s, site: test}\n", gatewayID)
	fmt.Fprintf(&b, "data_dir: %s\n", c.DataDir)
	b.WriteString("log: {level: debug}\n")
	b.WriteString("http: {listen: \"127.0.0.1:0\"}\n")
	b.WriteString("devices:\n")
	for _, pr := range p.Presses {
		iv := c.Interval[pr.Name]
		if iv == "" {
			iv = "100ms"
		}
		fmt.Fprintf(&b, `  - name: %s
    modbus: {url: "tcp://%s", unit: 1, interval: %s, timeout: 500ms}
    points:
      - {name: oil_temp, table: holding, address: %d, type: float32}
      - {name: speed, table: holding, address: %d, type: uint16}
      - {name: cycles, table: holding, address: %d, type: uint32}
      - {name: running, table: coil, address: %d}
`, pr.Name, pr.Addr, iv, plantsim.HROilTemp, plantsim.HRSpeed, plantsim.HRCycles, plantsim.CoilRunning)
	}
	if c.Boiler {
		fmt.Fprintf(&b, `  - name: boiler
    opcua: {endpoint: "%s", security_policy: None, allow_insecure: true, mode: subscribe, interval: 100ms}
    points:
      - {name: pressure, node: "nsu=urn:ferry:plantsim:boiler;s=Boiler.Pressure"}
      - {name: count, node: "nsu=urn:ferry:plantsim:boiler;s=Boiler.Count"}
`, p.Boiler.Endpoint)
	}
	if c.Env {
		b.WriteString(p.EnvDevice())
	}
	if len(c.Rules) > 0 {
		b.WriteString("rules:\n")
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "  - %s\n", r)
		}
	}
	b.WriteString("alerts: {log: {enabled: true}}\n")
	if c.Uplink {
		fmt.Fprintf(&b, "uplink:\n  nats: {urls: [\"%s\"], stream: %s, reconnect_max: 500ms, connect_timeout: 1s}\n", p.NATS.URL, plantsim.StreamName)
	}
	b.WriteString(c.Extra)
	return b.String()
}

// logBuffer collects the daemon's log lines.
type logBuffer struct{ testutil.SyncBuffer }

// lines returns the lines that contain every one of subs.
func (l *logBuffer) lines(subs ...string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// harness is one daemon running in-process.
type harness struct {
	t      *testing.T
	path   string
	d      *Gateway
	logs   *logBuffer
	cancel context.CancelFunc
	done   chan error
	err    error
	once   sync.Once
	// bufferDropped is ferry_buffer_dropped_total just before the stop
	// (the buffer's series go with it).
	bufferDropped float64
}

// startDaemon loads the configuration at path and runs a daemon on it
// until the test ends (or stop).
func startDaemon(t *testing.T, path string) *harness {
	t.Helper()
	h := newHarness(t, path)
	h.run()
	return h
}

// newHarness builds the daemon without running it.
func newHarness(t *testing.T, path string) *harness {
	t.Helper()
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	level := new(slog.LevelVar)
	level.Set(slog.LevelDebug)
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level}))
	d, err := New(cfg, Options{Logger: log, Level: level, Version: "test", Commit: "abc", ShutdownTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, path: path, d: d, logs: logs}
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			dumpLog(t, logs.String())
		}
	})
	return h
}

func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.d.Run(ctx) }()
	waitFor(h.t, 30*time.Second, "the daemon to run", func() bool {
		h.d.mu.Lock()
		defer h.d.mu.Unlock()
		return h.d.runCtx != nil
	})
}

// stop ends Run (the SIGTERM path) and returns its error.
func (h *harness) stop() error {
	h.once.Do(func() {
		if h.cancel == nil {
			return
		}
		h.bufferDropped, _ = gatherValue(h.t, h.d.reg, "ferry_buffer_dropped_total")
		h.cancel()
		select {
		case h.err = <-h.done:
		case <-time.After(60 * time.Second):
			h.err = errors.New("Run did not return within 60s of its context's end")
			h.t.Error(h.err)
		}
	})
	return h.err
}

// reload rewrites the configuration and reloads it, as SIGHUP does.
func (h *harness) reload(text string) {
	h.t.Helper()
	testutil.WriteFile(h.t, h.path, text)
	h.d.Reload(h.path)
}

// url returns the address of the daemon's HTTP listener with path.
func (h *harness) url(path string) string { return "http://" + h.d.http.Addr() + path }

func (h *harness) get(path string) (int, string) {
	h.t.Helper()
	resp, err := http.Get(h.url(path))
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// metric sums the series of name whose labels include the given
// name=value pairs (a histogram counts its observations); ok is false when
// no series matches.
func (h *harness) metric(name string, labels ...string) (v float64, ok bool) {
	h.t.Helper()
	return gatherValue(h.t, h.d.reg, name, labels...)
}

func gatherValue(t *testing.T, g prometheus.Gatherer, name string, labels ...string) (v float64, ok bool) {
	t.Helper()
	return testpeer.Gather(t, g).Find(name, labels...)
}

// scans returns how many scans the driver of device has emitted.
func (h *harness) scans(device string) float64 {
	v, _ := h.metric("ferry_device_scans_total", "device="+device)
	return v
}

// slots returns how many poll slots of device have passed: its scans plus
// the polls it skipped because the one before ran late. Unlike the scans
// alone, this follows the configured interval however loaded the machine
// is.
func (h *harness) slots(device string) float64 {
	overruns, _ := h.metric("ferry_device_poll_overruns_total", "device="+device)
	return h.scans(device) + overruns
}

// status returns the status of device.
func (h *harness) status(device string) ferry.DeviceStatus {
	for _, st := range h.d.deviceStatus() {
		if st.Device == device {
			return st
		}
	}
	h.t.Fatalf("no status for device %s", device)
	return ferry.DeviceStatus{}
}

// active reports whether rule has an active alert.
func (h *harness) active(rule string) bool {
	for _, a := range h.d.engine.Active() {
		if a.Rule == rule {
			return true
		}
	}
	return false
}

// waitFor is testutil.WaitFor, by the name this package's tests use.
var waitFor = testutil.WaitFor

func dumpLog(t *testing.T, s string) {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 300 {
		lines = lines[len(lines)-300:]
	}
	t.Logf("daemon log (last %d lines):\n%s", len(lines), strings.Join(lines, "\n"))
}

// delivered is what left a daemon: the records in the stream and those
// still in its buffer, by record id (a record in both counts once).
type delivered struct {
	telemetry map[string]codec.Telemetry // record id → decoded scans
	alerts    map[string]ferry.Alert
	// upstream holds the ids found in the stream.
	upstream map[string]bool
	// duplicates counts ids seen twice in the stream.
	duplicates int
}

// scans counts the scans of device.
func (dl *delivered) scans(device string) int {
	n := 0
	for _, tel := range dl.telemetry {
		if tel.Device == device {
			n += len(tel.Scans)
		}
	}
	return n
}

// allScans returns every scan of device, in time order.
func (dl *delivered) allScans(device string) []ferry.Scan {
	var out []ferry.Scan
	for _, tel := range dl.telemetry {
		if tel.Device == device {
			out = append(out, tel.Scans...)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

// transitions counts the alert transitions of rule in state.
func (dl *delivered) transitions(rule string, state ferry.AlertState) int {
	n := 0
	for _, a := range dl.alerts {
		if a.Rule == rule && a.State == state {
			n++
		}
	}
	return n
}

// collect reads the stream (when url is set) and the stopped daemon's
// buffer in dataDir.
func collect(t *testing.T, url, dataDir string) *delivered {
	t.Helper()
	dl := &delivered{telemetry: map[string]codec.Telemetry{}, alerts: map[string]ferry.Alert{}, upstream: map[string]bool{}}
	if url != "" {
		readStream(t, url, func(id string, lane ferry.Lane, data []byte) {
			if dl.upstream[id] {
				dl.duplicates++
			}
			dl.upstream[id] = true
			dl.add(t, id, lane, data)
		})
	}
	in, err := buffer.Inspect(dataDir)
	if err != nil {
		t.Fatalf("inspect buffer: %v", err)
	}
	defer in.Close()
	for _, lane := range []ferry.Lane{ferry.LaneAlerts, ferry.LaneTelemetry} {
		err := in.Records(lane, 0, func(rec ferry.Record, err error) error {
			if err != nil {
				return fmt.Errorf("record %s: %w", rec.ID, err)
			}
			dl.add(t, rec.ID, lane, rec.Data)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return dl
}

func (dl *delivered) add(t *testing.T, id string, lane ferry.Lane, data []byte) {
	t.Helper()
	switch lane {
	case ferry.LaneTelemetry:
		tel, err := codec.DecodeTelemetry(data)
		if err != nil {
			t.Fatalf("record %s: %v", id, err)
		}
		dl.telemetry[id] = tel
	case ferry.LaneAlerts:
		_, a, err := codec.DecodeAlert(data)
		if err != nil {
			t.Fatalf("record %s: %v", id, err)
		}
		dl.alerts[id] = a
	}
}

// readStream calls fn for every telemetry and alert message in the
// plant's stream, turning each back into the buffer's record encoding via
// the wire format: what the cloud received.
func readStream(t *testing.T, url string, fn func(id string, lane ferry.Lane, data []byte)) {
	t.Helper()
	testpeer.ReadStream(t, url, plantsim.StreamName, func(m jetstream.Msg) {
		all, err := uplink.DecodeAll(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			t.Fatalf("stream message on %s: %v", m.Subject(), err)
		}
		for _, msg := range all {
			switch msg.Kind {
			case uplink.KindTelemetry:
				fn(msg.ID, ferry.LaneTelemetry, telemetryRecord(msg.Telemetry))
			case uplink.KindAlert:
				fn(msg.ID, ferry.LaneAlerts, alertRecord(t, msg.Alert))
			}
		}
	})
}

// telemetryRecord encodes a received telemetry message as a buffer record,
// so that stream and buffer are compared in one form.
func telemetryRecord(m *uplink.TelemetryMessage) []byte {
	scans := make([]ferry.Scan, 0, len(m.Scans))
	for _, s := range m.Scans {
		sc := ferry.Scan{Device: m.Device, Time: s.Time}
		for _, p := range s.Points {
			q := ferry.Quality{Status: p.Quality, Reason: p.Reason}
			sc.Samples = append(sc.Samples, ferry.Sample{Device: m.Device, Point: p.Name, Value: p.Value, Quality: q, Time: p.Time})
		}
		scans = append(scans, sc)
	}
	return codec.AppendTelemetry(nil, m.ConfigVersion, m.Device, scans)
}

func alertRecord(t *testing.T, m *uplink.AlertMessage) []byte {
	t.Helper()
	st := ferry.AlertState(255)
	for _, s := range []ferry.AlertState{ferry.AlertRaised, ferry.AlertAcknowledged, ferry.AlertCleared} {
		if s.String() == m.State {
			st = s
		}
	}
	if st == 255 {
		t.Fatalf("alert %s: unknown state %q", m.ID, m.State)
	}
	sev, err := ferry.ParseSeverity(m.Severity)
	if err != nil {
		t.Fatal(err)
	}
	a := ferry.Alert{ID: m.ID, Rule: m.Rule, Device: m.Device, Point: m.Point, State: st, Severity: sev, Value: m.Value, Message: m.Message}
	return codec.AppendAlert(nil, m.ConfigVersion, &a)
}

// ferryGoroutines returns the stacks of goroutines running ferry code
// (outside the test itself and the simulated plant). Tests that use it
// run sequentially: the parallel tests of the package (t.Parallel) start
// only after them.
func ferryGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "github.com/ferry-edge/ferry") ||
			strings.Contains(g, "internal/plantsim") ||
			strings.Contains(g, "testing.tRunner") ||
			strings.Contains(g, "internal/gateway.Test") || // the test's own peers
			strings.Contains(g, "internal/testutil") ||
			strings.Contains(g, "runtime.Stack") {
			continue
		}
		out = append(out, g)
	}
	return out
}

// notifySocket is a fake systemd notification socket.
type notifySocket struct {
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []notifyMsg
	done chan struct{}
}

type notifyMsg struct {
	at   time.Time
	text string
}

// listenNotify creates a unixgram socket in a temporary directory and
// points NOTIFY_SOCKET at it for the test.
func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "ferry-notify")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	ns := &notifySocket{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(ns.done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ns.mu.Lock()
			ns.msgs = append(ns.msgs, notifyMsg{time.Now(), string(buf[:n])})
			ns.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-ns.done })
	t.Setenv("NOTIFY_SOCKET", path)
	return ns
}

// messages returns what was received so far.
func (ns *notifySocket) messages() []notifyMsg {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return append([]notifyMsg(nil), ns.msgs...)
}

// count counts the messages with a line equal to line, from index from.
func (ns *notifySocket) count(line string, from int) int {
	n := 0
	msgs := ns.messages()
	for _, m := range msgs[min(from, len(msgs)):] {
		for _, l := range strings.Split(m.text, "\n") {
			if l == line {
				n++
			}
		}
	}
	return n
}
