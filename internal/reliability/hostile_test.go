package reliability

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry/internal/plantsim"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// fakeSlave is a Modbus TCP peer that answers read requests wrongly, in
// one of its modes. No real server can send these frames.
type fakeSlave struct {
	mode    string
	l       net.Listener
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
	answers int
}

func startFakeSlave(t *testing.T, mode string, late time.Duration) *fakeSlave {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeSlave{mode: mode, l: l}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				s.serve(c, late)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *fakeSlave) serve(c net.Conn, late time.Duration) {
	hdr := make([]byte, 7)
	for n := 0; ; n++ {
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		ln := int(binary.BigEndian.Uint16(hdr[4:6]))
		if ln < 2 || ln > 260 {
			return
		}
		pdu := make([]byte, ln-1)
		if _, err := io.ReadFull(c, pdu); err != nil {
			return
		}
		tx := binary.BigEndian.Uint16(hdr[0:2])
		fc := pdu[0]
		qty := 1
		if len(pdu) >= 5 {
			qty = int(binary.BigEndian.Uint16(pdu[3:5]))
		}
		body := []byte{fc, byte(2 * qty)}
		for i := 0; i < qty; i++ {
			body = append(body, 0x12, byte(i))
		}
		switch s.mode {
		case "wrong length":
			// Alternately: a length field shorter than the PDU (the rest
			// pollutes the stream), a byte count that disagrees with the
			// data, and a length field beyond what follows.
			switch n % 3 {
			case 0:
				c.Write(frame(tx, hdr[6], body, -3))
			case 1:
				body[1] += 6
				c.Write(frame(tx, hdr[6], body, 0))
			case 2:
				c.Write(frame(tx, hdr[6], body, 40))
			}
		case "transaction id mismatch":
			c.Write(frame(tx+1+uint16(n%5), hdr[6], body, 0))
		case "exception storm":
			c.Write(frame(tx, hdr[6], []byte{fc | 0x80, byte(1 + n%11)}, 0))
		case "late answer":
			time.Sleep(late) // the late answer is the hostile behaviour: not a wait
			c.Write(frame(tx, hdr[6], body, 0))
		case "garbage":
			junk := make([]byte, 1+n%64)
			for i := range junk {
				junk[i] = byte(n*31 + i*7)
			}
			c.Write(junk)
			if n%4 == 3 {
				return // and hang up
			}
		}
		s.mu.Lock()
		s.answers++
		s.mu.Unlock()
	}
}

// frame builds an MBAP frame; skew is added to the length field.
func frame(tx uint16, unit byte, pdu []byte, skew int) []byte {
	b := make([]byte, 7, 7+len(pdu))
	binary.BigEndian.PutUint16(b[0:2], tx)
	binary.BigEndian.PutUint16(b[4:6], uint16(len(pdu)+1+skew))
	b[6] = unit
	return append(b, pdu...)
}

// startStatusServer starts a gopcua server whose nodes answer with the
// given status codes.
func startStatusServer(t *testing.T, codes map[string]ua.StatusCode) string {
	t.Helper()
	srv := testpeer.OPCUAServer(t, testpeer.UANone(), testpeer.UAName("hostile status codes"), testpeer.UANamespace("urn:ferry:reliability"))
	for name, code := range codes {
		srv.AddFunc(name, func() *ua.DataValue { return testpeer.StatusValue(42.5, code) })
	}
	return srv.Endpoint()
}

