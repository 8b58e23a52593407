//go:build soak

package soak

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink"
)

const (
	gateway = "soak"
	stream  = "SOAK"
	uaNS    = "urn:ferry:soak"
	// units of the pymodbus server, each a ferry device on one link.
	units = 3
	// down is how long each server stays stopped in its restart.
	down = 5 * time.Second
	// settle is how long after a device reconnected its restart window
	// lasts: the Bad samples and log lines of the restart belong to it.
	settle = 5 * time.Second
)

// The OPC UA nodes: quiet ones never change (most tags of a real machine
// for hours: a recipe, a setpoint at rest), slow and fast ones count.
var uaNodes = []testpeer.NodeOPCUAVar{
	{Name: "Setpoint", Type: "Double", Value: 72.5},
	{Name: "Recipe", Type: "String", Value: "R-17"},
	{Name: "Mode", Type: "Int32", Value: 3},
	{Name: "Slow", Type: "Double", Value: 0, Every: 5 * time.Second},
	{Name: "Fast", Type: "Int32", Value: 0, Every: 100 * time.Millisecond},
}

// window is a restart of one server: from its stop until its devices
// were connected again, plus settle.
type window struct {
	peer                      string
	devices                   []string // the devices (or "uplink") that depend on it
	stopAt, backAt, connected time.Time
}

func (w window) holds(device string, at time.Time) bool {
	if at.Before(w.stopAt) || at.After(w.connected.Add(settle)) {
		return false
	}
	for _, d := range w.devices {
		if d == device {
			return true
		}
	}
	return false
}

