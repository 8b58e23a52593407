package gateway

import (
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/reduce"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestReduceDeadband runs a daemon whose reduce section suppresses
// press1.cycles upstream (a deadband no change reaches) and every sample
// of the MQTT sensor after its first: upstream gets the first cycles
// value only (and a Good value after a Bad one, a quality change), while
// a rate rule on the same point raises its alert — a rate is judged only
// once its samples span half its window, so it needs samples after the
// first: the rules see every sample. The sensor's QoS 1 messages keep
// being acknowledged although their scans are never stored (a scan
// reduced to nothing is finished at once).
//
// The rule does not depend on when the first read happens (it used to be
// "press1.cycles >= 4", which assumed a first read within 8 s of the
// plant's start and failed on a loaded machine).
func TestReduceDeadband(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and a daemon")
	}
	p := startPlant(t, 1)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	cfg := plantConfig{
		DataDir:  filepath.Join(dir, "data"),
		Interval: map[string]string{"press1": "20ms"},
		Env:      true, Uplink: true,
		// press1.cycles counts half a stroke a second from the plant's
		// start, whatever it is at the first read: a rate over 4 s of
		// samples 20 ms apart is judged from the sample 2 s after the
		// first on.
		Rules: []string{`{name: cycles_rising, point: press1.cycles, rate: {window: 4s, per: second, above: 0.2}, severity: info}`},
		Extra: `reduce:
  points:
    - {match: press1.cycles, deadband: 1000, gap: 0}
    - {match: "env.*", deadband: 1000, gap: 0}
`,
	}
	testutil.WriteFile(t, path, cfg.yaml(p))
	h := startDaemon(t, path)
	waitFor(t, 30*time.Second, "the rule on press1.cycles to raise its alert", func() bool { return h.active("cycles_rising") })
	waitFor(t, 30*time.Second, "the sensor's messages to be acknowledged", func() bool {
		v, _ := h.metric("ferry_mqtt_acks_total", "result=sent")
		return v >= 40 // beyond any broker's in-flight window
	})
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	dl := collect(t, p.NATS.URL, cfg.DataDir)

	var cycles, oil int
	var prev *ferry.Sample
	for _, sc := range dl.allScans("press1") {
		for _, s := range sc.Samples {
			switch s.Point {
			case "cycles":
				cycles++
				// Only the first sample and a quality change pass the
				// deadband.
				if prev != nil && s.Quality.IsGood() && prev.Quality.IsGood() {
					t.Errorf("press1.cycles = %v went upstream at %v after %v at %v: its deadband should hold it back", s.Value, s.Time, prev.Value, prev.Time)
				}
				prev = &s
			case "oil_temp":
				oil++
			}
		}
	}
	scans, _ := h.metric("ferry_pipeline_scans_total")
	pressScans := h.scans("press1")
	suppressed, _ := h.metric("ferry_reduce_suppressed_samples_total", "device=press1")
	t.Logf("press1: %v scans, %d oil_temp and %d cycles samples upstream, %v cycles samples suppressed", pressScans, oil, cycles, suppressed)
	if cycles == 0 || float64(cycles)+suppressed != pressScans {
		t.Errorf("press1.cycles: %d upstream + %v suppressed, want %v (one per scan, the first sent)", cycles, suppressed, pressScans)
	}
	if float64(oil) != pressScans {
		t.Errorf("press1.oil_temp (not reduced): %d samples upstream, want one per scan (%v)", oil, pressScans)
	}
	if n := dl.transitions("cycles_rising", ferry.AlertRaised); n != 1 {
		t.Errorf("cycles_rising raised %d times upstream, want 1", n)
	}

	envUp := 0
	for _, sc := range dl.allScans("env") {
		envUp += len(sc.Samples)
	}
	envSuppressed, _ := h.metric("ferry_reduce_suppressed_samples_total", "device=env")
	acked, _ := h.metric("ferry_mqtt_acks_total", "result=sent")
	t.Logf("env: %d samples upstream, %v suppressed, %v messages acknowledged; %v scans through the pipeline", envUp, envSuppressed, acked, scans)
	if envUp == 0 || envUp > 4 || envSuppressed < 2*acked-float64(envUp)-4 {
		t.Errorf("env: %d samples upstream, %v suppressed of %v messages: want the first of each point, the rest suppressed", envUp, envSuppressed, acked)
	}
}

