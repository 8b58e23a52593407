package gateway

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/drivers/modbus"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestReloadUnderLoad changes one Modbus device's interval and one rule's
// threshold while every device streams to NATS, and reloads twice.
// It proves: the new interval is in effect (the device's poll slots);
// the changed rule raises, then clears, as each threshold says; the
// unchanged rule keeps its alert (no second "raised"); devices whose
// configuration did not change keep their connection (same connected-since,
// no new Modbus connect, no new OPC UA session, MQTT client untouched); the
// uplink keeps its NATS connection; and not one scan a driver emitted is
// missing from the stream and the buffer afterwards.
func TestReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and a daemon for several seconds")
	}
	t.Parallel()
	p := startPlant(t, 2)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	base := plantConfig{
		DataDir:  filepath.Join(dir, "data"),
		Interval: map[string]string{"press1": "200ms", "press2": "100ms"},
		Boiler:   true, Env: true, Uplink: true,
		Rules: []string{
			`{name: speed_high, when: "press1.speed > 100", severity: warning}`,
			`{name: p2_running, when: "press2.speed > 10", severity: info}`,
		},
	}
	testutil.WriteFile(t, path, base.yaml(p))
	h := startDaemon(t, path)

	// One run of 40 on a loaded machine (load ~40) timed this out at 30 s
	// with every device connected within a second: the error says which
	// part was missing.
	testutil.Eventually(t, 60*time.Second, "every device connected, the uplink up and press1 scanned", func() error {
		up, _ := h.metric("ferry_uplink_connected")
		if up == 1 && h.status("press1").Connected && h.status("press2").Connected &&
			h.status("boiler").Connected && h.status("env").Connected &&
			h.scans("press1") >= 10 && h.scans("boiler") >= 3 && h.scans("env") >= 3 && h.active("p2_running") {
			return nil
		}
		return fmt.Errorf("uplink connected %v; connected press1 %v press2 %v boiler %v env %v; scans press1 %v (want 10) boiler %v (3) env %v (3); p2_running active %v",
			up, h.status("press1").Connected, h.status("press2").Connected, h.status("boiler").Connected, h.status("env").Connected,
			h.scans("press1"), h.scans("boiler"), h.scans("env"), h.active("p2_running"))
	})
	if h.active("speed_high") {
		t.Fatal("speed_high is active with threshold 100 (press speed is 30)")
	}
	// press1 polls every 200 ms (checked at the end from the times the
	// driver took its scans).
	s0 := h.slots("press1")
	waitFor(t, 20*time.Second, "ten press1 poll slots", func() bool { return h.slots("press1") >= s0+10 })

	unchanged := []string{"press2", "boiler", "env"}
	since, lostBefore := map[string]time.Time{}, map[string]int{}
	for _, dev := range unchanged {
		since[dev], lostBefore[dev] = h.status(dev).Since, h.lost(dev)
	}
	// A link's series are labelled with its first device's name.
	link := func(pr int) string { return "link=" + p.Presses[pr].Name }
	connects := func(pr int) float64 {
		v, _ := h.metric("ferry_modbus_connects_total", link(pr), "result=ok")
		return v
	}
	// A loaded machine may have timed a request out already: the counts
	// from here on are what the reloads may change.
	connects0 := [2]float64{connects(0), connects(1)}
	lost0 := [2]int{h.lost("press1"), h.lost("press2")}
	opcuaSessions, _ := h.metric("ferry_opcua_session_reconnects_total")
	uplinkConnects := len(h.logs.lines("uplink connected"))

	// Reload 1: press1 polls twice as fast; speed_high's threshold drops
	// below the press's speed.
	v2 := base
	v2.Interval = map[string]string{"press1": "100ms", "press2": "100ms"}
	v2.Rules = []string{
		`{name: speed_high, when: "press1.speed > 20", severity: warning}`,
		base.Rules[1],
	}
	reload1 := time.Now()
	h.reload(v2.yaml(p))
	reloaded1 := time.Now()
	if v, _ := h.metric("ferry_config_reload_success"); v != 1 {
		t.Fatalf("ferry_config_reload_success = %v after a good reload", v)
	}
	waitFor(t, 10*time.Second, "speed_high raised under its new threshold", func() bool { return h.active("speed_high") })
	before := h.scans("press1")
	waitFor(t, 30*time.Second, "press1 scanning at its new interval", func() bool { return h.scans("press1") >= before+20 })

	// Reload 2: the threshold goes back up; the changed rule's alert clears.
	v3 := v2
	v3.Rules = base.Rules
	reload2 := time.Now()
	h.reload(v3.yaml(p))
	if h.active("speed_high") {
		t.Error("speed_high still active after its threshold went back to 100")
	}
	if !h.active("p2_running") {
		t.Error("p2_running (unchanged rule) lost its alert in the reloads")
	}
	before = h.scans("press1")
	waitFor(t, 30*time.Second, "press1 scanning after the second reload", func() bool { return h.scans("press1") >= before+5 })

	// A loaded machine may time a request out and the driver reconnect
	// (logged "connection lost"): a reconnect the reload did not cause.
	// Without such a loss, an unchanged device keeps its connection.
	for _, dev := range unchanged {
		waitFor(t, 30*time.Second, dev+" connected", func() bool { return h.status(dev).Connected })
		if got := h.status(dev).Since; !got.Equal(since[dev]) && h.lost(dev) == lostBefore[dev] {
			t.Errorf("%s: connected since %v, was %v before the reloads, with no connection lost: reconnected although its configuration did not change",
				dev, got, since[dev])
		}
	}
	// Each group start connects once; a lost connection may add one.
	if c, lost := connects(1)-connects0[1], h.lost("press2")-lost0[1]; c > float64(lost) {
		t.Errorf("press2 (unchanged) connected %v times during the reloads with %d connections lost, want none (but one per loss)", c, lost)
	}
	if c, lost := connects(0)-connects0[0], h.lost("press1")-lost0[0]; c < 1 || c > 1+float64(lost) {
		t.Errorf("press1 (interval changed once) connected %v times during the reloads with %d connections lost, want 1 (and one more per loss)", c, lost)
	}
	if v, _ := h.metric("ferry_opcua_session_reconnects_total"); v != opcuaSessions && h.lost("boiler") == lostBefore["boiler"] {
		t.Errorf("OPC UA session reconnects went from %v to %v across the reloads, with no connection lost", opcuaSessions, v)
	}
	if n := len(h.logs.lines("uplink connected")); n != uplinkConnects {
		t.Errorf("the uplink connected %d times across the reloads, want no new connection (%d before)", n-uplinkConnects, uplinkConnects)
	}
	if n := len(h.logs.lines("uplink restarted")); n != 0 {
		t.Errorf("the uplink was restarted although its section did not change")
	}
	groups := h.logs.lines("device groups changed")
	if len(groups) != 1 || !strings.Contains(groups[0], `stopped="[modbus tcp://`+p.Presses[0].Addr+`]"`) {
		t.Errorf("device group changes: %q, want one, of press1's link only", groups)
	}
	if v, _ := h.metric("ferry_config_reloads_total", "result=success"); v != 2 {
		t.Errorf("ferry_config_reloads_total{result=success} = %v, want 2", v)
	}

	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	dl := collect(t, p.NATS.URL, base.DataDir)
	checkNothingLost(t, h, dl, "press1", "press2", "boiler", "env")
	if dl.duplicates != 0 {
		t.Errorf("%d records stored twice in the stream", dl.duplicates)
	}
	// The interval in effect before and after the first reload, from the
	// times the driver took its scans: the median gap is what the poll
	// loop keeps to; a count of scans over a wall-clock window is not,
	// on a loaded machine (the reload held the pipeline for 1.8 s, and
	// the scans it had queued were counted after it: 30 in 2 s at 100 ms).
	for _, c := range []struct {
		from, to time.Time
		want     time.Duration
	}{{time.Time{}, reload1, 200 * time.Millisecond}, {reloaded1, reload2, 100 * time.Millisecond}} {
		got, n := medianGap(dl.allScans("press1"), c.from, c.to)
		if n < 10 || got < c.want*3/4 || got > c.want*5/4 {
			t.Errorf("press1 from %v to %v: median gap %v between %d scans, want about %v", c.from.Format("15:04:05.000"), c.to.Format("15:04:05.000"), got, n, c.want)
		}
	}

	// The alerts: speed_high raised once and cleared once, p2_running
	// raised once and never cleared.
	for _, c := range []struct {
		rule  string
		state ferry.AlertState
		want  int
	}{
		{"speed_high", ferry.AlertRaised, 1},
		{"speed_high", ferry.AlertCleared, 1},
		{"p2_running", ferry.AlertRaised, 1},
		{"p2_running", ferry.AlertCleared, 0},
	} {
		if n := dl.transitions(c.rule, c.state); n != c.want {
			t.Errorf("%s %s %d times, want %d", c.rule, c.state, n, c.want)
		}
	}
}