// TestSoak runs ferry for SOAK (default 30m) against node-opcua, pymodbus,
// mosquitto and nats-server, restarting each once, and prints the table.
func TestSoak(t *testing.T) {
	dur := 30 * time.Minute
	if s := os.Getenv("SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Minute {
			t.Fatalf("SOAK=%q: want a duration of at least 1m", s)
		}
		dur = d
	}
	tl := tools(t)
	t.Logf("peers: node-opcua (pinned), pymodbus %s, %s, %s, node %s", tl["pymodbus"], tl["mosquitto-version"], tl["nats-server-version"], tl["node-version"])
	bin := buildFerry(t)
	dir := t.TempDir()

	// The peers.
	ua := testpeer.StartNodeOPCUA(t, testpeer.NodeOPCUAConfig{
		Security: []string{"None", "Basic256Sha256"}, NamespaceURI: uaNS, Nodes: uaNodes,
	})
	mb := startModbus(t, tl["python3"], strconv.Itoa(units))
	mq := startMosquitto(t, tl["mosquitto"], dir)
	ns := startNATS(t, tl["nats-server"], dir)

	// ferry trusts the node-opcua server's certificate (an engineer
	// copies it to pki/trusted); node-opcua accepts ferry's.
	data := filepath.Join(dir, "data")
	serverCert, err := os.ReadFile(filepath.Join(uaPKI(t), "server", "own", "certs", "certificate.pem"))
	if err != nil {
		t.Fatalf("node-opcua's certificate: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(data, "pki", "trusted"), 0o700); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, filepath.Join(data, "pki", "trusted", "node-opcua.pem"), string(serverCert))

	cfg := filepath.Join(dir, "ferry.yaml")
	testutil.WriteFile(t, cfg, ferryConfig(data, ua.Endpoint(), mb.addr, mq.addr, ns.addr))
	f := testpeer.Child(t, bin, "run", "-config", cfg)
	base := httpBase(t, f)
	devices := deviceNames()
	depends := map[string][]string{
		"node-opcua":  {"ua_quiet", "ua_sub", "ua_poll", "ua_secure"},
		"pymodbus":    {},
		"mosquitto":   {"mqtt_q1", "mqtt_q0"},
		"nats-server": {"uplink"},
	}
	for u := 1; u <= units; u++ {
		depends["pymodbus"] = append(depends["pymodbus"], fmt.Sprintf("unit%d", u))
	}
	waitConnected(t, base, devices, 3*time.Minute)

	q1 := startPublisher(t, mq.addr, "soak/q1", 1, 200*time.Millisecond)
	q0 := startPublisher(t, mq.addr, "soak/q0", 0, 200*time.Millisecond)

	// The run: a restart of each server spread over the middle, the
	// process measured every 10 s. RSS and goroutines "at the start" are
	// taken after a warm-up (the first publish, the first batches).
	start := time.Now()
	warm := min(time.Minute, dur/5)
	plan := []struct {
		peer *peer
		at   time.Duration
	}{{mq, dur * 3 / 10}, {mb, dur * 4 / 10}, {nodePeer(t, ua), dur * 5 / 10}, {ns, dur * 6 / 10}}
	var (
		windows                  []window
		rssStart, rssMax, rssEnd float64
		grStart, grEnd           float64
		lastScrape               time.Time
		series                   []memSample
		heapStart                bool
	)
	pid := f.Pid()
	art := artifacts(t)
	sample := func() {
		m := memSample{at: time.Since(start), mapped: mappedSize(bin, data), load: loadAvg()}
		var err error
		var shmem float64
		if m.rss, m.anon, shmem, err = smapsRollup(pid); err != nil {
			t.Logf("memory sample: %v", err)
			return
		}
		m.file = m.rss - m.anon - shmem
		if mt, err := metrics(base); err == nil {
			m.heapInuse, m.goroutines = mt.Sum("go_memstats_heap_inuse_bytes"), mt.Sum("go_goroutines")
		}
		series = append(series, m)
		t.Logf("memory at %v: RSS %.1f MiB (anon %.1f, file %.1f), Go heap in use %.1f MiB, %0.f goroutines, binary + bbolt files %.1f MiB; load %.1f",
			m.at.Round(time.Second), m.rss/mib, m.anon/mib, m.file/mib, m.heapInuse/mib, m.goroutines, m.mapped/mib, m.load)
		art.write("memory.tsv", fmt.Sprintf("%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.2f\n", m.at.Seconds(), m.rss, m.anon, m.file, m.heapInuse, m.goroutines, m.mapped, m.load))
	}
	art.write("memory.tsv", "seconds\trss\tanon\tfile\theap_inuse\tgoroutines\tmapped_files\tload1\n")
	sample()
	for time.Since(start) < dur {
		time.Sleep(time.Second) // the soak's clock: its length is the test, not a wait
		if !f.Running() {
			t.Fatalf("ferry exited during the soak:\n%s", testpeer.Tail(f.Log(), 40))
		}
		el := time.Since(start)
		if len(plan) > 0 && el >= plan[0].at {
			p := plan[0].peer
			plan = plan[1:]
			w := window{peer: p.name, devices: depends[p.name], stopAt: time.Now()}
			p.stop(t)
			time.Sleep(down) // the outage is the thing under test
			p.restart(t)
			w.backAt = time.Now()
			if p.name == "nats-server" {
				waitUplink(t, base, 3*time.Minute)
			} else {
				waitConnected(t, base, w.devices, 3*time.Minute)
			}
			w.connected = time.Now()
			windows = append(windows, w)
			t.Logf("%v: %s restarted; its devices reconnected %v after it was back", el.Round(time.Second), p.name, w.connected.Sub(w.backAt).Round(10*time.Millisecond))
			continue
		}
		if el := time.Since(start); el >= time.Duration(len(series))*time.Minute {
			sample()
		}
		if time.Since(lastScrape) < 10*time.Second {
			continue
		}
		lastScrape = time.Now()
		rss := rssBytes(pid)
		rssMax = max(rssMax, rss)
		if rssStart == 0 && el >= warm {
			rssStart, grStart = rss, goroutines(t, base)
		}
		if !heapStart && el >= dur/3 {
			heapStart = true
			art.heapProfile(t, base, "heap-warm.pb.gz")
		}
	}
	sample()
	art.heapProfile(t, base, "heap-end.pb.gz")
	q1.Stop()
	q0.Stop()
	waitDrained(t, base, 3*time.Minute)
	rssEnd, grEnd = rssBytes(pid), goroutines(t, base)
	end := time.Now()
	if err := f.Stop(60 * time.Second); err != nil {
		t.Errorf("ferry after SIGTERM: %v", err)
	}

	// What reached the stream.
	up := readUpstream(t, "nats://"+ns.addr)
	lostRec, dupRec := up.recordGaps(t)
	q1Sent, q1Tried := q1.result()
	q0Sent, q0Tried := q0.result()
	q1Lost, q1Dup := seqCheck(up.seqs["mqtt_q1"], q1Sent, nil)
	mqWin := windowsOf(windows, "mosquitto")
	q0Lost, _ := seqCheck(up.seqs["mqtt_q0"], q0Sent, mqWin)
	badOut := 0
	for _, b := range up.bad {
		in := false
		for _, w := range windows {
			if w.holds(b.device, b.at) {
				in = true
			}
		}
		if !in {
			badOut++
			if badOut <= 10 {
				t.Logf("Bad sample outside the restart windows: %s.%s at %v: %s", b.device, b.point, b.at.Format(time.RFC3339Nano), b.reason)
			}
		}
	}

	// What ferry logged.
	lg := parseLog(f.Log())
	unexpected, expected := 0, 0
	var outside []string
	for _, l := range lg {
		dev := l.attrs["device"]
		lost := l.msg == "connection lost" || l.msg == "uplink not ready"
		if l.msg == "uplink not ready" {
			dev = "uplink"
		}
		in := false
		for _, w := range windows {
			if w.holds(dev, l.at) || (dev == "" && !l.at.Before(w.stopAt) && !l.at.After(w.connected.Add(settle))) {
				in = true
			}
		}
		if lost && in {
			expected++
		}
		if lost && !in && l.at.After(start) {
			unexpected++
			t.Logf("unexpected: %s", l.line)
		}
		if !in && l.at.After(start) && (l.level == "WARN" || l.level == "ERROR") {
			outside = append(outside, l.line)
		}
	}
	hours := end.Sub(start).Hours()
	inWin, during := 0, 0
	byMsg := map[string]int{}
	for _, l := range lg {
		if l.at.Before(start) || l.at.After(end) {
			continue // start-up and shut-down: once per run, not per hour
		}
		during++
		byMsg[l.level+" "+l.msg]++
		for _, w := range windows {
			if !l.at.Before(w.stopAt) && !l.at.After(w.connected.Add(settle)) {
				inWin++
				break
			}
		}
	}

	// The table.
	var tb strings.Builder
	row := func(what, value, goal string) { fmt.Fprintf(&tb, "| %s | %s | %s |\n", what, value, goal) }
	tb.WriteString("| soak figure | value | goal |\n|---|---|---|\n")
	row("length", end.Sub(start).Round(time.Second).String(), "")
	row("devices", fmt.Sprintf("%d (OPC UA subscribe None with quiet nodes only, subscribe None, subscribe Basic256Sha256, poll; Modbus units 1-%d; MQTT QoS 1, QoS 0)", len(devices), units), "")
	row("unexpected reconnects (device or uplink lost outside a restart)", strconv.Itoa(unexpected), "0")
	row("expected losses (during the 4 restarts)", strconv.Itoa(expected), "")
	for _, w := range windows {
		row("reconnect after the "+w.peer+" restart (from the server back)", w.connected.Sub(w.backAt).Round(10*time.Millisecond).String(), "")
	}
	row("records upstream / lost / doubled", fmt.Sprintf("%d / %d / %d", len(up.ids), lostRec, dupRec), "lost 0, doubled 0")
	row("samples upstream (Good / Bad)", fmt.Sprintf("%d / %d", up.samples-len(up.bad), len(up.bad)), "")
	row("MQTT QoS 1: acknowledged by mosquitto / lost / doubled upstream", fmt.Sprintf("%d (of %d tried) / %d / %d", len(q1Sent), q1Tried, q1Lost, q1Dup), "lost 0, doubled 0")
	row("MQTT QoS 0: sent / lost outside the mosquitto restart", fmt.Sprintf("%d (of %d tried) / %d", len(q0Sent), q0Tried, q0Lost), "0")
	row("OPC UA subscribed samples delivered twice", strconv.Itoa(up.uaDup), "0")
	row("Bad samples outside the restart windows", strconv.Itoa(badOut), "0")
	row("RSS at start (after "+warm.String()+") / end / max", fmt.Sprintf("%.1f / %.1f / %.1f MiB", rssStart/(1<<20), rssEnd/(1<<20), rssMax/(1<<20)), "flat")
	row("goroutines at start / end", fmt.Sprintf("%.0f / %.0f", grStart, grEnd), "flat")
	row("log lines per hour after start-up (all / outside restart windows)", fmt.Sprintf("%.0f / %.0f", float64(during)/hours, float64(during-inWin)/hours), "bounded")
	row("warnings and errors outside restart windows", strconv.Itoa(len(outside)), "0")
	judged, flat, verdict := flatVerdict(series, end.Sub(start))
	row("memory after the warm-up (first third, at least 15 min): "+verdictShort(judged, flat), verdict, "flat (README)")
	mem := seriesTable(series)
	t.Logf("memory, one sample a minute:\n%s", mem)
	fmt.Println(mem)
	art.write("memory.md", mem)
	art.write("table.md", tb.String())
	art.heapDiff(t, "heap-warm.pb.gz", "heap-end.pb.gz")
	if art.dir != "" {
		t.Logf("artifacts in %s", art.dir)
	}
	t.Logf("soak table:\n%s", tb.String())
	fmt.Println(tb.String())
	if path := os.Getenv("FERRY_SOAK_REPORT"); path != "" {
		fh, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintf(fh, "\nferry soak, %s, %v\n\n%s", time.Now().UTC().Format(time.RFC3339), dur, tb.String())
			fh.Close()
		}
	}
	msgs := make([]string, 0, len(byMsg))
	for m := range byMsg {
		msgs = append(msgs, m)
	}
	sort.Slice(msgs, func(i, j int) bool { return byMsg[msgs[i]] > byMsg[msgs[j]] })
	for _, m := range msgs[:min(len(msgs), 15)] {
		t.Logf("log lines during the run: %5d %s", byMsg[m], m)
	}
	for i, l := range outside {
		if i == 20 {
			break
		}
		t.Logf("outside a restart: %s", l)
	}

	// The goals.
	if unexpected != 0 {
		t.Errorf("%d unexpected reconnects, want 0", unexpected)
	}
	if lostRec != 0 || dupRec != 0 || q1Lost != 0 || q1Dup != 0 || q0Lost != 0 || up.uaDup != 0 {
		t.Errorf("lost or doubled upstream: records %d/%d, QoS 1 %d/%d, QoS 0 lost %d, OPC UA doubled %d", lostRec, dupRec, q1Lost, q1Dup, q0Lost, up.uaDup)
	}
	if badOut != 0 {
		t.Errorf("%d Bad samples outside the restart windows, want 0", badOut)
	}
	if len(outside) != 0 {
		t.Errorf("%d warnings or errors outside the restart windows, want 0", len(outside))
	}
	if grEnd > grStart+20 {
		t.Errorf("goroutines grew from %.0f to %.0f", grStart, grEnd)
	}
	if judged && !flat {
		t.Errorf("RSS not flat after the warm-up: %s", verdict)
	}
	if rssEnd > rssStart*1.5 && rssEnd-rssStart > 32<<20 {
		t.Errorf("RSS grew from %.1f to %.1f MiB", rssStart/(1<<20), rssEnd/(1<<20))
	}
}