// TestReduceWindowAcrossRestart aggregates press1.oil_temp over 5 s
// windows and restarts the daemon in the middle of one: the window is
// stored at the shutdown flagged partial, the new daemon continues it as
// a new partial window, and every sample the two daemons read is counted
// in exactly one emitted window — none dropped, none twice.
func TestReduceWindowAcrossRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and two daemons")
	}
	const window = 5 * time.Second
	p := startPlant(t, 1)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	cfg := plantConfig{
		DataDir:  filepath.Join(dir, "data"),
		Interval: map[string]string{"press1": "50ms"},
		Uplink:   true,
		Extra: `reduce:
  points:
    - match: press1.oil_temp
      aggregate: {window: 5s, functions: [count, mean]}
`,
	}
	testutil.WriteFile(t, path, cfg.yaml(p))
	// inWindow reports whether the wall clock is between from and to
	// into a window: the stop and the restart should fall in one window.
	inWindow := func(from, to time.Duration) bool {
		off := time.Duration(time.Now().UnixNano() % int64(window))
		return off >= from && off < to
	}

	h1 := startDaemon(t, path)
	waitFor(t, 30*time.Second, "a whole window", func() bool {
		v, _ := h1.metric("ferry_reduce_windows_total", "device=press1")
		return v >= 2
	})
	waitFor(t, 10*time.Second, "the first second of a window", func() bool { return inWindow(200*time.Millisecond, time.Second) })
	if err := h1.stop(); err != nil {
		t.Fatal(err)
	}
	stoppedAt := time.Now()
	agg1, _ := h1.metric("ferry_reduce_aggregated_samples_total", "device=press1")
	partial1, _ := h1.metric("ferry_reduce_partial_windows_total", "device=press1")

	restarted := time.Now()
	h2 := startDaemon(t, path)
	waitFor(t, 30*time.Second, "two windows after the restart", func() bool {
		v, _ := h2.metric("ferry_reduce_windows_total", "device=press1")
		return v >= 2
	})
	if err := h2.stop(); err != nil {
		t.Fatal(err)
	}
	agg2, _ := h2.metric("ferry_reduce_aggregated_samples_total", "device=press1")
	partial2, _ := h2.metric("ferry_reduce_partial_windows_total", "device=press1")
	dl := collect(t, p.NATS.URL, cfg.DataDir)

	type out struct {
		t       time.Time
		count   uint64
		quality ferry.Quality
	}
	var counts []out
	for _, sc := range dl.allScans("press1") {
		for _, s := range sc.Samples {
			switch s.Point {
			case "oil_temp":
				t.Errorf("a raw oil_temp sample went upstream at %v", s.Time)
			case "oil_temp.count":
				counts = append(counts, out{s.Time, s.Value.Uint64(), s.Quality})
			}
		}
	}
	sort.Slice(counts, func(i, j int) bool { return counts[i].t.Before(counts[j].t) })
	var total uint64
	var partials []out
	for i, c := range counts {
		total += c.count
		if i > 0 && c.t.Equal(counts[i-1].t) {
			t.Errorf("two windows emitted at %v", c.t)
		}
		switch c.quality {
		case ferry.GoodQuality:
			if c.t.UnixNano()%int64(window) != 0 {
				t.Errorf("a whole window timed %v, not at a window's end", c.t)
			}
		case ferry.UncertainQuality(reduce.ReasonPartialWindow):
			partials = append(partials, c)
		default:
			t.Errorf("window at %v has quality %v", c.t, c.quality)
		}
	}
	t.Logf("%d windows upstream (%d partial), %d samples counted; the daemons aggregated %v + %v", len(counts), len(partials), total, agg1, agg2)
	if float64(total) != agg1+agg2 {
		t.Errorf("the windows count %d samples, the daemons aggregated %v + %v", total, agg1, agg2)
	}
	if partial1 < 1 || partial2 < 1 || float64(len(partials)) != partial1+partial2 {
		t.Fatalf("partial windows: %v at the stop + %v after the restart, %d upstream", partial1, partial2, len(partials))
	}
	// The window cut by the stop: stored at the stop, off a window
	// boundary, and continued by the second daemon up to its end.
	var cut *out
	for i := range partials {
		if c := partials[i]; c.t.UnixNano()%int64(window) != 0 && !c.t.After(stoppedAt) {
			cut = &partials[i]
		}
	}
	if cut == nil {
		t.Fatalf("no partial window stored at the stop (%v): %+v", stoppedAt, partials)
	}
	end := cut.t.Truncate(window).Add(window)
	continued := false
	for _, c := range partials {
		continued = continued || c.t.Equal(end)
	}
	if !continued && restarted.Before(end.Add(-time.Second)) {
		// The restart began in the same window, a second or more before
		// its end (a poll every 50ms): the second daemon continued it.
		t.Errorf("the window cut at %v was not continued to its end %v: %+v", cut.t, end, partials)
	}
}

