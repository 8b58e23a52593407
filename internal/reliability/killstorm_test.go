package reliability

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/plantsim"
)

// seqPublisher publishes numbered QoS 1 messages {"n": N} on a topic of
// the plant's broker, N = 1, 2, …, one every period.
type seqPublisher struct {
	last   atomic.Int64 // highest number the broker accepted
	errs   atomic.Int64
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startSeqPublisher(p *plantsim.Plant, topic string, period time.Duration) *seqPublisher {
	ctx, cancel := context.WithCancel(context.Background())
	s := &seqPublisher{cancel: cancel}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for n := int64(1); ; {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := p.MQTT.Publish(topic, fmt.Appendf(nil, `{"n":%d}`, n), 1); err != nil {
				s.errs.Add(1)
				continue
			}
			s.last.Store(n)
			n++
		}
	}()
	return s
}

// Stop stops publishing and returns the highest number published.
func (s *seqPublisher) Stop() int64 {
	s.cancel()
	s.wg.Wait()
	return s.last.Load()
}

// natsChaos stops and starts the plant's NATS server at random moments.
type natsChaos struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	toggles atomic.Int64
}

func startNATSChaos(t *testing.T, p *plantsim.Plant, rnd func(n int) int, minGap, maxGap time.Duration) *natsChaos {
	ctx, cancel := context.WithCancel(context.Background())
	c := &natsChaos{cancel: cancel}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			d := minGap + time.Duration(rnd(int(maxGap-minGap)))
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
			if p.NATS.Running() {
				p.NATS.Shutdown()
			} else if err := p.NATS.Start(); err != nil {
				t.Errorf("nats restart: %v", err)
				return
			}
			c.toggles.Add(1)
		}
	}()
	return c
}

func (c *natsChaos) Stop() {
	c.cancel()
	c.wg.Wait()
}