// uaPKI is the node-opcua servers' shared PKI folder (testpeer's default).
func uaPKI(t *testing.T) string {
	dir, _ := testpeer.NodeOPCUADir(t)
	return filepath.Join(dir, "pki")
}

func deviceNames() []string {
	out := []string{"ua_quiet", "ua_sub", "ua_poll", "ua_secure", "mqtt_q1", "mqtt_q0"}
	for u := 1; u <= units; u++ {
		out = append(out, fmt.Sprintf("unit%d", u))
	}
	return out
}

// ferryConfig is the gateway of the soak: defaults wherever a field
// engineer would leave them (timeouts, keep-alives), info logs in text.
func ferryConfig(data, uaEndpoint, mbAddr, mqAddr, natsAddr string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `gateway: {id: %s, site: field}
data_dir: %s
log: {level: info, format: text}
http: {listen: "127.0.0.1:0", pprof: true}
devices:
`, gateway, data)
	uaPoints := ""
	for _, n := range uaNodes {
		uaPoints += fmt.Sprintf("      - {name: %s, node: \"nsu=%s;s=%s\"}\n", strings.ToLower(n.Name), uaNS, n.Name)
	}
	quiet := ""
	for _, n := range uaNodes {
		if n.Every == 0 {
			quiet += fmt.Sprintf("      - {name: %s, node: \"nsu=%s;s=%s\"}\n", strings.ToLower(n.Name), uaNS, n.Name)
		}
	}
	// ua_quiet is issue 27's device: subscribed, interval 500ms, default
	// timeouts, and only values that never change, so that the server
	// sends nothing but keep-alives.
	fmt.Fprintf(&b, `  - name: ua_quiet
    opcua: {endpoint: "%s", security_policy: None, allow_insecure: true, mode: subscribe, interval: 500ms}
    points:
%s`, uaEndpoint, quiet)
	fmt.Fprintf(&b, `  - name: ua_sub
    opcua: {endpoint: "%s", security_policy: None, allow_insecure: true, mode: subscribe, interval: 500ms}
    points:
%s  - name: ua_secure
    opcua: {endpoint: "%s", security_policy: Basic256Sha256, security_mode: SignAndEncrypt, mode: subscribe, interval: 1s}
    points:
%s  - name: ua_poll
    opcua: {endpoint: "%s", security_policy: None, allow_insecure: true, mode: poll, interval: 1s}
    points:
%s`, uaEndpoint, uaPoints, uaEndpoint, uaPoints, uaEndpoint, uaPoints)
	for u := 1; u <= units; u++ {
		fmt.Fprintf(&b, `  - name: unit%d
    modbus: {url: "tcp://%s", unit: %d, interval: 1s}
    points:
      - {name: id, table: holding, address: 0, type: uint16}
      - {name: counter, table: holding, address: 1, type: uint16}
      - {name: temp, table: holding, address: 2, type: float32}
`, u, mbAddr, u)
	}
	for _, q := range []int{1, 0} {
		fmt.Fprintf(&b, `  - name: mqtt_q%d
    mqtt: {broker: "tcp://%s", topic: soak/q%d, qos: %d, format: json, client_id: ferry-soak-q%d}
    points:
      - {name: seq, path: seq}
`, q, mqAddr, q, q, q)
	}
	fmt.Fprintf(&b, `uplink:
  nats: {urls: ["nats://%s"], stream: %s, create_stream: true}
`, natsAddr, stream)
	return b.String()
}