// TestPipelineFinishesReducedScans checks the pipeline with a reducer: a
// scan reduced to nothing is finished at once with nil (an MQTT QoS 1
// message is acknowledged) and not stored; a scan with samples left is
// stored with its Done; the open windows are stored at the end, partial.
func TestPipelineFinishesReducedScans(t *testing.T) {
	deadband := 100.0
	red, err := reduce.New(reduce.Config{Points: []reduce.Point{
		{Match: "d.agg", Aggregate: &reduce.Aggregate{Window: time.Hour, Functions: []string{"count"}}},
		{Match: "d.*", Deadband: &deadband},
	}}, reduce.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	var stored []ferry.Scan
	p := newPipeline(16, nil, func(s ferry.Scan) { stored = append(stored, s) }, nil)
	p.reduce = red
	var done []error
	now := time.Now()
	for i := range 3 {
		p.Emit(ferry.Scan{Device: "d", Time: now, Done: func(err error) { done = append(done, err) }, Samples: []ferry.Sample{
			{Device: "d", Point: "x", Value: ferry.FloatValue(float64(i)), Time: now.Add(time.Duration(i) * time.Millisecond)},
			{Device: "d", Point: "agg", Value: ferry.FloatValue(1), Time: now.Add(time.Duration(i) * time.Millisecond)},
		}})
	}
	finished := make(chan struct{})
	go func() { p.Run(); close(finished) }()
	p.Close()
	<-finished
	if len(done) != 2 || done[0] != nil || done[1] != nil {
		t.Fatalf("Done calls by the pipeline: %v, want two nils (the scans reduced to nothing)", done)
	}
	if len(stored) != 2 || len(stored[0].Samples) != 1 || stored[0].Samples[0].Point != "x" || stored[0].Done == nil {
		t.Fatalf("stored %+v, want the first scan (x alone, its Done kept) and the windows at the end", stored)
	}
	last := stored[1]
	if len(last.Samples) != 1 || last.Samples[0].Point != "agg.count" || last.Samples[0].Value.Uint64() != 3 ||
		last.Samples[0].Quality != ferry.UncertainQuality(reduce.ReasonPartialWindow) || last.Done != nil {
		t.Fatalf("stored at the end: %+v, want agg.count=3 partial", last)
	}
}

// TestReduceReload turns report-by-exception on by a reload, then
// refuses a reload whose reduce section fits no point: the running
// settings stay.
func TestReduceReload(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and a daemon")
	}
	p := startPlant(t, 1)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	cfg := plantConfig{DataDir: filepath.Join(dir, "data"), Interval: map[string]string{"press1": "20ms"}}
	testutil.WriteFile(t, path, cfg.yaml(p))
	h := startDaemon(t, path)
	waitFor(t, 30*time.Second, "press1 to be read", func() bool { return h.scans("press1") >= 5 })
	if v, _ := h.metric("ferry_reduce_suppressed_samples_total"); v != 0 {
		t.Fatalf("%v samples suppressed with no reduce section", v)
	}

	cfg.Extra = "reduce:\n  points:\n    - {match: press1.cycles, deadband: 1000, gap: 0}\n"
	h.reload(cfg.yaml(p))
	if lines := h.logs.lines("reduce settings applied"); len(lines) != 1 {
		t.Fatalf("reload: %q", h.logs.lines("reload"))
	}
	waitFor(t, 30*time.Second, "press1.cycles to be suppressed", func() bool {
		v, _ := h.metric("ferry_reduce_suppressed_samples_total", "device=press1")
		return v >= 20
	})

	bad := cfg
	bad.Extra = "reduce:\n  points:\n    - {match: press9.cycles, deadband: 1}\n"
	h.reload(bad.yaml(p))
	if lines := h.logs.lines("reload refused", "press9.cycles"); len(lines) != 1 {
		t.Fatalf("a reduce entry matching no point was not refused: %q", h.logs.lines("reload"))
	}
	before, _ := h.metric("ferry_reduce_suppressed_samples_total", "device=press1")
	waitFor(t, 30*time.Second, "suppression to go on under the running settings", func() bool {
		v, _ := h.metric("ferry_reduce_suppressed_samples_total", "device=press1")
		return v >= before+20
	})
}
