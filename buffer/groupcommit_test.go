package buffer

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// openGroupCommit opens a buffer whose telemetry commit interval is an
// hour: nothing but a trigger of the group commit commits it.
func openGroupCommit(t *testing.T, maxWaiting int) (*Buffer, func() float64) {
	t.Helper()
	cfg := testConfig()
	cfg.CommitMaxWaiting = maxWaiting
	reg := prometheus.NewRegistry()
	b := openT(t, t.TempDir(), cfg, Options{Registerer: reg, commitInterval: time.Hour})
	flush(t, b) // Open's own first cycle
	commits := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "ferry_buffer_commits_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		t.Fatal("no ferry_buffer_commits_total")
		return 0
	}
	return b, commits
}

// Scans a source waits on (MQTT QoS 1) are committed as soon as
// commit_max_waiting of them wait, not at the end of the interval: the
// broker sends no more until it has acks.
func TestGroupCommitMaxWaiting(t *testing.T) {
	b, commits := openGroupCommit(t, 3)
	c0 := commits()
	var rs []*result
	for i := range 3 {
		r := newResult()
		rs = append(rs, r)
		s := scan("plc", t0.Add(time.Duration(i)*time.Second), 2)
		s.Done = r.done
		b.AppendScan(s)
		if i < 2 {
			// Below the threshold: nothing is committed yet (the
			// interval is an hour).
			select {
			case err := <-r.ch:
				t.Fatalf("scan %d finished (%v) with %d waiting, below commit_max_waiting", i, err, i+1)
			default:
			}
		}
	}
	for i, r := range rs {
		if err := r.wait(t); err != nil {
			t.Fatalf("scan %d: %v", i, err)
		}
	}
	if n := commits() - c0; n != 1 {
		t.Errorf("%v commits for the three scans, want 1 (one group commit)", n)
	}
}

// Telemetry that no source waits on lingers for the interval; an alert
// cuts the linger short (alerts commit at once) and takes the telemetry
// with it in the same commit.
func TestGroupCommitAlertCommitsAtOnce(t *testing.T) {
	b, commits := openGroupCommit(t, 10)
	c0 := commits()
	for i := range 5 {
		b.AppendScan(scan("plc", t0.Add(time.Duration(i)*time.Second), 2))
	}
	if st := b.Stats(); st.QueueLength == 0 {
		t.Fatalf("queue empty right after the appends: %+v", st)
	}
	b.AppendAlert(ferry.Alert{ID: "a1", Rule: "hot", Device: "plc", Point: "t", State: ferry.AlertRaised, Time: t0})
	testutil.WaitFor(t, 10*time.Second, "the alert committed", func() bool { return b.Stats().QueueLength == 0 && commits() > c0 })
	if n := commits() - c0; n != 1 {
		t.Errorf("%v commits, want 1 carrying the alert and the five scans", n)
	}
	lanes := map[ferry.Lane]int{}
	for _, l := range b.Stats().Lanes {
		lanes[l.Lane] = l.Records
	}
	if lanes[ferry.LaneAlerts] != 1 || lanes[ferry.LaneTelemetry] == 0 {
		t.Errorf("lanes after the commit: %v, want the alert and the telemetry", lanes)
	}
}

func TestCommitConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
		waiting  int
		wantErr  bool
	}{
		{"defaults", defaultCommitInterval, defaultCommitMaxWaiting, false},
		{"at once", 0, 1, false},
		{"interval too long", 2 * time.Second, 10, true},
		{"negative interval", -time.Millisecond, 10, true},
		{"every scan at once", 50 * time.Millisecond, 0, false},
		{"negative waiting", 50 * time.Millisecond, -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig()
			c.CommitInterval, c.CommitMaxWaiting = tc.interval, tc.waiting
			if err := c.Validate(); (err != nil) != tc.wantErr {
				t.Fatalf("Validate() = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}

// AppendScanWait waits for room instead of dropping: where AppendScan
// drops the newest scans of a burst that overflows a small queue,
// AppendScanWait stores every one, and nothing is counted as dropped.
func TestAppendScanWaitWaitsForRoom(t *testing.T) {
	const burst = 200
	run := func(wait bool) (stored int, drops uint64) {
		cfg := testConfig()
		b := openT(t, t.TempDir(), cfg, Options{Registerer: prometheus.NewRegistry(), QueueSize: 4})
		var rs []*result
		for i := range burst {
			r := newResult()
			rs = append(rs, r)
			s := scan("plc", t0.Add(time.Duration(i)*time.Second), 1)
			s.Done = r.done
			if wait {
				b.AppendScanWait(s)
			} else {
				b.AppendScan(s)
			}
		}
		for _, r := range rs {
			_ = r.wait(t)
		}
		return storedScans(t, b), b.queueDrops.Load()
	}
	if stored, drops := run(false); drops == 0 || stored == burst {
		t.Fatalf("control: AppendScan stored %d of %d with %d drops; the burst must overflow the queue", stored, burst, drops)
	}
	if stored, drops := run(true); drops != 0 || stored != burst {
		t.Fatalf("AppendScanWait stored %d of %d with %d drops, want all and none", stored, burst, drops)
	}
}

// Close ends a wait: AppendScanWait returns, its scan finished.
func TestAppendScanWaitReturnsAfterClose(t *testing.T) {
	b := openT(t, t.TempDir(), testConfig(), Options{QueueSize: 1, commitInterval: time.Hour})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 50 {
			b.AppendScanWait(scan("plc", t0.Add(time.Duration(i)*time.Second), 1))
		}
	}()
	b.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("AppendScanWait still waiting 10 s after Close")
	}
}