var httpListening = regexp.MustCompile(`msg="http listening" [^\n]*?addr=(\S+) scheme=(\w+)`)

func httpBase(t *testing.T, f *testpeer.Proc) string {
	t.Helper()
	var base string
	testutil.Eventually(t, 60*time.Second, "ferry's http listener", func() error {
		m := httpListening.FindStringSubmatch(f.RunLog())
		if m == nil {
			if !f.Running() {
				t.Fatalf("ferry exited:\n%s", testpeer.Tail(f.Log(), 40))
			}
			return fmt.Errorf(`no "http listening" line in ferry's log`)
		}
		base = m[2] + "://" + m[1]
		return nil
	})
	return base
}

func metrics(base string) (testpeer.Metrics, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return testpeer.ParseMetrics(b.String())
}

// waitConnected waits until every device in names reports connected.
func waitConnected(t *testing.T, base string, names []string, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, "devices connected", func() error {
		m, err := metrics(base)
		if err != nil {
			return err
		}
		var not []string
		for _, d := range names {
			if v, ok := m.Find("ferry_device_connected", "device="+d); !ok || v != 1 {
				not = append(not, d)
			}
		}
		if len(not) > 0 {
			return fmt.Errorf("not connected: %v", not)
		}
		return nil
	})
}

func waitUplink(t *testing.T, base string, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, "uplink connected", func() error {
		st, err := status(base)
		if err != nil {
			return err
		}
		if st.Uplink != "connected" {
			return fmt.Errorf("uplink %q", st.Uplink)
		}
		return nil
	})
}

