package history

import (
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
)

func testConfig() Config {
	var c Config
	c.SetDefaults()
	return c
}

// clock is a settable clock for retention.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func open(t *testing.T, dir string, cfg Config, c *clock) *Store {
	t.Helper()
	s, err := Open(dir, cfg, Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func scan(dev string, at time.Time, pts map[string]ferry.Value) *ferry.Scan {
	sc := &ferry.Scan{Device: dev, Time: at}
	for p, v := range pts {
		sc.Samples = append(sc.Samples, ferry.Sample{Device: dev, Point: p, Value: v, Time: at})
	}
	return sc
}

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// TestRollupsAcrossRestart: samples of the same minutes written before and
// after a restart (and across several commits) give one rollup per minute
// holding every sample once: none lost, none doubled.
func TestRollupsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t0.Add(10 * time.Minute)}
	s := open(t, dir, testConfig(), c)
	// Minute 0: values 0..29 at 0s..29s; minute 1: 60..89, committed in
	// two commits before the restart.
	for i := range 30 {
		s.Add(scan("press", t0.Add(time.Duration(i)*time.Second), map[string]ferry.Value{"p": ferry.FloatValue(float64(i))}))
		s.Add(scan("press", t0.Add(time.Minute+time.Duration(i)*time.Second), map[string]ferry.Value{"p": ferry.IntValue(int64(60 + i))}))
		if i == 14 {
			if err := s.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	// Added but not committed before Close: a crash would lose it, Close
	// (after Run's last commit) would not; here Commit is the shutdown's.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, dir, testConfig(), c)
	defer s.Close()
	// The rest of both minutes, after the restart, plus a Bad sample with
	// no value in minute 1.
	for i := 30; i < 60; i++ {
		s.Add(scan("press", t0.Add(time.Duration(i)*time.Second), map[string]ferry.Value{"p": ferry.FloatValue(float64(i))}))
		s.Add(scan("press", t0.Add(time.Minute+time.Duration(i)*time.Second), map[string]ferry.Value{"p": ferry.IntValue(int64(60 + i))}))
	}
	bad := &ferry.Scan{Device: "press", Time: t0.Add(time.Minute + 30*time.Second), Samples: []ferry.Sample{
		{Device: "press", Point: "p", Quality: ferry.BadQuality(ferry.ReasonTimeout), Time: t0.Add(time.Minute + 30*time.Second)}}}
	s.Add(bad)
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}

	got, err := s.Query(Query{Device: "press", Point: "p", From: t0, To: t0.Add(2 * time.Minute), Step: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Points) != 2 {
		t.Fatalf("got %d minutes, want 2: %+v", len(got.Points), got.Points)
	}
	want := []Point{
		{Time: t0, Min: 0, Max: 59, Mean: 29.5, Last: 59, Count: 60, Quality: ferry.Good},
		{Time: t0.Add(time.Minute), Min: 60, Max: 119, Mean: 89.5, Last: 119, Count: 60, Quality: ferry.Bad},
	}
	for i, w := range want {
		if g := got.Points[i]; g != w {
			t.Errorf("minute %d: got %+v, want %+v", i, g, w)
		}
	}
	// The raw samples are all there too, once: 120 values and the gap.
	raw, err := s.Query(Query{Device: "press", Point: "p", From: t0, To: t0.Add(2 * time.Minute), Step: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if raw.Step != 0 || len(raw.Points) != 121 {
		t.Fatalf("raw: step %v, %d samples, want 0 and 121", raw.Step, len(raw.Points))
	}
	gaps := 0
	for i, p := range raw.Points {
		if i > 0 && p.Time.Before(raw.Points[i-1].Time) {
			t.Fatalf("raw samples out of order at %d", i)
		}
		if math.IsNaN(p.Mean) {
			gaps++
			if p.Quality != ferry.Bad || p.Count != 0 {
				t.Errorf("gap %+v: want Bad, count 0", p)
			}
		}
	}
	if gaps != 1 {
		t.Errorf("%d gaps, want 1", gaps)
	}
}

// TestCrashLosesOnlyUncommitted: what was added and not committed is lost
// from raw and rollups alike (the process died), and what was committed is
// whole: the rollup and the raw samples agree.
func TestCrashLosesOnlyUncommitted(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t0.Add(10 * time.Minute)}
	s := open(t, dir, testConfig(), c)
	for i := range 10 {
		s.Add(scan("d", t0.Add(time.Duration(i)*time.Second), map[string]ferry.Value{"p": ferry.FloatValue(1)}))
	}
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	for i := 10; i < 20; i++ {
		s.Add(scan("d", t0.Add(time.Duration(i)*time.Second), map[string]ferry.Value{"p": ferry.FloatValue(1)}))
	}
	s.Close() // no Commit: as kill -9 would leave it
	s = open(t, dir, testConfig(), c)
	defer s.Close()
	r, _ := s.Query(Query{Device: "d", Point: "p", From: t0, To: t0.Add(time.Minute), Step: time.Minute})
	raw, _ := s.Query(Query{Device: "d", Point: "p", From: t0, To: t0.Add(time.Minute), Step: time.Second})
	if len(r.Points) != 1 || r.Points[0].Count != 10 || len(raw.Points) != 10 {
		t.Fatalf("rollup %+v, %d raw: want count 10 and 10 raw", r.Points, len(raw.Points))
	}
}

// TestResolution: a query gets raw samples for a short range, rollups in
// whole-minute buckets for a long one, and the step it asked for.
func TestResolution(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t0.Add(3 * time.Hour)}
	s := open(t, dir, testConfig(), c)
	defer s.Close()
	// One sample every 10 s for 3 hours: 1080 samples, value = minute.
	for i := range 1080 {
		at := t0.Add(time.Duration(i) * 10 * time.Second)
		s.Add(scan("d", at, map[string]ferry.Value{"p": ferry.FloatValue(float64(i / 6))}))
	}
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		from, to time.Duration
		step     time.Duration
		wantStep time.Duration
		wantN    int
	}{
		{"10 minutes auto: raw", 0, 10 * time.Minute, 0, 0, 60},
		{"1 hour auto: raw", 0, time.Hour, 0, 0, 360},
		{"3 hours auto: 1m rollups", 0, 3 * time.Hour, 0, time.Minute, 180},
		{"7 days auto: 6m buckets", 0, 7 * 24 * time.Hour, 0, 6 * time.Minute, 30},
		{"asked 5m", 0, 3 * time.Hour, 5 * time.Minute, 5 * time.Minute, 36},
		{"asked 90s: 1m", 0, time.Hour, 90 * time.Second, time.Minute, 60},
		{"asked 1s: raw over 3h", 0, 3 * time.Hour, time.Second, 0, 1080},
		{"range in the middle", time.Hour, 2 * time.Hour, time.Minute, time.Minute, 60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Query(Query{Device: "d", Point: "p", From: t0.Add(tt.from), To: t0.Add(tt.to), Step: tt.step})
			if err != nil {
				t.Fatal(err)
			}
			if got.Step != tt.wantStep || len(got.Points) != tt.wantN {
				t.Fatalf("step %v, %d points; want %v, %d", got.Step, len(got.Points), tt.wantStep, tt.wantN)
			}
			if tt.wantStep > 0 {
				p := got.Points[0]
				m := float64(tt.from / time.Minute)
				if !p.Time.Equal(t0.Add(tt.from)) || p.Min != m || p.Count != uint32(6*(tt.wantStep/time.Minute)) {
					t.Errorf("first bucket %+v: want time %v, min %v", p, t0.Add(tt.from), m)
				}
			}
		})
	}
	// Auto over a range raw samples no longer cover: rollups.
	c.t = t0.Add(25 * time.Hour)
	if got, _ := s.Query(Query{Device: "d", Point: "p", From: t0, To: t0.Add(time.Hour)}); got.Step != time.Minute || len(got.Points) != 60 {
		t.Errorf("past raw retention: step %v, %d points; want 1m, 60", got.Step, len(got.Points))
	}
	if got, _ := s.Query(Query{Device: "d", Point: "nope", From: t0, To: t0.Add(time.Hour)}); len(got.Points) != 0 {
		t.Errorf("unknown point: %d points", len(got.Points))
	}
	if _, err := s.Query(Query{Device: "d", Point: "p", From: t0, To: t0}); err == nil {
		t.Error("empty range: no error")
	}
}