// checkNothingLost compares, per device, the scans its driver emitted
// (ferry_device_scans_total) with those in the stream and the buffer, and
// checks that neither the pipeline nor the buffer dropped anything.
func checkNothingLost(t *testing.T, h *harness, dl *delivered, devices ...string) {
	t.Helper()
	for _, dev := range devices {
		emitted := h.scans(dev)
		if emitted == 0 {
			t.Errorf("%s emitted no scan", dev)
		}
		if got := dl.scans(dev); float64(got) != emitted {
			t.Errorf("%s: %v scans emitted, %d in the stream and the buffer", dev, emitted, got)
		}
	}
	if v, _ := h.metric("ferry_pipeline_dropped_scans_total"); v != 0 {
		t.Errorf("the pipeline dropped %v scans", v)
	}
	if h.bufferDropped != 0 {
		t.Errorf("the buffer dropped %v records", h.bufferDropped)
	}
}

// TestReloadBadConfigKeepsRunning reloads a configuration with errors:
// the running one stays (devices still polled, rules unchanged, same
// configuration version), the errors are logged with their place, and
// ferry_config_reload_success is 0 until a later good reload sets it to 1
// and moves the timestamp.
func TestReloadBadConfigKeepsRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and a daemon")
	}
	t.Parallel()
	p := startPlant(t, 1)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	good := plantConfig{
		DataDir: filepath.Join(dir, "data"),
		Rules:   []string{`{name: running, when: "press1.speed > 10", severity: info}`},
	}
	testutil.WriteFile(t, path, good.yaml(p))
	h := startDaemon(t, path)
	waitFor(t, 20*time.Second, "press1 polled and the rule raised", func() bool { return h.scans("press1") >= 3 && h.active("running") })
	ts0, _ := h.metric("ferry_config_reload_timestamp_seconds")
	version := h.d.cfg.Version
	if err := os.MkdirAll(filepath.Join(dir, "mismatch.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, filepath.Join(dir, "mismatch.d", "hall.yaml"), `devices:
  - name: hall_a
    mqtt: {broker: "tcp://127.0.0.1:1", topic: "hall/a", keepalive: 30s}
    points: [{name: t, path: t}]
  - name: hall_b
    mqtt: {broker: "tcp://127.0.0.1:1", topic: "hall/b", keepalive: 60s}
    points: [{name: t, path: t}]
`)

	bads := []struct {
		name   string
		cfg    plantConfig
		logged string
		// where names the place of the problem in the log line:
		// file:line for the loader's errors, the devices for a driver's.
		where string
	}{
		{"unknown key", func() plantConfig { c := good; c.Extra = "buffer: {max_sise: 1GiB}\n"; return c }(), `buffer.max_sise: unknown field`, "ferry.yaml:"},
		{"rule on an unknown point", func() plantConfig {
			c := good
			c.Rules = []string{`{name: running, when: "press9.speed > 10", severity: info}`}
			return c
		}(), "press9.speed", "ferry.yaml:"},
		// Valid for the loader, refused by the driver when it builds the
		// group: nothing of the reload may be applied.
		{"devices that cannot share a connection", func() plantConfig {
			c := good
			c.Extra = "devices_dir: mismatch.d\n"
			c.Rules = append(c.Rules, `{name: hall_hot, when: "hall_a.t > 30"}`)
			return c
		}(), "differ in mqtt.keepalive", "hall_a and hall_b"},
	}
	for _, bad := range bads {
		t.Run(bad.name, func(t *testing.T) {
			h.reload(bad.cfg.yaml(p))
			if v, _ := h.metric("ferry_config_reload_success"); v != 0 {
				t.Errorf("ferry_config_reload_success = %v after a refused reload, want 0", v)
			}
			lines := h.logs.lines("reload refused", bad.logged)
			if len(lines) == 0 {
				t.Fatalf("no log line says the reload was refused because of %q", bad.logged)
			}
			if !strings.Contains(lines[len(lines)-1], "level=ERROR") || !strings.Contains(lines[len(lines)-1], bad.where) {
				t.Errorf("refusal not logged as an error naming %s: %s", bad.where, lines[len(lines)-1])
			}
			if h.d.cfg.Version != version {
				t.Error("the configuration version changed after a refused reload")
			}
			if _, ok := h.metric("ferry_config_info", "version="+version); !ok {
				t.Error("ferry_config_info no longer names the running configuration")
			}
			n := h.scans("press1")
			waitFor(t, 10*time.Second, "press1 still polled", func() bool { return h.scans("press1") >= n+3 })
			if !h.active("running") {
				t.Error("the running rule's alert is gone after a refused reload")
			}
		})
	}
	if v, _ := h.metric("ferry_config_reloads_total", "result=failure"); v != float64(len(bads)) {
		t.Errorf("ferry_config_reloads_total{result=failure} = %v, want %d", v, len(bads))
	}

	// A good reload: success again, a new timestamp and version.
	fixed := good
	fixed.Interval = map[string]string{"press1": "150ms"}
	waitFor(t, time.Second, "the clock past the last reload's timestamp", func() bool {
		return float64(time.Now().UnixNano())/1e9 > ts0
	})
	h.reload(fixed.yaml(p))
	if v, _ := h.metric("ferry_config_reload_success"); v != 1 {
		t.Errorf("ferry_config_reload_success = %v after a good reload, want 1", v)
	}
	if ts, _ := h.metric("ferry_config_reload_timestamp_seconds"); ts <= ts0 {
		t.Errorf("ferry_config_reload_timestamp_seconds %v did not move past %v", ts, ts0)
	}
	if h.d.cfg.Version == version {
		t.Error("the configuration version did not change with the good reload")
	}
	if _, ok := h.metric("ferry_config_info", "version="+version); ok {
		t.Error("ferry_config_info still names the previous version")
	}
	if !h.active("running") {
		t.Error("the unchanged rule lost its alert in the good reload")
	}

	// Settings that need a restart: warned about, kept as they run; the
	// rest of the file applies.
	restart := fixed
	restart.Interval = map[string]string{"press1": "100ms"}
	text := strings.Replace(restart.yaml(p), "gateway: {id: "+gatewayID, "gateway: {id: other", 1)
	text = strings.Replace(text, `listen: "127.0.0.1:0"`, `listen: "127.0.0.1:1"`, 1)
	addr := h.d.http.Addr()
	h.reload(text)
	if lines := h.logs.lines("take effect at the next restart", `fields="gateway, http"`); len(lines) != 1 {
		t.Errorf("no warning naming gateway and http: %q", h.logs.lines("next restart"))
	}
	if v, _ := h.metric("ferry_config_reload_success"); v != 1 {
		t.Errorf("ferry_config_reload_success = %v", v)
	}
	if id := h.d.curCfg.Load().Gateway.ID; id != gatewayID {
		t.Errorf("running gateway id %q after a reload that changed it, want %q until a restart", id, gatewayID)
	}
	if _, body := h.get("/api/status"); !strings.Contains(body, `"gateway": "`+gatewayID+`"`) || h.d.http.Addr() != addr {
		t.Errorf("/api/status after the reload: %s", body)
	}
	if got := config.DevicesOf[modbus.Device](h.d.curCfg.Load())[0].Config.Interval; got != 100*time.Millisecond {
		t.Errorf("press1 interval %v after the reload, want 100ms (the rest of the file applies)", got)
	}
}

// TestReloadAddsAndRemovesDevices removes a device, then adds it back: its
// series leave /metrics and the device list with it (a decommissioned PLC
// must not stay "down" forever), and return with it; the other device is
// not touched.
func TestReloadAddsAndRemovesDevices(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and a daemon")
	}
	t.Parallel()
	p := startPlant(t, 2)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	cfg := plantConfig{DataDir: filepath.Join(dir, "data")}
	both := cfg.yaml(p)
	testutil.WriteFile(t, path, both)
	h := startDaemon(t, path)
	waitFor(t, 20*time.Second, "both presses read", func() bool { return h.scans("press1") >= 2 && h.scans("press2") >= 2 })
	since := h.status("press1").Since

	// press2's entry is the second of the list: cut it out.
	i := strings.Index(both, "  - name: press2")
	j := i + strings.Index(both[i:], "rules:")
	if k := strings.Index(both[i:], "alerts:"); j < i || k >= 0 && i+k < j {
		j = i + k
	}
	h.reload(both[:i] + both[j:])
	if _, ok := h.metric("ferry_device_connected", "device=press2"); ok {
		t.Error("ferry_device_connected{device=press2} still exported after press2 was removed")
	}
	if _, ok := h.metric("ferry_device_scans_total", "device=press2"); ok {
		t.Error("ferry_device_scans_total{device=press2} still exported after press2 was removed")
	}
	// The driver's own series of the device and of its link go too.
	for _, name := range []string{"ferry_modbus_planned_requests", "ferry_modbus_bad_ranges"} {
		if _, ok := h.metric(name, "device=press2"); ok {
			t.Errorf("%s{device=press2} still exported after press2 was removed", name)
		}
	}
	if _, ok := h.metric("ferry_modbus_requests_total", "link="+p.Presses[1].Name); ok {
		t.Error("ferry_modbus_requests_total of press2's link still exported after press2 was removed")
	}
	for _, st := range h.d.deviceStatus() {
		if st.Device == "press2" {
			t.Error("press2 still listed by /api/devices after it was removed")
		}
	}
	_, body := h.get("/api/devices")
	if strings.Contains(body, "press2") {
		t.Errorf("/api/devices after press2 was removed: %s", body)
	}

	h.reload(both)
	waitFor(t, 20*time.Second, "press2 read again", func() bool {
		v, _ := h.metric("ferry_device_connected", "device=press2")
		return v == 1 && h.scans("press2") >= 1
	})
	// press1's group is left alone by both reloads. Its connection too,
	// unless a request timed out on a loaded machine ("connection lost"):
	// a reconnect no reload caused.
	press1 := "tcp://" + p.Presses[0].Addr
	for _, l := range h.logs.lines("device groups changed") {
		if strings.Contains(l, press1) {
			t.Errorf("a reload touched press1's link: %s", l)
		}
	}
	if got := h.status("press1").Since; !got.Equal(since) && h.lost("press1") == 0 {
		t.Errorf("press1 reconnected (since %v, was %v) with no connection lost, when only press2 changed", got, since)
	}
}

// medianGap is the median time between consecutive scans taken in
// (from, to), and how many scans that is.
func medianGap(scans []ferry.Scan, from, to time.Time) (time.Duration, int) {
	var in []time.Time
	for _, sc := range scans {
		if sc.Time.After(from) && sc.Time.Before(to) {
			in = append(in, sc.Time)
		}
	}
	if len(in) < 2 {
		return 0, len(in)
	}
	gaps := make([]time.Duration, 0, len(in)-1)
	for i := 1; i < len(in); i++ {
		gaps = append(gaps, in[i].Sub(in[i-1]))
	}
	slices.Sort(gaps)
	return gaps[len(gaps)/2], len(in)
}

// lost counts the times the daemon logged device's connection lost.
func (h *harness) lost(device string) int {
	return len(h.logs.lines(`msg="connection lost"`, "device="+device+" "))
}

// TestReloadKeepsAPIResponsive reloads while a device group takes seconds
// to stop (a request to a PLC that never answers must time out first):
// /readyz, /metrics, /api/devices, /api/status and the console's
// /api/health answer meanwhile — the reload must not hold them up.
func TestReloadKeepsAPIResponsive(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and a daemon")
	}
	t.Parallel()
	p := startPlant(t, 1)
	silent := testutil.SilentTCP(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	cfg := plantConfig{DataDir: filepath.Join(dir, "data"), Uplink: true}
	testutil.WriteFile(t, path, strings.Replace(cfg.yaml(p), "alerts:", fmt.Sprintf(`  - name: hung
    modbus: {url: "tcp://%s", unit: 1, interval: 100ms, timeout: 5s}
    points:
      - {name: speed, table: holding, address: 5, type: uint16}
alerts:`, silent), 1))
	h := startDaemon(t, path)
	// The first request to the hung device is sent when its link opens
	// and waits 5 s for an answer; the reload comes well before.
	waitFor(t, 20*time.Second, "press1 read, the uplink up and the hung device's link open", func() bool {
		up, _ := h.metric("ferry_uplink_connected")
		return h.scans("press1") >= 2 && up == 1 && len(h.logs.lines("link open", silent)) > 0
	})

	// The reload removes the hung device: its group must stop, which
	// waits for the request in flight.
	testutil.WriteFile(t, path, cfg.yaml(p))
	reloaded := make(chan struct{})
	go func() { defer close(reloaded); h.d.Reload(path) }()
	waitFor(t, 10*time.Second, "the reload to start", func() bool { return len(h.logs.lines("rules updated")) > 0 })
	select {
	case <-reloaded:
		t.Fatal("the reload did not wait for the hung device's group to stop")
	default:
	}
	for _, path := range []string{"/readyz", "/metrics", "/api/devices", "/api/status", "/api/health"} {
		code, _ := h.get(path)
		select {
		case <-reloaded:
			t.Fatalf("GET %s (%d) returned only after the reload had finished", path, code)
		default:
		}
		if code != 200 {
			t.Errorf("GET %s during the reload: %d", path, code)
		}
	}
	select {
	case <-reloaded:
	case <-time.After(20 * time.Second):
		t.Fatal("the reload did not finish")
	}
}

// TestReloadIgnoredWhenNotRunning: a reload before Run has started the
// parts, or after its shutdown began, changes nothing (it would start
// drivers on a closed pipeline) and says so.
func TestReloadIgnoredWhenNotRunning(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	// A Modbus device nobody answers for: the driver runs, and fails.
	addr := testpeer.Reserve(t).Addr()
	file := func(interval string) string {
		return fmt.Sprintf(`gateway: {id: %s}
data_dir: %s
http: {listen: off}
devices:
  - name: press1
    modbus: {url: "tcp://%s", unit: 1, interval: %s, timeout: 100ms}
    points:
      - {name: speed, table: holding, address: 5, type: uint16}
`, gatewayID, filepath.Join(dir, "data"), addr, interval)
	}
	testutil.WriteFile(t, path, file("100ms"))
	h := newHarness(t, path)
	h.reload(file("200ms"))
	if len(h.logs.lines("reload ignored")) != 1 || config.DevicesOf[modbus.Device](h.d.cfg)[0].Config.Interval != 100*time.Millisecond {
		t.Error("a reload before Run was applied")
	}
	h.run()
	waitFor(t, 10*time.Second, "press1 polled", func() bool { return h.scans("press1") >= 2 })
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	h.reload(file("300ms"))
	if len(h.logs.lines("reload ignored")) != 2 || config.DevicesOf[modbus.Device](h.d.cfg)[0].Config.Interval != 100*time.Millisecond {
		t.Error("a reload after the shutdown was applied")
	}
}