type ferryStatus struct {
	Buffer struct {
		Lanes []struct {
			Records  int `json:"records"`
			InFlight int `json:"in_flight"`
		} `json:"lanes"`
	} `json:"buffer"`
	Uplink string `json:"uplink"`
}

func status(base string) (*ferryStatus, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(base + "/api/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st ferryStatus
	return &st, json.NewDecoder(resp.Body).Decode(&st)
}

func waitDrained(t *testing.T, base string, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, "the buffer drained", func() error {
		st, err := status(base)
		if err != nil {
			return err
		}
		n := 0
		for _, l := range st.Buffer.Lanes {
			n += l.Records + l.InFlight
		}
		if st.Uplink != "connected" || n != 0 {
			return fmt.Errorf("uplink %q, %d records buffered", st.Uplink, n)
		}
		return nil
	})
}

func goroutines(t *testing.T, base string) float64 {
	m, err := metrics(base)
	if err != nil {
		t.Logf("scrape: %v", err)
		return math.NaN()
	}
	return m.Sum("go_goroutines")
}

func rssBytes(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb * 1024
		}
	}
	return 0
}

// upstream is what the stream holds.
type upstream struct {
	ids     map[string]int
	seqs    map[string]map[int]int // device -> seq -> times (MQTT)
	samples int
	bad     []badSample
	uaDup   int
	uaSeen  map[string]bool
}