// TestEvictionBySize: with a small max_size, the history stays within it
// (file and stored bytes), the oldest partitions go first, the newest
// stay, and the evictions are counted.
func TestEvictionBySize(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.MaxSize = 2 << 20
	cfg.Rollups = 365 * 24 * time.Hour
	cfg.Raw = 365 * 24 * time.Hour
	start := t0
	c := &clock{start}
	reg := prometheus.NewRegistry()
	s, err := Open(dir, cfg, Options{Now: c.now, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// 20 points, one sample every 30 s, for 2 days, committed every
	// simulated 10 minutes.
	pts := map[string]ferry.Value{}
	for h := range 48 * 6 {
		for i := range 20 {
			at := start.Add(time.Duration(h)*10*time.Minute + time.Duration(i)*30*time.Second)
			for p := range 20 {
				pts["p"+string(rune('a'+p%26))+string(rune('a'+p/26))] = ferry.FloatValue(float64(h))
			}
			s.Add(scan("d", at, pts))
		}
		c.t = start.Add(time.Duration(h+1) * 10 * time.Minute)
		if err := s.Commit(); err != nil {
			t.Fatal(err)
		}
		if b := s.Bytes(); b > cfg.limit() {
			t.Fatalf("after step %d: %d bytes stored, limit %d", h, b, cfg.limit())
		}
		if fs := s.FileSize(); fs > int64(cfg.MaxSize)+int64(cfg.MaxSize)/8 {
			t.Fatalf("after step %d: file is %d bytes, max_size %d", h, fs, cfg.MaxSize)
		}
	}
	st := s.db.Stats()
	var size int64
	_ = s.db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil })
	t.Logf("file %d, tx size %d, free pages %d pending %d, tracked %d", s.FileSize(), size, st.FreePageN, st.PendingPageN, s.Bytes())
	if n := testutil.ToFloat64(s.m.evicted); n == 0 {
		t.Error("no eviction counted")
	}
	// The newest hour is whole, raw and rolled up; the first hour is gone.
	end := start.Add(48 * time.Hour)
	raw, _ := s.Query(Query{Device: "d", Point: "paa", From: end.Add(-time.Hour), To: end, Step: time.Second})
	if len(raw.Points) != 120 {
		t.Errorf("last hour: %d raw samples, want 120", len(raw.Points))
	}
	first, _ := s.Query(Query{Device: "d", Point: "paa", From: start, To: start.Add(time.Hour), Step: time.Minute})
	if len(first.Points) != 0 {
		t.Errorf("first hour: %d rollups kept, want it evicted", len(first.Points))
	}
	s.wmu.Lock()
	if op, _ := oldest(s.rawBytes); op <= start.Unix() {
		t.Errorf("oldest raw hour %v is the first", time.Unix(op, 0))
	}
	s.wmu.Unlock()
	// A reopen counts the same bytes as were tracked.
	before := s.Bytes()
	s.Close()
	s2 := open(t, dir, cfg, c)
	defer s2.Close()
	if after := s2.Bytes(); after != before {
		t.Errorf("bytes after reopen %d, before %d", after, before)
	}
}

