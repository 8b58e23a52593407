package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/plantsim"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink"
)

// The interop test runs the real ferry binary against independent
// implementations from Debian's packages instead of the Go peers every
// other test uses: Mosquitto 2.0 (broker for an MQTT device and the alert
// sink), pymodbus 3.0 (a Modbus TCP server, scripts/interop/modbus_server.py)
// and Debian's nats-server 2.9 (JetStream, older than the library ferry is
// tested with). It restarts Mosquitto and nats-server while data flows and
// checks that every message is upstream exactly once. It needs the
// packages, so it runs only with FERRY_INTEROP=1: make interop installs
// them and runs it.

func TestInterop(t *testing.T) {
	if os.Getenv("FERRY_INTEROP") != "1" {
		t.Skip("interop with Debian's mosquitto, nats-server and pymodbus: run `make interop` (installs them, sets FERRY_INTEROP=1)")
	}
	tools := interopTools(t)
	bin := buildFerry(t)
	dir := t.TempDir()

	// pymodbus: known values and a counter.
	// The script takes a port number: for this external program only, a
	// port is picked for it (it cannot bind port 0 and report the port).
	mbAddr := testutil.FreeAddr(t)
	_, mbPort, _ := net.SplitHostPort(mbAddr)
	_, self, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(self), "..", "..", "scripts", "interop", "modbus_server.py")
	testpeer.Child(t, tools["python3"], script, mbPort)
	waitListening(t, mbAddr)

	// Mosquitto with persistence, so that ferry's QoS 1 session and the
	// messages queued in it survive a restart.
	mqDir := filepath.Join(dir, "mosquitto") + "/"
	if err := os.MkdirAll(mqDir, 0o700); err != nil {
		t.Fatal(err)
	}
	mqAddr, mosquitto, _ := startMosquitto(t, tools["mosquitto"], dir, fmt.Sprintf("persistence true\npersistence_location %s\nmax_queued_messages 100000\n", mqDir))
	_, mqPort, _ := net.SplitHostPort(mqAddr)

	// Debian's nats-server with JetStream on a store that outlives a
	// restart, and the stream ferry forwards to, as a plant's IT would set
	// it up.
	natsURL, natsSrv := startNATSServer(t, tools["nats-server"], dir)
	nsAddr := strings.TrimPrefix(natsURL, "nats://")
	_, nsPort, _ := net.SplitHostPort(nsAddr)
	createInteropStream(t, natsURL)

	// The alert sink's topic, watched by Mosquitto's own client.
	alertSub := testpeer.Child(t, tools["mosquitto_sub"], "-h", "127.0.0.1", "-p", mqPort, "-q", "1", "-v", "-t", "ferry/alerts/#", "-i", "interop-test-watch")

	dataDir := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "ferry.yaml")
	testutil.WriteFile(t, cfg, fmt.Sprintf(`gateway: {id: interop, site: test}
data_dir: %s
log: {level: debug}
http: {listen: "127.0.0.1:0"}
devices:
  - name: plc
    modbus: {url: "tcp://%s", unit: 1, interval: 250ms, timeout: 1s}
    points:
      - {name: temp_abcd, table: holding, address: 0, type: float32}
      - {name: temp_cdab, table: holding, address: 2, type: float32, word_order: low_first}
      - {name: offset, table: holding, address: 4, type: int16}
      - {name: total, table: holding, address: 6, type: uint32}
      - {name: counter, table: holding, address: 10, type: uint16}
      - {name: running, table: coil, address: 0}
      - {name: fault, table: coil, address: 1}
  - name: env
    mqtt: {broker: "tcp://%s", topic: "interop/env", qos: 1, format: json, client_id: ferry-interop, keepalive: 5s, connect_timeout: 2s}
    points:
      - {name: seq, path: seq}
      - {name: temperature, path: temp}
rules:
  - {name: counter_high, when: "plc.counter >= 3", severity: warning}
alerts:
  log: {enabled: true}
  mqtt: {broker: "tcp://%s", topic: ferry/alerts}
uplink:
  nats: {urls: ["%s"], stream: %s, reconnect_max: 500ms, connect_timeout: 1s}
`, dataDir, mbAddr, mqAddr, mqAddr, natsURL, plantsim.StreamName))

	f := startFerry(t, bin, cfg)
	base := httpBase(t, f)
	waitReady(t, base)

	// MQTT messages at QoS 1, each with its sequence number, published by
	// Mosquitto's own client throughout, across both restarts.
	pub := &publisher{bin: tools["mosquitto_pub"], port: mqPort, topic: "interop/env"}
	pubCtx, stopPub := context.WithCancel(context.Background())
	pubDone := make(chan struct{})
	go func() { defer close(pubDone); pub.run(pubCtx) }()
	t.Cleanup(func() { stopPub(); <-pubDone })

	// Modbus values: right values and types in both word orders.
	want := map[string]struct {
		kind  ferry.Kind
		value float64
	}{
		"plc.temp_abcd": {ferry.KindFloat, 21.5},
		"plc.temp_cdab": {ferry.KindFloat, 21.5},
		"plc.offset":    {ferry.KindInt, -1234},
		"plc.total":     {ferry.KindInt, 3000000000},
		"plc.running":   {ferry.KindBool, 1},
		"plc.fault":     {ferry.KindBool, 0},
	}
	var up *upstream
	eventually(t, 60*time.Second, "the pymodbus values upstream", func() error {
		up = readUpstream(t, natsURL)
		for key, w := range want {
			p, ok := up.last[key]
			if !ok {
				return fmt.Errorf("no sample of %s yet", key)
			}
			if p.Quality != ferry.Good {
				return fmt.Errorf("%s is %v (%s)", key, p.Quality, p.Reason)
			}
			kind := p.Value.Kind()
			if kind == ferry.KindUint {
				kind = ferry.KindInt // JSON has one kind of integer
			}
			if kind != w.kind {
				return fmt.Errorf("%s is a %v, want %v", key, kind, w.kind)
			}
			got := p.Value.Float64()
			if kind == ferry.KindBool {
				got = 0
				if p.Value.Bool() {
					got = 1
				}
			}
			if got != w.value {
				return fmt.Errorf("%s = %v, want %v", key, p.Value, w.value)
			}
		}
		if c := up.last["plc.counter"]; c.Quality != ferry.Good || c.Value.Float64() < 3 {
			return fmt.Errorf("plc.counter = %+v, want a Good value of 3 or more", c)
		}
		return nil
	})
	t.Logf("pymodbus: %d messages upstream; temp_abcd %v, temp_cdab %v, offset %v, total %v, counter %v",
		up.msgs, up.last["plc.temp_abcd"].Value, up.last["plc.temp_cdab"].Value, up.last["plc.offset"].Value, up.last["plc.total"].Value, up.last["plc.counter"].Value)

	// The counter trips the rule: the alert reaches Mosquitto (the
	// transition and the retained active topic) and the stream.
	eventually(t, 30*time.Second, "counter_high on mosquitto", func() error {
		out := alertSub.RunLog()
		for _, line := range strings.Split(out, "\n") {
			topic, body, _ := strings.Cut(line, " ")
			if topic != "ferry/alerts" {
				continue
			}
			var a struct{ Rule, State, Device, Point string }
			if err := json.Unmarshal([]byte(body), &a); err != nil {
				return fmt.Errorf("alert %q: %v", body, err)
			}
			if a.Rule == "counter_high" && a.State == "raised" && a.Device == "plc" && a.Point == "counter" {
				return nil
			}
		}
		return fmt.Errorf("mosquitto_sub got %q", out)
	})
	eventually(t, 30*time.Second, "counter_high in the stream", func() error {
		up = readUpstream(t, natsURL)
		for _, a := range up.alerts {
			if a.Rule == "counter_high" && a.State == "raised" {
				if a.Device != "plc" || a.Severity != "warning" || a.Value.Float64() < 3 {
					return fmt.Errorf("alert %+v", a)
				}
				return nil
			}
		}
		return errors.New("no counter_high alert upstream")
	})

	// MQTT messages flow before the restarts.
	eventually(t, 30*time.Second, "MQTT messages upstream", func() error {
		if n := len(upstreamSeqs(t, natsURL)); n < 5 {
			return fmt.Errorf("%d MQTT messages upstream (%d acknowledged by mosquitto)", n, pub.ackedCount())
		}
		return nil
	})

	// Mosquitto restarts while messages keep coming: what it acknowledged
	// before and after is delivered to ferry from its persistent session.
	acked, tried := pub.ackedCount(), pub.triedCount()
	stopPeer(t, mosquitto, syscall.SIGTERM)
	if _, err := os.Stat(filepath.Join(mqDir, "mosquitto.db")); err != nil {
		t.Fatalf("mosquitto saved no session database: %v", err)
	}
	// Publishes fail meanwhile; they are not counted.
	eventually(t, 30*time.Second, "publishes tried while mosquitto is down", func() error {
		if n := pub.triedCount() - tried; n < 5 {
			return fmt.Errorf("%d tried", n)
		}
		return nil
	})
	mosquitto.Start() // the same configuration: the same port and database
	waitListening(t, mqAddr)
	eventually(t, 30*time.Second, "ferry's session resumed on the restarted mosquitto", func() error {
		// The driver logs whether the broker kept its session: without it
		// the messages queued for ferry meanwhile would be gone.
		if !strings.Contains(f.Log(), "session_present=true") {
			return errors.New("no session_present=true in ferry's log")
		}
		return nil
	})
	eventually(t, 30*time.Second, "publishing after the mosquitto restart", func() error {
		if n := pub.ackedCount(); n < acked+10 {
			return fmt.Errorf("%d messages acknowledged since the restart", n-acked)
		}
		return nil
	})

	// nats-server stops and comes back on the same store: ferry keeps the
	// samples in its buffer meanwhile and sends them after.
	stopPeer(t, natsSrv, syscall.SIGTERM)
	waitBacklog(t, base, 10)
	// Back on the port ferry knows (a restart of an external server on
	// its own port: the one port reuse this test cannot avoid).
	testpeer.Child(t, tools["nats-server"], "-js", "-sd", filepath.Join(dir, "nats"), "-a", "127.0.0.1", "-p", nsPort)
	waitListening(t, nsAddr)
	waitReady(t, base)
	eventually(t, 30*time.Second, "publishing after the nats-server restart", func() error {
		if n := pub.ackedCount(); n < acked+20 {
			return fmt.Errorf("%d messages acknowledged since the mosquitto restart", n-acked)
		}
		return nil
	})

	// Every message mosquitto acknowledged is upstream exactly once.
	stopPub()
	<-pubDone
	ackedSeqs, tried := pub.result()
	t.Logf("mosquitto_pub: %d messages tried, %d acknowledged at QoS 1", tried, len(ackedSeqs))
	eventually(t, 60*time.Second, "every acknowledged MQTT message upstream", func() error {
		got := upstreamSeqs(t, natsURL)
		var missing []int
		for _, s := range ackedSeqs {
			if got[s] == 0 {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d of %d acknowledged messages not upstream, first %v", len(missing), len(ackedSeqs), missing[:min(len(missing), 10)])
		}
		return nil
	})
	waitDrained(t, base)
	stopFerry(t, f)

	up = readUpstream(t, natsURL)
	up.checkContiguous(t, "interop") // every record id exactly once, no gap
	got := upstreamSeqs(t, natsURL)
	for s, n := range got {
		if n != 1 {
			t.Errorf("MQTT message seq %d is upstream %d times", s, n)
		}
		if s < 0 || s >= tried {
			t.Errorf("MQTT message seq %d was never published", s)
		}
	}
	for _, s := range ackedSeqs {
		if got[s] != 1 {
			t.Errorf("MQTT message seq %d, acknowledged by mosquitto, is upstream %d times", s, got[s])
		}
	}
	// The catalog was published at the start and again after the NATS
	// restart, with Nats-Rollup: the stream keeps the latest only.
	if n := subjectMsgs(t, natsURL, "ferry.test.interop.catalog"); n != 1 {
		t.Errorf("the stream holds %d catalogs, want 1 (rolled up)", n)
	}
	raised := 0
	for _, a := range up.alerts {
		if a.Rule == "counter_high" && a.State == "raised" {
			raised++
		}
	}
	if raised != 1 {
		t.Errorf("counter_high raised %d times upstream, want 1", raised)
	}
	t.Logf("%d messages upstream (%d alerts); %d MQTT messages upstream, of %d published (%d acknowledged by mosquitto)",
		up.msgs, len(up.alerts), len(got), tried, len(ackedSeqs))
}