type badSample struct {
	device, point, reason string
	at                    time.Time
}

func readUpstream(t *testing.T, url string) *upstream {
	t.Helper()
	up := &upstream{ids: map[string]int{}, seqs: map[string]map[int]int{}, uaSeen: map[string]bool{}}
	testpeer.ReadStream(t, url, stream, func(m jetstream.Msg) {
		all, err := uplink.DecodeAll(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			t.Fatalf("message on %s does not decode: %v", m.Subject(), err)
		}
		for _, msg := range all {
			if msg.ID != "" {
				up.ids[msg.ID]++
			}
			if msg.Telemetry == nil {
				continue
			}
			dev := msg.Telemetry.Device
			for _, sc := range msg.Telemetry.Scans {
				for _, p := range sc.Points {
					up.samples++
					if p.Quality == ferry.Bad {
						up.bad = append(up.bad, badSample{device: dev, point: p.Name, reason: p.Reason, at: p.Time})
						continue
					}
					if p.Quality != ferry.Good {
						continue
					}
					if strings.HasPrefix(dev, "mqtt_") && p.Name == "seq" {
						if up.seqs[dev] == nil {
							up.seqs[dev] = map[int]int{}
						}
						up.seqs[dev][int(p.Value.Float64())]++
					}
					if dev == "ua_quiet" || dev == "ua_sub" || dev == "ua_secure" {
						// A notification carries the value's source time:
						// the same value and source time twice is a sample
						// delivered twice.
						k := fmt.Sprintf("%s|%s|%s|%v", dev, p.Name, p.Time.Format(time.RFC3339Nano), p.Value)
						if up.uaSeen[k] {
							up.uaDup++
							if up.uaDup <= 10 {
								t.Logf("OPC UA sample twice: %s", k)
							}
						}
						up.uaSeen[k] = true
					}
				}
			}
		}
	})
	return up
}