// TestRetention: raw hours past history.raw and rollup days past
// history.rollups are dropped.
func TestRetention(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.Raw = 2 * time.Hour
	cfg.Rollups = 48 * time.Hour
	c := &clock{t0}
	s := open(t, dir, cfg, c)
	defer s.Close()
	s.Add(scan("d", t0, map[string]ferry.Value{"p": ferry.FloatValue(1)}))
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	c.t = t0.Add(4 * time.Hour)
	s.Add(scan("d", c.t, map[string]ferry.Value{"p": ferry.FloatValue(2)}))
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	raw, _ := s.Query(Query{Device: "d", Point: "p", From: t0, To: c.t.Add(time.Second), Step: time.Second})
	roll, _ := s.Query(Query{Device: "d", Point: "p", From: t0, To: c.t.Add(time.Second), Step: time.Minute})
	if len(raw.Points) != 1 || len(roll.Points) != 2 {
		t.Fatalf("after 4h: %d raw, %d rollups; want 1 and 2", len(raw.Points), len(roll.Points))
	}
	c.t = t0.Add(4 * 24 * time.Hour)
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	roll, _ = s.Query(Query{Device: "d", Point: "p", From: t0, To: c.t, Step: time.Minute})
	if len(roll.Points) != 0 {
		t.Fatalf("after 4 days: %d rollups, want 0", len(roll.Points))
	}
}

