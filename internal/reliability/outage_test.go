package reliability

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/plantsim"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// TestLongOutage: NATS is down for a long time while the plant produces
// thousands of samples a second into a 1 MiB buffer. The buffer must reach
// its bound, drop exactly the telemetry it counts (the sequences missing
// upstream equal its drop counter), keep every alert, stay within its file
// size bound, and drain fully when NATS returns.
func TestLongOutage(t *testing.T) {
	needProfile(t)
	presses := pick(6, 10)
	extra := pick(60, 90)
	outage := pick(30*time.Second, 4*time.Minute)
	const maxSize = 1 << 20

	plant := startPlant(t, plantsim.Options{Presses: presses, ExtraPoints: extra, Rate: 100 * time.Millisecond,
		Faults: true, FaultCycle: 20 * time.Second})
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	const gw = "outage"
	// The short profile caps the uplink's reconnect backoff, so that the
	// drain starts within seconds of NATS returning (CI time); the long
	// one keeps the default (30s).
	uplinkCfg := ""
	if profile == short {
		uplinkCfg = fmt.Sprintf("uplink:\n  nats: {urls: [\"%s\"], stream: FERRY, reconnect_max: 3s}\n", plant.NATS.URL)
	}
	cfg := writeConfig(t, dir, cfgOpts{Gateway: gw, DataDir: data, Plant: plant, Interval: "100ms",
		Extra: extra, MaxSize: "1MiB", Uplink: uplinkCfg})
	f := newProc(t, cfg)
	f.Start()
	if err := f.WaitUp(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	// Steady state before the outage: connected upstream and committing.
	if err := waitFor(60*time.Second, func() error {
		m, err := f.Metrics()
		if err != nil {
			return err
		}
		if m.Sum("ferry_uplink_connected") != 1 || m.Sum("ferry_buffer_appended_total", "lane=telemetry") < 20 {
			return fmt.Errorf("uplink connected %v, telemetry appended %v", m.Sum("ferry_uplink_connected"), m.Sum("ferry_buffer_appended_total", "lane=telemetry"))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	m0, err := f.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	rate0 := m0.Sum("ferry_buffer_commit_batch_samples_sum")

	plant.NATS.Shutdown()
	downAt := time.Now()
	var (
		peakFile   float64
		readyzDown bool
		alertsUp   = m0.Sum("ferry_buffer_appended_total", "lane=alerts")
		last       testpeer.Metrics
	)
	for time.Since(downAt) < outage {
		time.Sleep(time.Second) // samples once a second through an outage whose length is under test
		m, err := f.Metrics()
		if err != nil {
			t.Fatalf("during the outage: %v", err)
		}
		last = m
		peakFile = max(peakFile, m.Sum("ferry_buffer_file_bytes"))
		if fi, err := os.Stat(filepath.Join(data, "buffer.db")); err == nil {
			peakFile = max(peakFile, float64(fi.Size()))
		}
		if code, body, err := f.Get("/readyz"); err == nil && code == 503 && strings.Contains(body, "uplink") {
			readyzDown = true
		}
		if code, _, err := f.Get("/healthz"); err != nil || code != 200 {
			t.Errorf("/healthz during the outage: %d %v", code, err)
		}
	}
	samples := last.Sum("ferry_buffer_commit_batch_samples_sum") - rate0
	rate := samples / time.Since(downAt).Seconds()
	sizeDrops := last.Sum("ferry_buffer_dropped_total", "lane=telemetry", "reason=size")
	if sizeDrops == 0 {
		t.Errorf("the buffer never reached its bound in %v at %.0f samples/s", outage, rate)
	}
	if !readyzDown {
		t.Error("/readyz never said the uplink is down")
	}
	alertsDuring := last.Sum("ferry_buffer_appended_total", "lane=alerts") - alertsUp

	natsUp(t, plant)
	upAt := time.Now()
	var drained time.Duration
	if err := waitFor(5*time.Minute, func() error {
		m, err := f.Metrics()
		if err != nil {
			return err
		}
		if n := m.Sum("ferry_buffer_records", "lane=telemetry"); n > float64(presses+3)*2 {
			return fmt.Errorf("%v telemetry records still buffered", n)
		}
		if n := m.Sum("ferry_buffer_records", "lane=alerts"); n > 0 {
			return fmt.Errorf("%v alerts still buffered", n)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	drained = time.Since(upAt)
	final, err := f.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Stop(60 * time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}
	runs := runRanges(t, f, data)
	pending := dumpBuffer(t, data)
	msgs := readStream(t, plant.NATS.URL, nil)
	counts := account(t, gw, msgs, pending, runs)

	telDrops := final.Sum("ferry_buffer_dropped_total", "lane=telemetry", "reason=size") +
		final.Sum("ferry_buffer_dropped_total", "lane=telemetry", "reason=age") +
		final.Sum("ferry_buffer_dropped_total", "lane=telemetry", "reason=corrupt")
	queueFull := final.Sum("ferry_buffer_dropped_total", "lane=telemetry", "reason=queue_full")
	alertDrops := final.Sum("ferry_buffer_dropped_total", "lane=alerts")
	tel, al := counts["telemetry"], counts["alerts"]
	for lane, c := range counts {
		t.Logf("%s: %v", lane, c)
		if len(c.Dups) > 0 {
			t.Errorf("%s: %d ids stored twice: %v", lane, len(c.Dups), c.Dups[:min(10, len(c.Dups))])
		}
		if len(c.Unexpected) > 0 {
			t.Errorf("%s: %d sequences upstream that were never committed", lane, len(c.Unexpected))
		}
	}
	// Every missing record must be a counted drop (no silent loss). The
	// count may be higher: a record dropped while in flight (its batch
	// sealed and being published when the bound bit) is counted, and the
	// uplink may still deliver it (buffer/writer.go).
	if missing := float64(len(tel.Missing)); missing > telDrops {
		t.Errorf("telemetry: %d sequences missing upstream, the buffer counted only %v drops (size+age+corrupt): %s", len(tel.Missing), telDrops, ranges(tel.Missing))
	} else if missing < telDrops {
		t.Logf("telemetry: %v drops counted, %d missing upstream: %v were dropped in flight and delivered all the same", telDrops, len(tel.Missing), telDrops-missing)
	}
	if len(al.Missing) > 0 || alertDrops > 0 {
		t.Errorf("alerts: %d missing upstream, %v counted as dropped; every alert must be kept", len(al.Missing), alertDrops)
	}
	if alertsDuring == 0 {
		t.Error("no alert was raised during the outage; the scenario proves nothing about keeping alerts")
	}
	if queueFull > 0 {
		t.Errorf("%v scans dropped because the queue was full (the disk could not keep up)", queueFull)
	}
	bound := float64(maxSize + maxSize/8 + 64<<10)
	if peakFile > bound {
		t.Errorf("buffer.db peaked at %.0f bytes, over its bound %.0f", peakFile, bound)
	}
	// The dropped records are the oldest: the missing sequences form one
	// run (within one episode) right where the outage began.
	runsMissing := countRuns(tel.Missing)
	if runsMissing > 1 {
		t.Logf("missing telemetry forms %d runs: %s", runsMissing, ranges(tel.Missing))
	}
	result(t, "long outage", fmt.Sprintf("NATS down %v at %.0f samples/s into max_size 1MiB; %d telemetry records committed, %v dropped by the size bound (counted) = %d missing upstream in %d run(s); "+
		"%d alert records (%v raised during the outage), lost 0 expected: lost %d; duplicates %d; peak file %.2f MiB (bound %.2f MiB); drained in %v",
		outage, rate, tel.Expected, telDrops, len(tel.Missing), runsMissing,
		al.Expected, alertsDuring, len(al.Missing), len(tel.Dups)+len(al.Dups), peakFile/(1<<20), bound/(1<<20), drained.Round(100*time.Millisecond)))
}