// TestHostileInput runs ferry against peers that send what real devices
// should not: broken Modbus frames, poisonous MQTT payloads, OPC UA Bad
// and Uncertain status codes. Each must become Bad (or Uncertain) samples
// and counters, never a crash; the healthy press beside them keeps its
// Good samples.
func TestHostileInput(t *testing.T) {
	needProfile(t)
	plant := startPlant(t, plantsim.Options{Presses: 1, Rate: 100 * time.Millisecond})
	modes := []string{"wrong length", "transaction id mismatch", "exception storm", "late answer", "garbage"}
	const timeout = 300 * time.Millisecond
	var devs strings.Builder
	slaves := map[string]*fakeSlave{}
	for i, mode := range modes {
		s := startFakeSlave(t, mode, timeout+400*time.Millisecond)
		name := fmt.Sprintf("mb%d", i)
		slaves[name] = s
		fmt.Fprintf(&devs, `  - name: %s
    description: fake slave, %s
    modbus: {url: "tcp://%s", unit: 1, interval: 200ms, timeout: %v}
    points:
      - {name: a, table: holding, address: 0, type: uint16}
      - {name: b, table: holding, address: 1, type: float32}
`, name, mode, s.l.Addr(), timeout)
	}
	uaURL := startStatusServer(t, map[string]ua.StatusCode{
		"Bad.Sensor":      ua.StatusBadSensorFailure,
		"Bad.Comm":        ua.StatusBadCommunicationError,
		"Uncertain.Last":  ua.StatusUncertainLastUsableValue,
		"Uncertain.Other": ua.StatusUncertainSensorNotAccurate,
		"Good.Value":      ua.StatusOK,
	})
	fmt.Fprintf(&devs, `  - name: uadev
    opcua: {endpoint: "%s", security_policy: None, allow_insecure: true, mode: poll, interval: 200ms}
    points:
      - {name: bad_sensor, node: "nsu=urn:ferry:reliability;s=Bad.Sensor"}
      - {name: bad_comm, node: "nsu=urn:ferry:reliability;s=Bad.Comm"}
      - {name: uncertain_last, node: "nsu=urn:ferry:reliability;s=Uncertain.Last"}
      - {name: uncertain_other, node: "nsu=urn:ferry:reliability;s=Uncertain.Other"}
      - {name: good, node: "nsu=urn:ferry:reliability;s=Good.Value"}
      - {name: unknown, node: "nsu=urn:ferry:reliability;s=No.Such.Node"}
  - name: hjson
    mqtt: {broker: "tcp://%[2]s", topic: "hostile/json", qos: 1, format: json}
    points:
      - {name: a, path: a}
      - {name: b, path: "x.y[2]", type: float}
  - name: hval
    mqtt: {broker: "tcp://%[2]s", topic: "hostile/value", qos: 1, format: value}
    points:
      - {name: v, type: float}
  - name: hspb
    mqtt: {broker: "tcp://%[2]s", qos: 1, format: sparkplug_b, sparkplug: {group_id: g, edge_node: n}}
    points:
      - {name: p, metric: Pressure}
`, uaURL, plant.MQTT.Addr)

	dir := t.TempDir()
	cfg := writeConfig(t, dir, cfgOpts{Gateway: "hostile", DataDir: filepath.Join(dir, "data"), Plant: plant,
		Interval: "200ms", NoOPCUA: true, NoMQTT: true, Devices: devs.String(), Rules: "  - {name: quality, point: press1.oil_temp, stale: 5s}\n"})
	f := newProc(t, cfg)
	f.Start()
	if err := f.WaitUp(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(30*time.Second, func() error {
		m, err := f.Metrics()
		if err != nil {
			return err
		}
		// (a Sparkplug device counts as connected from its node's BIRTH on)
		for _, d := range []string{"hjson", "hval"} {
			if m.Sum("ferry_device_connected", "device="+d) != 1 {
				return fmt.Errorf("%s not connected", d)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Poison on MQTT: each payload, then a good one.
	huge := make([]byte, 2<<20)
	for i := range huge {
		huge[i] = 'x'
	}
	deep := strings.Repeat("[", 200000) + strings.Repeat("]", 200000)
	payloads := []struct{ topic, payload string }{
		{"hostile/json", `{"a":`},
		{"hostile/json", "\xff\xfe\x00garbage"},
		{"hostile/json", `{"a": {"nested": true}, "x": {"y": "nope"}}`},
		{"hostile/json", `{"a": null}`},
		{"hostile/json", deep},
		{"hostile/json", `{"a":` + string(huge) + `}`},
		{"hostile/json", `{"a": 1e999999}`},
		{"hostile/json", strings.Repeat(`{"a":1,`, 50000)},
		{"hostile/value", ""},
		{"hostile/value", "\xff\xff"},
		{"hostile/value", string(huge)},
		{"spBv1.0/g/NDATA/n", "\x0a\xff\xff\xff\xff\x0f"},
		{"spBv1.0/g/NBIRTH/n", "\x12\x05\x0a\x03Pre"},
		{"spBv1.0/g/NDATA/n", string(huge[:1000])},
		{"spBv1.0/g/DDATA/n/d", "\x08\x01\x12\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"},
		{"hostile/json", `{"a": 1, "x": {"y": [0, 1, 2.5]}}`},
		{"hostile/value", "21.5"},
	}
	for _, p := range payloads {
		if err := plant.MQTT.Publish(p.topic, []byte(p.payload), 1); err != nil {
			t.Errorf("publish %s: %v", p.topic, err)
		}
		time.Sleep(20 * time.Millisecond) // paces the hostile publisher: not a wait
	}

	type want struct {
		what   string
		metric string
		labels []string
	}
	wants := []want{
		{"Modbus wrong length → bad frames", "ferry_modbus_requests_total", []string{"link=mb0", "result=bad_frame"}},
		{"Modbus transaction id mismatch → bad frames or timeouts", "ferry_device_errors_total", []string{"device=mb1"}},
		{"Modbus exception storm → exceptions", "ferry_modbus_requests_total", []string{"link=mb2", "result=exception"}},
		{"Modbus late answer → timeouts", "ferry_modbus_requests_total", []string{"link=mb3", "result=timeout"}},
		{"Modbus garbage → errors", "ferry_device_errors_total", []string{"device=mb4"}},
		{"MQTT invalid JSON", "ferry_mqtt_payload_errors_total", []string{"device=hjson", "reason=not_json"}},
		{"MQTT huge payload", "ferry_mqtt_payload_errors_total", []string{"device=hjson", "reason=too_large"}},
		{"MQTT wrong type", "ferry_mqtt_payload_errors_total", []string{"device=hjson", "reason=wrong_type"}},
		{"MQTT bad value payload", "ferry_mqtt_payload_errors_total", []string{"device=hval"}},
		{"MQTT bad Sparkplug", "ferry_mqtt_payload_errors_total", []string{"device=hspb", "reason=bad_protobuf"}},
		{"MQTT good message after the poison", "ferry_mqtt_messages_total", []string{"device=hjson", "result=ok"}},
		{"OPC UA Bad status → Bad points", "ferry_device_points", []string{"device=uadev", "quality=bad"}},
		{"OPC UA Uncertain status → Uncertain points", "ferry_device_points", []string{"device=uadev", "quality=uncertain"}},
		{"the healthy press keeps Good points", "ferry_device_points", []string{"device=press1", "quality=good"}},
	}
	var last testpeer.Metrics
	if err := waitFor(60*time.Second, func() error {
		m, err := f.Metrics()
		if err != nil {
			return err
		}
		last = m
		var missing []string
		for _, w := range wants {
			if m.Sum(w.metric, w.labels...) == 0 {
				missing = append(missing, w.what)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("not seen yet: %s", strings.Join(missing, "; "))
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	// Keep it under fire a while longer: the process must stay healthy.
	// The length of the exposure is what is tested, not a wait.
	time.Sleep(pick(5*time.Second, 30*time.Second))
	if !f.Running() {
		t.Fatalf("ferry died under hostile input:\n%s", tail(f.Log(), 40))
	}
	if code, _, err := f.Get("/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz: %d %v", code, err)
	}
	m, err := f.Metrics()
	if err == nil {
		last = m
	}
	// Exactly: 3 Bad (two Bad status codes, one unknown node), 2
	// Uncertain, 1 Good.
	for q, want := range map[string]float64{"bad": 3, "uncertain": 2, "good": 1} {
		if n := last.Sum("ferry_device_points", "device=uadev", "quality="+q); n != want {
			t.Errorf("uadev has %v %s points, want %v", n, q, want)
		}
	}
	if !strings.Contains(f.Log(), "reason=BadNodeIdUnknown") {
		t.Error("the log does not name the unknown node's BadNodeIdUnknown")
	}
	if err := f.Stop(30 * time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}
	var figs []string
	for _, w := range wants {
		figs = append(figs, fmt.Sprintf("%s %.0f", w.what, last.Sum(w.metric, w.labels...)))
	}
	result(t, "hostile input (Modbus frames, MQTT payloads, OPC UA status codes)", strings.Join(figs, "; ")+"; crashes 0, /healthz ok throughout")
}

// TestHostileConfig: hostile configuration files are refused quickly by
// `ferry validate` with a clear error (never a panic or a hang), and the
// same files sent to a running ferry by SIGHUP leave it running on its
// configuration.
func TestHostileConfig(t *testing.T) {
	needProfile(t)
	dir := t.TempDir()
	files := map[string]string{
		"unknown key":  "gateway: {id: gw}\ndata_dir: /tmp/x\nbufer: {max_size: 1GiB}\n",
		"wrong types":  "gateway: {id: [1, 2]}\ndata_dir: 42\nbuffer: {max_size: lots}\nhttp: {listen: {a: b}}\n",
		"alias bomb":   testutil.AliasBombYAML(),
		"deep nesting": "gateway: {id: " + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "}\ndata_dir: /tmp/x\n",
		"huge file":    "gateway: {id: gw}\ndata_dir: /tmp/x\n" + strings.Repeat("# padding padding padding padding padding padding padding\n", 100000),
		"binary junk":  "\x00\x01\x02\xff\xfe{{{{[[[[::::",
		"tabs and dup": "gateway:\n\tid: gw\ngateway: {id: b}\n",
	}
	// Alternatives are split by "|". The alias bomb's devices pass the
	// configuration's points bound (internal/config/limits.go) before its
	// aliases expand far enough to be named one: either is a named limit.
	want := map[string]string{
		"unknown key":  `unknown field "bufer"`,
		"wrong types":  "ferry.yaml:",
		"alias bomb":   "alias bomb|it holds at most 100000 points",
		"deep nesting": "ferry.yaml",
		"huge file":    "larger than",
		"binary junk":  "ferry.yaml",
		"tabs and dup": "ferry.yaml",
	}
	var figs []string
	for name, body := range files {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"), "ferry.yaml")
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		out, err := runFerry(t, 30*time.Second, "validate", path)
		took := time.Since(start)
		var ee interface{ ExitCode() int }
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("%s: ferry validate: %v (want exit status 1)\n%s", name, err, tail(out, 5))
		}
		if crashMarks.MatchString(out) {
			t.Errorf("%s: ferry validate crashed:\n%s", name, tail(out, 20))
		}
		if !slices.ContainsFunc(strings.Split(want[name], "|"), func(w string) bool {
			return strings.Contains(strings.ToLower(out), strings.ToLower(w))
		}) {
			t.Errorf("%s: the error does not say %q:\n%s", name, want[name], tail(out, 5))
		}
		figs = append(figs, fmt.Sprintf("%s refused in %v", name, took.Round(time.Millisecond)))
		t.Logf("%s (%v): %s", name, took.Round(time.Millisecond), firstLine(out))
	}

	// A running ferry keeps its configuration when a reload brings these.
	plant := startPlant(t, plantsim.Options{Presses: 1})
	cdir := t.TempDir()
	cfg := writeConfig(t, cdir, cfgOpts{Gateway: "reload", DataDir: filepath.Join(cdir, "data"), Plant: plant, NoOPCUA: true, NoMQTT: true})
	good, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := newProc(t, cfg)
	f.Start()
	if err := f.WaitUp(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	refused := 0
	for name, body := range files {
		if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(f.Pid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if err := waitFor(30*time.Second, func() error {
			if n := strings.Count(f.RunLog(), "reload refused"); n <= refused {
				return errors.New("no 'reload refused' in the log")
			}
			return nil
		}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		refused = strings.Count(f.RunLog(), "reload refused")
		if code, _, err := f.Get("/healthz"); err != nil || code != 200 {
			t.Errorf("%s: after the reload /healthz %d %v", name, code, err)
		}
	}
	if err := os.WriteFile(cfg, good, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := f.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if m.Sum("ferry_device_connected", "device=press1") != 1 {
		t.Error("press1 not connected after the refused reloads")
	}
	if err := f.Stop(30 * time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}
	result(t, "hostile configuration", fmt.Sprintf("%d files refused by ferry validate with exit 1 and file:line:col or a named limit (%s); %d SIGHUP reloads of them refused, ferry kept running its configuration",
		len(files), strings.Join(figs, ", "), refused))
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