// TestKillStorm: ferry ingests from all three protocols while NATS stops
// and starts at random; ferry is killed with SIGKILL at random moments and
// restarted. At the end, with NATS up, it drains; then every record id of
// each lane between the first and the last must be upstream exactly once
// (or still in the buffer), every id seen in a buffer dump between kills
// must be among them, and every numbered MQTT QoS 1 message published
// during the storm must be upstream.
func TestKillStorm(t *testing.T) {
	needProfile(t)
	kills := pick(6, 50)
	maxUp := pick(5*time.Second, 8*time.Second)
	r := rng(t)

	plant := startPlant(t, plantsim.Options{Presses: 2, Rate: 200 * time.Millisecond, Faults: true, FaultCycle: 20 * time.Second})
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	const gw, topic = "storm", "rel/seq"
	// Besides the plant's faults (whose alerts a storm of restarts may
	// cut short: one run in CI had none), a rule on the numbered MQTT
	// messages raises and clears an alert every ten messages, so that
	// every run stores alerts throughout the storm.
	cfg := writeConfig(t, dir, cfgOpts{Gateway: gw, DataDir: data, Plant: plant, Interval: "100ms", SeqTopic: topic,
		Rules: `  - {name: oil_hot, when: press1.oil_temp > 80, clear: press1.oil_temp < 75, for: 1s, severity: critical}
  - {name: press2_silent, point: press2.oil_temp, stale: 3s, severity: warning}
  - {name: seq_tens, when: "seq.n % 20 >= 10", severity: info}
`})
	f := newProc(t, cfg)

	// The storm starts with NATS down, so that the first records wait in
	// the buffer and show up in the first dump.
	plant.NATS.Shutdown()

	// First start: wait for the MQTT subscription before publishing (the
	// broker keeps messages for ferry's session only once it exists).
	f.Start()
	if err := f.WaitUp(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(30*time.Second, func() error {
		m, err := f.Metrics()
		if err != nil {
			return err
		}
		if m.Sum("ferry_device_connected", "device=seq") != 1 {
			return fmt.Errorf("device seq not connected")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pub := startSeqPublisher(plant, topic, 20*time.Millisecond)
	chaos := startNATSChaos(t, plant, r.IntN, 500*time.Millisecond, 4*time.Second)

	var (
		dropped    float64 // drops counted by ferry before each kill
		dumped     = map[string]bool{}
		upRuns     int // runs in which /healthz answered
		slowestUp  time.Duration
		dumps      int
		killedUp   int // kills while ferry was serving (others hit the start)
		startAlive = true
		runs       []seqRange // what each run committed
	)
	for i := 0; i < kills; i++ {
		if i > 0 {
			f.Start()
		}
		started := time.Now()
		lifetime := time.Duration(r.Int64N(int64(maxUp)))
		if r.IntN(4) == 0 {
			// A quarter of the kills hit the start: opening the buffer,
			// connecting, the first commits.
			lifetime = time.Duration(r.Int64N(int64(300 * time.Millisecond)))
		}
		var lastDrop float64
		up := false
		for time.Since(started) < lifetime {
			if m, err := f.Metrics(); err == nil {
				if !up {
					up = true
					upRuns++
					slowestUp = max(slowestUp, time.Since(started))
				}
				lastDrop = m.Sum("ferry_buffer_dropped_total")
			}
			if !f.Running() {
				startAlive = false
				t.Errorf("run %d: ferry exited by itself:\n%s", i+1, tail(f.Log(), 30))
				break
			}
			// Scrapes at random moments of a random lifetime (the kill
			// schedule under test), not a wait.
			time.Sleep(time.Duration(50+r.IntN(200)) * time.Millisecond)
		}
		if up {
			killedUp++
		}
		f.Kill()
		dropped += lastDrop
		runs = append(runs, runRanges(t, f, data)...)
		if profile == short || i%5 == 4 {
			for _, rec := range dumpBuffer(t, data) {
				dumped[rec.ID] = true
			}
			dumps++
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	chaos.Stop()
	natsUp(t, plant)

	// Final run: NATS up, drain.
	f.Start()
	if err := f.WaitUp(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	lastN := pub.Stop()
	if lastN < 100 {
		t.Fatalf("only %d MQTT messages published", lastN)
	}
	seqSubject := fmt.Sprintf("ferry.rel.%s.telemetry.seq", gw)
	if err := waitFor(3*time.Minute, func() error {
		got := seqNumbers(t, readSubject(t, plant.NATS.URL, seqSubject, func(string) bool { return true }), nil)
		for n := int64(1); n <= lastN; n++ {
			if got[n] == 0 {
				return fmt.Errorf("MQTT message %d of %d not upstream yet", n, lastN)
			}
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	// Let the backlog drain: the buffer holds only what the last polls
	// brought.
	if err := waitFor(3*time.Minute, func() error {
		m, err := f.Metrics()
		if err != nil {
			return err
		}
		if n := m.Sum("ferry_buffer_records"); n > 20 {
			return fmt.Errorf("%v records still in the buffer", n)
		}
		if n := m.Sum("ferry_mqtt_acks_pending"); n > 0 {
			return fmt.Errorf("%v MQTT acks pending", n)
		}
		dropped += m.Sum("ferry_buffer_dropped_total")
		return nil
	}); err != nil {
		t.Error(err)
	}
	if err := f.Stop(60 * time.Second); err != nil {
		t.Errorf("final stop: ferry exited with %v", err)
	}
	runs = append(runs, runRanges(t, f, data)...)
	pending := dumpBuffer(t, data)
	msgs := readStream(t, plant.NATS.URL, func(s string) bool { return strings.HasSuffix(s, ".seq") })

	counts := account(t, gw, msgs, pending, runs)
	upstream := map[string]bool{}
	for _, m := range msgs {
		upstream[m.ID] = true
	}
	for _, rec := range pending {
		upstream[rec.ID] = true
	}
	var notUp []string
	for id := range dumped {
		if !upstream[id] {
			notUp = append(notUp, id)
		}
	}
	var lost, dups, both int
	for lane, c := range counts {
		t.Logf("%s: %v; %d both upstream and still buffered", lane, c, len(c.Both))
		lost += len(c.Missing)
		dups += len(c.Dups)
		both += len(c.Both)
		if len(c.Dups) > 0 {
			t.Errorf("%s: %d ids stored twice upstream: %s", lane, len(c.Dups), strings.Join(c.Dups[:min(10, len(c.Dups))], " "))
		}
		if c.Msgs != c.Unique {
			t.Errorf("%s: %d messages for %d ids", lane, c.Msgs, c.Unique)
		}
		if len(c.Unexpected) > 0 {
			t.Errorf("%s: %d sequences upstream that no run committed: %s", lane, len(c.Unexpected), ranges(c.Unexpected))
		}
		if len(c.Missing) > 0 {
			t.Errorf("%s: %d sequences missing (ferry counted %v drops): %s", lane, len(c.Missing), dropped, ranges(c.Missing))
		}
	}
	if counts["telemetry"].Expected < 200 || counts["alerts"].Expected == 0 {
		t.Errorf("too little traffic to prove anything: %v / %v", counts["telemetry"], counts["alerts"])
	}
	if len(notUp) > 0 {
		t.Errorf("%d records seen in the buffer between kills are neither upstream nor buffered: %v", len(notUp), notUp[:min(10, len(notUp))])
	}
	if dropped != 0 {
		t.Errorf("ferry counted %v drops with a 256MiB buffer", dropped)
	}
	got := seqNumbers(t, msgs, pending)
	var mqttLost, mqttDup int
	for n := int64(1); n <= lastN; n++ {
		switch c := got[n]; {
		case c == 0:
			mqttLost++
		case c > 1:
			mqttDup += c - 1
		}
	}
	if mqttLost > 0 {
		t.Errorf("MQTT: %d of %d numbered QoS 1 messages are not upstream", mqttLost, lastN)
	}
	if mqttDup > 0 {
		t.Errorf("MQTT: %d numbered messages are stored more than once (the buffer's dedupe should drop redeliveries)", mqttDup)
	}
	if !startAlive {
		t.Error("ferry exited on its own during the storm")
	}
	result(t, "kill -9 storm", fmt.Sprintf("%d kills (%d while serving, %d during start-up), %d NATS stops/starts, slowest start-to-healthz %v; "+
		"%d telemetry + %d alert records checked, lost %d, duplicates %d, still buffered and upstream %d; %d buffer dumps, %d ids seen, not upstream %d; "+
		"MQTT %d numbered QoS 1 messages, lost %d, duplicates %d; drops counted %v; race detector %v",
		kills, killedUp, kills-killedUp, chaos.toggles.Load(), slowestUp.Round(time.Millisecond),
		counts["telemetry"].Expected, counts["alerts"].Expected, lost, dups, both, dumps, len(dumped), len(notUp),
		lastN, mqttLost, mqttDup, dropped, raceBin))
	_ = upRuns
}