// interopTools finds the programs the test runs; it fails with what to
// install when one is missing.
func interopTools(t *testing.T) map[string]string {
	t.Helper()
	tools := map[string]string{}
	for _, name := range []string{"mosquitto", "mosquitto_pub", "mosquitto_sub", "nats-server"} {
		p, err := exec.LookPath(name)
		if err != nil {
			p = "/usr/sbin/" + name // mosquitto is there, off a user's PATH
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("%s not found: apt-get install mosquitto mosquitto-clients nats-server (or run make interop)", name)
			}
		}
		tools[name] = p
	}
	// Debian's python, which has Debian's pymodbus (not a python on PATH).
	tools["python3"] = "/usr/bin/python3"
	if out, err := exec.Command(tools["python3"], "-c", "import pymodbus; print(pymodbus.__version__)").CombinedOutput(); err != nil {
		t.Fatalf("pymodbus not importable by /usr/bin/python3: apt-get install python3-pymodbus (or run make interop): %v\n%s", err, out)
	} else {
		t.Logf("pymodbus %s", strings.TrimSpace(string(out)))
	}
	for _, v := range [][]string{{tools["mosquitto"], "-h"}, {tools["nats-server"], "--version"}} {
		out, _ := exec.Command(v[0], v[1:]...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		t.Logf("%s", line)
	}
	return tools
}

