package reliability

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/plantsim"
)

// soakPoint is one measurement of the soak.
type soakPoint struct {
	At         time.Duration
	RSS        int64 // bytes
	Goroutines float64
	FDs        int
	File       float64 // buffer.db bytes
	Rate       float64 // samples/s committed since the last point
	Records    float64 // records buffered
}

// TestSoak runs ferry for FERRY_SOAK (default 30m) at about 10k samples/s
// (Modbus presses with extra points every 100 ms, the OPC UA boiler, MQTT
// sensors and numbered messages), with a 10-second NATS outage every 5
// minutes, and records RSS, goroutines, open fds and the buffer file's
// size. After a 5-minute warm-up they must stay flat: no leak.
func TestSoak(t *testing.T) {
	needProfile(t, long)
	dur := 30 * time.Minute
	if s := os.Getenv("FERRY_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("FERRY_SOAK=%q: %v", s, err)
		}
		dur = d
	}
	warmup := min(5*time.Minute, dur/3)
	every := max(dur/60, 5*time.Second)
	const presses, extra = 10, 90

	plant := startPlant(t, plantsim.Options{Presses: presses, ExtraPoints: extra, Rate: 100 * time.Millisecond,
		Faults: true, FaultCycle: 2 * time.Minute, MQTTSensors: 4})
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := writeConfig(t, dir, cfgOpts{Gateway: "soak", DataDir: data, Plant: plant, Interval: "100ms",
		Extra: extra, SeqTopic: "rel/seq", AlertsMQTT: true})
	f := newProc(t, cfg)
	f.Start()
	if err := f.WaitUp(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	pub := startSeqPublisher(plant, "rel/seq", 20*time.Millisecond)
	defer pub.Stop()

	start := time.Now()
	var (
		pts        []soakPoint
		prevSum    float64
		prevAt     = start
		blips      int
		nextBlip   = start.Add(5 * time.Minute)
		blipUntil  time.Time
		totalSampl float64
	)
	if m, err := f.Metrics(); err == nil {
		prevSum = m.Sum("ferry_buffer_commit_batch_samples_sum")
	}
	firstSum := prevSum
	for time.Since(start) < dur {
		time.Sleep(time.Second) // samples once a second through the soak: not a wait
		now := time.Now()
		switch {
		case !blipUntil.IsZero() && now.After(blipUntil):
			natsUp(t, plant)
			blipUntil = time.Time{}
		case blipUntil.IsZero() && now.After(nextBlip) && now.Add(time.Minute).Before(start.Add(dur)):
			plant.NATS.Shutdown()
			blips++
			blipUntil = now.Add(10 * time.Second)
			nextBlip = now.Add(5 * time.Minute)
		}
		if !f.Running() {
			t.Fatalf("ferry exited during the soak:\n%s", tail(f.Log(), 40))
		}
		if now.Sub(prevAt) < every {
			continue
		}
		m, err := f.Metrics()
		if err != nil {
			t.Errorf("scrape at %v: %v", now.Sub(start), err)
			continue
		}
		pid := f.Pid()
		rss, _ := procStatusKB(pid, "VmRSS")
		fds, _ := openFDs(pid)
		sum := m.Sum("ferry_buffer_commit_batch_samples_sum")
		p := soakPoint{At: now.Sub(start), RSS: rss << 10, Goroutines: m.Sum("go_goroutines"), FDs: fds,
			File: m.Sum("ferry_buffer_file_bytes"), Rate: (sum - prevSum) / now.Sub(prevAt).Seconds(),
			Records: m.Sum("ferry_buffer_records")}
		pts = append(pts, p)
		prevSum, prevAt = sum, now
		totalSampl = sum - firstSum
	}
	if !blipUntil.IsZero() {
		natsUp(t, plant)
	}
	lastN := pub.Stop()
	if err := f.Stop(60 * time.Second); err != nil {
		t.Errorf("stop after the soak: %v", err)
	}

	var table strings.Builder
	table.WriteString("| t | RSS MiB | goroutines | open fds | buffer.db MiB | records buffered | samples/s |\n|---|---|---|---|---|---|---|\n")
	for i, p := range pts {
		if i%max(1, len(pts)/20) != 0 && i != len(pts)-1 {
			continue
		}
		fmt.Fprintf(&table, "| %v | %.1f | %.0f | %d | %.2f | %.0f | %.0f |\n", p.At.Round(time.Second), float64(p.RSS)/(1<<20),
			p.Goroutines, p.FDs, p.File/(1<<20), p.Records, p.Rate)
	}
	t.Logf("soak series:\n%s", table.String())
	if path := os.Getenv("FERRY_RELIABILITY_REPORT"); path != "" {
		_ = os.WriteFile(path+".soak.md", []byte(table.String()), 0o644)
	}

	var after []soakPoint
	for _, p := range pts {
		if p.At >= warmup {
			after = append(after, p)
		}
	}
	if len(after) < 6 {
		t.Fatalf("only %d measurements after the warm-up", len(after))
	}
	k := len(after) / 4
	early, late := after[:k], after[len(after)-k:]
	med := func(ps []soakPoint, f func(soakPoint) float64) float64 {
		v := make([]float64, len(ps))
		for i, p := range ps {
			v[i] = f(p)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	rssE, rssL := med(early, func(p soakPoint) float64 { return float64(p.RSS) }), med(late, func(p soakPoint) float64 { return float64(p.RSS) })
	grE, grL := med(early, func(p soakPoint) float64 { return p.Goroutines }), med(late, func(p soakPoint) float64 { return p.Goroutines })
	fdE, fdL := med(early, func(p soakPoint) float64 { return float64(p.FDs) }), med(late, func(p soakPoint) float64 { return float64(p.FDs) })
	fileE, fileL := med(early, func(p soakPoint) float64 { return p.File }), med(late, func(p soakPoint) float64 { return p.File })
	if rssL > rssE*1.25+16<<20 {
		t.Errorf("RSS grew after the warm-up: median %.1f MiB → %.1f MiB", rssE/(1<<20), rssL/(1<<20))
	}
	if grL > grE*1.1+5 {
		t.Errorf("goroutines grew after the warm-up: %.0f → %.0f", grE, grL)
	}
	if fdL > fdE+5 {
		t.Errorf("open fds grew after the warm-up: %.0f → %.0f", fdE, fdL)
	}
	if fileL > fileE*1.5+8<<20 {
		t.Errorf("buffer.db grew after the warm-up: %.1f MiB → %.1f MiB", fileE/(1<<20), fileL/(1<<20))
	}
	avg := totalSampl / pts[len(pts)-1].At.Seconds()
	if avg < 5000 {
		t.Errorf("average %.0f samples/s; the soak is meant to run at ~10k", avg)
	}
	result(t, "soak", fmt.Sprintf("%v at %.0f samples/s average (%.0f M samples), %d NATS outages of 10 s, %d MQTT numbered messages; after %v warm-up (median of first vs last quarter): "+
		"RSS %.1f → %.1f MiB, goroutines %.0f → %.0f, open fds %.0f → %.0f, buffer.db %.2f → %.2f MiB",
		dur, avg, totalSampl/1e6, blips, lastN, warmup, rssE/(1<<20), rssL/(1<<20), grE, grL, fdE, fdL, fileE/(1<<20), fileL/(1<<20)))
}
