package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/plantsim"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink"
)

// The end-to-end test runs the real ferry binary as a child process against
// a simulated plant (Modbus presses, an OPC UA boiler, an MQTT broker and a
// NATS JetStream server, all in this process) and checks what arrives
// upstream: values from every protocol with the right types and qualities,
// the overheating alert locally and upstream, nothing lost across a NATS
// outage, a clean SIGTERM, and every record id exactly once.

var (
	ferryBinOnce sync.Once
	ferryBin     string
	ferryBinErr  error
)

// buildFerry builds cmd/ferry once per test binary (with the race detector
// when the tests run with it, so the child is checked too).
func buildFerry(t *testing.T) string {
	t.Helper()
	ferryBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ferry-e2e-bin-")
		if err != nil {
			ferryBinErr = err
			return
		}
		ferryBin = filepath.Join(dir, "ferry")
		// Without -race, the binary the Makefile and the .deb ship:
		// static, trimmed, stripped. The benches measure what a user's
		// top shows, and a cgo build maps libc and ld.so too (1.8 MiB
		// more RSS in an idle ferry). -race needs cgo.
		args, cgo := []string{"build", "-o", ferryBin, "-trimpath", "-ldflags=-s -w"}, "CGO_ENABLED=0"
		if raceEnabled {
			args, cgo = []string{"build", "-o", ferryBin, "-race"}, "CGO_ENABLED=1"
		}
		cmd := exec.Command("go", append(args, ".")...)
		cmd.Env = append(os.Environ(), cgo)
		if out, err := cmd.CombinedOutput(); err != nil {
			ferryBinErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if ferryBinErr != nil {
		t.Fatal(ferryBinErr)
	}
	return ferryBin
}

// startFerry runs `ferry run -config cfg` as a child process.
func startFerry(t *testing.T, bin, cfg string) *testpeer.Proc {
	t.Helper()
	return testpeer.Child(t, bin, "run", "-config", cfg)
}

// httpListening finds the address in ferry's "http listening" log line.
var httpListening = regexp.MustCompile(`msg="http listening" [^\n]*?addr=(\S+) scheme=(\w+)`)

// httpBase waits until ferry has bound its HTTP listener and returns its
// base URL: the configuration says 127.0.0.1:0, so the kernel picks the
// port and ferry logs it.
func httpBase(t *testing.T, f *testpeer.Proc) string {
	t.Helper()
	var base string
	eventually(t, 60*time.Second, "ferry's http listener", func() error {
		m := httpListening.FindStringSubmatch(f.RunLog())
		if m == nil {
			return errors.New(`no "http listening" line in ferry's log`)
		}
		base = m[2] + "://" + m[1]
		return nil
	})
	return base
}

// stopFerry sends SIGTERM and waits for a clean exit.
func stopFerry(t *testing.T, f *testpeer.Proc) {
	t.Helper()
	if err := f.Stop(60 * time.Second); err != nil {
		t.Fatalf("ferry after SIGTERM: %v", err)
	}
}

var eventually = testutil.Eventually

func httpGet(url string) (int, string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitReady waits until ferry's /readyz answers 200.
func waitReady(t *testing.T, base string) {
	t.Helper()
	eventually(t, 60*time.Second, "ferry ready", func() error {
		code, body, err := httpGet(base + "/readyz")
		if err != nil || code != 200 {
			return fmt.Errorf("/readyz: %d %q %v", code, body, err)
		}
		return nil
	})
}

// ferryStatus is what the tests read of ferry's /api/status.
type ferryStatus struct {
	Buffer struct {
		Lanes []struct {
			Records  int `json:"records"`
			InFlight int `json:"in_flight"`
		} `json:"lanes"`
	} `json:"buffer"`
	Uplink string `json:"uplink"`
}

// buffered counts the records the buffer holds, in flight or not.
func (st *ferryStatus) buffered() int {
	n := 0
	for _, l := range st.Buffer.Lanes {
		n += l.Records + l.InFlight
	}
	return n
}

func getStatus(base string) (*ferryStatus, error) {
	code, body, err := httpGet(base + "/api/status")
	if err != nil || code != 200 {
		return nil, fmt.Errorf("/api/status: %d %v", code, err)
	}
	var st ferryStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// waitDrained waits until the uplink is connected and the buffer empty.
func waitDrained(t *testing.T, base string) {
	t.Helper()
	eventually(t, 60*time.Second, "the buffer drained", func() error {
		st, err := getStatus(base)
		if err != nil {
			return err
		}
		if st.Uplink != "connected" {
			return fmt.Errorf("uplink %q", st.Uplink)
		}
		if n := st.buffered(); n != 0 {
			return fmt.Errorf("buffer still holds %d records: %+v", n, st.Buffer.Lanes)
		}
		return nil
	})
}

// waitBacklog waits until the buffer holds at least n records.
func waitBacklog(t *testing.T, base string, n int) {
	t.Helper()
	eventually(t, 60*time.Second, fmt.Sprintf("a backlog of %d records", n), func() error {
		st, err := getStatus(base)
		if err != nil {
			return err
		}
		if got := st.buffered(); got < n {
			return fmt.Errorf("buffer holds %d records", got)
		}
		return nil
	})
}

// upstream is what the stream holds, decoded.
type upstream struct {
	msgs   int
	ids    map[string]int                 // record id (Nats-Msg-Id) → copies
	last   map[string]uplink.PointMessage // "device.point" → last sample
	kinds  map[string]ferry.Kind
	alerts []*uplink.AlertMessage
}

// readUpstream reads every message of the stream, from the first.
func readUpstream(t *testing.T, url string) *upstream {
	t.Helper()
	up := &upstream{ids: map[string]int{}, last: map[string]uplink.PointMessage{}, kinds: map[string]ferry.Kind{}}
	testpeer.ReadStream(t, url, plantsim.StreamName, func(m jetstream.Msg) {
		up.add(t, m.Subject(), m.Headers(), m.Data())
	})
	return up
}

func (u *upstream) add(t *testing.T, subject string, hdr nats.Header, data []byte) {
	t.Helper()
	all, err := uplink.DecodeAll(subject, hdr, data)
	if err != nil {
		t.Fatalf("message on %s does not decode: %v", subject, err)
	}
	u.msgs++
	for _, m := range all {
		if m.ID != "" {
			u.ids[m.ID]++
		}
		switch {
		case m.Telemetry != nil:
			for _, sc := range m.Telemetry.Scans {
				for _, p := range sc.Points {
					key := m.Telemetry.Device + "." + p.Name
					u.last[key] = p
					if p.Quality == ferry.Good {
						u.kinds[key] = p.Value.Kind()
					}
				}
			}
		case m.Alert != nil:
			u.alerts = append(u.alerts, m.Alert)
		}
	}
}

// checkContiguous checks that the record ids of each lane run from their
// first to their last sequence with no gap, each exactly once: nothing
// lost, nothing twice. (A new buffer file starts its sequences from the
// clock, so the first is not 1.)
func (u *upstream) checkContiguous(t *testing.T, gateway string) {
	t.Helper()
	if len(u.ids) == 0 {
		t.Fatal("no records upstream")
	}
	for id, n := range u.ids {
		if n != 1 {
			t.Errorf("record %s is in the stream %d times", id, n)
		}
	}
	for _, lane := range []ferry.Lane{ferry.LaneAlerts, ferry.LaneTelemetry} {
		prefix := gateway + "-" + lane.String() + "-"
		seqs := map[uint64]bool{}
		var top, first uint64
		for id := range u.ids {
			rest, ok := strings.CutPrefix(id, prefix)
			if !ok {
				continue
			}
			rest, _, _ = strings.Cut(rest, "-p") // a record cut in parts
			seq, err := strconv.ParseUint(rest, 10, 64)
			if err != nil {
				t.Fatalf("record id %q: %v", id, err)
			}
			seqs[seq] = true
			top = max(top, seq)
			if first == 0 || seq < first {
				first = seq
			}
		}
		var missing []uint64
		for s := first; s <= top && len(missing) < 1000; s++ {
			if !seqs[s] {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			t.Errorf("lane %s: %d records of %d..%d missing upstream (at least), first %v", lane, len(missing), first, top, missing[:min(len(missing), 10)])
		}
		t.Logf("lane %s: records %d..%d (%d) upstream exactly once", lane, first, top, len(seqs))
	}
}

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the ferry binary against a simulated plant for about a minute")
	}
	bin := buildFerry(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A 40 s fault cycle: press1 starts to overheat at 3.2 s and is above
	// 80 °C from about 6 s to 18 s.
	plant, err := plantsim.Start(ctx, plantsim.Options{
		Faults: true, FaultCycle: 40 * time.Second, Rate: 250 * time.Millisecond,
		NATSDir: filepath.Join(dir, "nats"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer plant.Close()
	b, err := plant.Config(plantsim.ConfigOptions{GatewayID: "e2e", DataDir: filepath.Join(dir, "data"), HTTP: "127.0.0.1:0", Interval: "250ms"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(cfg, b, 0o644); err != nil {
		t.Fatal(err)
	}

	f := startFerry(t, bin, cfg)
	base := httpBase(t, f)
	waitReady(t, base)

	// Values from all three protocols arrive upstream, with their types
	// and qualities.
	model := plant.Model()
	var up *upstream
	eventually(t, 60*time.Second, "values from every protocol upstream", func() error {
		up = readUpstream(t, plant.NATS.URL)
		want := map[string]ferry.Kind{
			"press1.oil_temp": ferry.KindFloat, "press1.oil_temp_cdab": ferry.KindFloat, "press1.cycles": ferry.KindInt,
			"press1.running": ferry.KindBool, "press1.label": ferry.KindString, "press1.pressure": ferry.KindFloat,
			"boiler.pressure": ferry.KindFloat, "boiler.running": ferry.KindBool, "boiler.name": ferry.KindString,
			"env.temperature": ferry.KindFloat, "env.humidity": ferry.KindFloat,
		}
		for key, kind := range want {
			got, ok := up.kinds[key]
			if !ok {
				return fmt.Errorf("no Good sample of %s yet", key)
			}
			if got == ferry.KindUint {
				got = ferry.KindInt // JSON has one kind of integer
			}
			if got != kind {
				return fmt.Errorf("%s is a %v, want %v", key, got, kind)
			}
		}
		return nil
	})
	// Values match what the simulated devices served at the sample's time.
	oil := up.last["press1.oil_temp"]
	if want := model.OilTemp(1, oil.Time.Sub(model.Start)); math.Abs(oil.Value.Float64()-want) > 1.5 {
		t.Errorf("press1.oil_temp = %v at %v, the press served about %.2f", oil.Value, oil.Time, want)
	}
	if cdab := up.last["press1.oil_temp_cdab"]; cdab.Quality == ferry.Good && math.Abs(cdab.Value.Float64()-oil.Value.Float64()) > 2 {
		t.Errorf("the CDAB copy reads %v, the ABCD one %v", cdab.Value, oil.Value)
	}
	if l := up.last["press1.label"]; l.Value.Str() != "PRESS-1" {
		t.Errorf("press1.label = %q", l.Value.Str())
	}
	if bp := up.last["boiler.pressure"]; bp.Value.Float64() < 7 || bp.Value.Float64() > 10 {
		t.Errorf("boiler.pressure = %v, want about 8.5", bp.Value)
	}
	// The point inside the press's unmapped register hole is Bad, alone.
	if sp := up.last["press1.spare"]; sp.Quality != ferry.Bad || sp.Reason != ferry.ReasonIllegalAddress {
		t.Errorf("press1.spare = %+v, want Bad %q", sp, ferry.ReasonIllegalAddress)
	}

	// The overheating ramp raises oil_hot once, upstream and locally.
	eventually(t, 60*time.Second, "oil_hot raised upstream", func() error {
		up = readUpstream(t, plant.NATS.URL)
		for _, a := range up.alerts {
			if a.Rule == "oil_hot" && a.State == "raised" {
				return nil
			}
		}
		return errors.New("no oil_hot alert in the stream")
	})
	raised := 0
	for _, a := range up.alerts {
		if a.Rule == "oil_hot" && a.State == "raised" {
			raised++
			if a.Device != "press1" || a.Severity != "critical" || a.Value.Float64() <= 80 {
				t.Errorf("oil_hot alert %+v", a)
			}
		}
	}
	if raised != 1 {
		t.Errorf("oil_hot raised %d times in one overheating episode, want 1", raised)
	}
	if !strings.Contains(f.Log(), "rule=oil_hot state=raised") {
		t.Errorf("the local log sink did not report oil_hot")
	}

	// A NATS outage: readiness says the uplink is down, nothing is lost.
	plant.NATS.Shutdown()
	eventually(t, 30*time.Second, "/readyz names the uplink while NATS is down", func() error {
		code, body, err := httpGet(base + "/readyz")
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "uplink") {
			return fmt.Errorf("/readyz: %d %q", code, body)
		}
		return nil
	})
	waitBacklog(t, base, 20) // data piles up in the buffer
	if err := plant.NATS.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "ready again after NATS returns", func() error {
		code, body, err := httpGet(base + "/readyz")
		if err != nil || code != 200 {
			return fmt.Errorf("/readyz: %d %q %v", code, body, err)
		}
		return nil
	})

	// SIGTERM: a clean shutdown, then a second run drains what is left.
	stopFerry(t, f)
	log := f.Log()
	if !strings.Contains(log, "ferry stopped") {
		t.Errorf("no clean stop in the log")
	}
	f2 := startFerry(t, bin, cfg)
	waitDrained(t, httpBase(t, f2))
	stopFerry(t, f2)

	// Every record the buffer accepted is upstream exactly once.
	up = readUpstream(t, plant.NATS.URL)
	up.checkContiguous(t, "e2e")
	t.Logf("%d messages upstream, %d alerts", up.msgs, len(up.alerts))
}