// stopPeer sends sig to a peer process and waits for it to exit (it is
// killed after 15 s, and the test fails).
func stopPeer(t *testing.T, p *testpeer.Proc, sig syscall.Signal) {
	t.Helper()
	if err := p.StopWith(sig, 15*time.Second); errors.Is(err, testpeer.ErrStopTimeout) {
		t.Error(err)
	}
}

// waitListening waits until addr accepts connections.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	eventually(t, 20*time.Second, "listening on "+addr, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// createInteropStream creates the stream ferry forwards to on Debian's
// server, as plantsim does on the in-process one.
func createInteropStream(t *testing.T, url string) {
	t.Helper()
	js := testpeer.JetStream(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:              plantsim.StreamName,
		Subjects:          []string{plantsim.StreamSubjects},
		Storage:           jetstream.FileStorage,
		Duplicates:        plantsim.DuplicateWindow,
		MaxMsgsPerSubject: -1,
		AllowRollup:       true,
	})
	if err != nil {
		t.Fatalf("create stream %s on %s: %v", plantsim.StreamName, url, err)
	}
}

// subjectMsgs counts the messages of subject in the stream.
func subjectMsgs(t *testing.T, url, subject string) uint64 {
	t.Helper()
	js := testpeer.JetStream(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, plantsim.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// upstreamSeqs counts the MQTT messages in the stream by their seq field
// (a Bad sample is no message: the broker went away).
func upstreamSeqs(t *testing.T, url string) map[int]int {
	t.Helper()
	got, _, _ := seqsUpstream(t, url, "env")
	return got
}

// seqsUpstream reads the stream at url and counts, per seq, the Good seq
// samples of device: each is one MQTT message of a numbered publisher.
// fields counts the device's other Good samples; bad lists the samples
// that are not Good.
func seqsUpstream(t *testing.T, url, device string) (got map[int]int, fields int, bad []string) {
	t.Helper()
	got = map[int]int{}
	testpeer.ReadStream(t, url, plantsim.StreamName, func(m jetstream.Msg) {
		all, err := uplink.DecodeAll(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			t.Fatalf("stream message on %s: %v", m.Subject(), err)
		}
		for _, msg := range all {
			if msg.Telemetry == nil || msg.Telemetry.Device != device {
				continue
			}
			for _, sc := range msg.Telemetry.Scans {
				for _, p := range sc.Points {
					switch {
					case p.Quality != ferry.Good:
						bad = append(bad, fmt.Sprintf("record %s: %s is %v (%s)", msg.ID, p.Name, p.Quality, p.Reason))
					case p.Name != "seq":
						fields++
					case p.Value.Float64() != math.Trunc(p.Value.Float64()):
						t.Errorf("record %s: seq sample %+v", msg.ID, p)
					default:
						got[int(p.Value.Float64())]++
					}
				}
			}
		}
	})
	return got, fields, bad
}

// publisher publishes JSON messages with increasing seq at QoS 1 with
// mosquitto_pub, one process per message, until its context ends. A
// message counts as published when mosquitto_pub exits 0: the broker sent
// its PUBACK. A failed one is not sent again (its seq is skipped), so no
// message is published twice.
type publisher struct {
	bin, port, topic string

	mu    sync.Mutex
	acked []int
	tried int
}

func (p *publisher) run(ctx context.Context) {
	for seq := 0; ctx.Err() == nil; seq++ {
		body := fmt.Sprintf(`{"seq":%d,"temp":%s}`, seq, strconv.FormatFloat(20+float64(seq%10)/10, 'f', 1, 64))
		// Not the run's context: a publish under way is let finish, so
		// that its outcome is known; a hung one is killed (not counted).
		pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cmd := exec.CommandContext(pctx, p.bin, "-h", "127.0.0.1", "-p", p.port, "-q", "1", "-i", "interop-pub", "-t", p.topic, "-m", body)
		err := cmd.Run()
		cancel()
		p.mu.Lock()
		p.tried++
		if err == nil {
			p.acked = append(p.acked, seq)
		}
		p.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *publisher) triedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tried
}

func (p *publisher) ackedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

// result returns the acknowledged seqs, in order, and how many were tried.
func (p *publisher) result() ([]int, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := append([]int(nil), p.acked...)
	sort.Ints(out)
	return out, p.tried
}