// recordGaps counts record ids missing inside each lane's range and ids
// stored more than once.
func (u *upstream) recordGaps(t *testing.T) (lost, doubled int) {
	byLane := map[string]map[uint64]bool{}
	for id, n := range u.ids {
		if n > 1 {
			doubled += n - 1
			t.Logf("record %s upstream %d times", id, n)
		}
		rest, ok := strings.CutPrefix(id, gateway+"-")
		if !ok {
			continue
		}
		lane, seqs, ok := strings.Cut(rest, "-")
		if !ok {
			continue
		}
		seqs, _, _ = strings.Cut(seqs, "-p") // a record cut in parts
		seq, err := strconv.ParseUint(seqs, 10, 64)
		if err != nil {
			continue
		}
		if byLane[lane] == nil {
			byLane[lane] = map[uint64]bool{}
		}
		byLane[lane][seq] = true
	}
	for lane, seqs := range byLane {
		var lo, hi uint64 = math.MaxUint64, 0
		for s := range seqs {
			lo, hi = min(lo, s), max(hi, s)
		}
		for s := lo; s <= hi; s++ {
			if !seqs[s] {
				lost++
				if lost <= 10 {
					t.Logf("lane %s: record %d missing upstream", lane, s)
				}
			}
		}
	}
	return lost, doubled
}

// seqCheck counts the sent seqs not upstream (except those sent inside
// skip) and the seqs upstream more than once.
func seqCheck(got map[int]int, sent []sentMsg, skip []window) (lost, doubled int) {
	for _, s := range sent {
		in := false
		for _, w := range skip {
			if !s.at.Before(w.stopAt.Add(-time.Second)) && !s.at.After(w.connected.Add(settle)) {
				in = true
			}
		}
		if got[s.seq] == 0 && !in {
			lost++
		}
	}
	for _, n := range got {
		if n > 1 {
			doubled += n - 1
		}
	}
	return lost, doubled
}

func windowsOf(ws []window, peer string) []window {
	var out []window
	for _, w := range ws {
		if w.peer == peer {
			out = append(out, w)
		}
	}
	return out
}

// logLine is one line of ferry's text log.
type logLine struct {
	line  string
	at    time.Time
	level string
	msg   string
	attrs map[string]string
}

var (
	logHead = regexp.MustCompile(`^time=(\S+) level=(\S+) msg=("(?:[^"\\]|\\.)*"|\S+)`)
	logAttr = regexp.MustCompile(` ([a-z_.]+)=("(?:[^"\\]|\\.)*"|\S+)`)
)

func parseLog(s string) []logLine {
	var out []logLine
	for _, l := range strings.Split(s, "\n") {
		m := logHead.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		at, _ := time.Parse(time.RFC3339Nano, m[1])
		msg := m[3]
		if u, err := strconv.Unquote(msg); err == nil {
			msg = u
		}
		ll := logLine{line: l, at: at, level: m[2], msg: msg, attrs: map[string]string{}}
		for _, a := range logAttr.FindAllStringSubmatch(l[len(m[0]):], -1) {
			v := a[2]
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
			ll.attrs[a[1]] = v
		}
		out = append(out, ll)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}