// TestAlertsSurviveRestart: raise, ack (with who) and clear are kept
// across a restart, searchable, newest first, and bounded by max_alerts.
func TestAlertsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.MaxAlerts = 5
	c := &clock{t0}
	s := open(t, dir, cfg, c)
	a := ferry.Alert{ID: "a1", Rule: "hot", Device: "oven", Point: "temp", Severity: ferry.SeverityCritical, Value: ferry.FloatValue(301), Message: "oven too hot", Since: t0, Time: t0}
	s.Alert(a)
	ack := a
	ack.State, ack.Time, ack.Labels = ferry.AlertAcknowledged, t0.Add(time.Minute), map[string]string{"acknowledged_by": "alice"}
	s.Alert(ack)
	other := ferry.Alert{ID: "b1", Rule: "low", Device: "pump", Point: "flow", Severity: ferry.SeverityWarning, Since: t0.Add(90 * time.Second), Time: t0.Add(90 * time.Second)}
	s.Alert(other)
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	clr := ack
	clr.State, clr.Time = ferry.AlertCleared, t0.Add(2*time.Minute)
	s.Alert(clr)
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = open(t, dir, cfg, c)
	defer s.Close()
	all, err := s.Alerts(AlertQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 4 || all[0].State != "cleared" || all[3].State != "raised" {
		t.Fatalf("after restart: %+v", all)
	}
	tests := []struct {
		name string
		q    AlertQuery
		want []string // states, newest first
	}{
		{"device", AlertQuery{Device: "oven"}, []string{"cleared", "acknowledged", "raised"}},
		{"state", AlertQuery{State: "acknowledged"}, []string{"acknowledged"}},
		{"severity", AlertQuery{Severity: "warning"}, []string{"raised"}},
		{"who acked", AlertQuery{Text: "ALICE"}, []string{"cleared", "acknowledged"}},
		{"text in message", AlertQuery{Text: "too hot"}, []string{"cleared", "acknowledged", "raised"}},
		{"time range", AlertQuery{From: t0.Add(30 * time.Second), To: t0.Add(2 * time.Minute)}, []string{"raised", "acknowledged"}},
		{"limit", AlertQuery{Limit: 1}, []string{"cleared"}},
		{"nothing", AlertQuery{Rule: "none"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Alerts(tt.q)
			if err != nil {
				t.Fatal(err)
			}
			var states []string
			for _, a := range got {
				states = append(states, a.State)
			}
			if len(states) != len(tt.want) {
				t.Fatalf("got %v, want %v", states, tt.want)
			}
			for i := range states {
				if states[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", states, tt.want)
				}
			}
		})
	}
	// The bound: two more make six, the oldest goes.
	for i := range 2 {
		x := other
		x.Time = t0.Add(time.Duration(3+i) * time.Minute)
		s.Alert(x)
	}
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	all, _ = s.Alerts(AlertQuery{})
	if len(all) != 5 || all[4].State != "acknowledged" {
		t.Fatalf("bounded to 5: %d, oldest %+v", len(all), all[len(all)-1])
	}
}

// TestReadOnly: a stopped ferry's file opens read-only; a running one's
// (locked) gives ErrLocked.
func TestReadOnly(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir, testConfig(), Options{ReadOnly: true}); !os.IsNotExist(err) {
		t.Fatalf("no file: %v", err)
	}
	c := &clock{t0.Add(time.Minute)}
	s := open(t, dir, testConfig(), c)
	s.Add(scan("d", t0, map[string]ferry.Value{"p": ferry.FloatValue(7)}))
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	ro, err := Open(dir, testConfig(), Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := ro.Query(Query{Device: "d", Point: "p", From: t0, To: t0.Add(time.Minute)})
	if len(got.Points) != 1 || got.Points[0].Last != 7 {
		t.Fatalf("read-only: %+v", got)
	}
	ro.Close()
	if _, err := os.Stat(filepath.Join(dir, FileName)); err != nil {
		t.Fatal(err)
	}
}

// TestStringsSkippedAndDevicesFilter: strings are counted, not kept; a
// devices list keeps only those devices.
func TestStringsSkippedAndDevicesFilter(t *testing.T) {
	cfg := testConfig()
	cfg.Devices = []string{"keep"}
	c := &clock{t0.Add(time.Minute)}
	s := open(t, t.TempDir(), cfg, c)
	defer s.Close()
	s.Add(scan("keep", t0, map[string]ferry.Value{"s": ferry.StringValue("x"), "b": ferry.BoolValue(true)}))
	s.Add(scan("other", t0, map[string]ferry.Value{"p": ferry.FloatValue(1)}))
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(s.m.skipped); n != 1 {
		t.Errorf("skipped %v, want 1", n)
	}
	if got, _ := s.Query(Query{Device: "keep", Point: "b", From: t0, To: t0.Add(time.Minute)}); len(got.Points) != 1 || got.Points[0].Last != 1 {
		t.Errorf("bool: %+v", got.Points)
	}
	if got, _ := s.Query(Query{Device: "other", Point: "p", From: t0, To: t0.Add(time.Minute)}); len(got.Points) != 0 {
		t.Errorf("filtered device kept: %+v", got.Points)
	}
}
