package buffer

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
)

func TestMetrics(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	reg := prometheus.NewRegistry()
	b := openT(t, dir, testConfig(), Options{Registerer: reg, Now: clk.Now})
	for i := 0; i < 3; i++ {
		if err := appendWait(t, b, scan("d", t0, 4)); err != nil {
			t.Fatal(err)
		}
	}
	b.AppendAlert(fixedAlert(1))
	flush(t, b)
	recs := next(t, b, 2, 1<<20) // the alert and one telemetry record
	if err := b.Ack(recs...); err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	clk.Add(90 * time.Second)

	want := `
# HELP ferry_buffer_acked_total Records deleted after the upstream acknowledged them, by lane.
# TYPE ferry_buffer_acked_total counter
ferry_buffer_acked_total{lane="alerts"} 1
ferry_buffer_acked_total{lane="telemetry"} 1
# HELP ferry_buffer_appended_total Records committed to the buffer, by lane.
# TYPE ferry_buffer_appended_total counter
ferry_buffer_appended_total{lane="alerts"} 1
ferry_buffer_appended_total{lane="telemetry"} 3
# HELP ferry_buffer_oldest_age_seconds Age of the oldest stored record, by lane (0 when empty).
# TYPE ferry_buffer_oldest_age_seconds gauge
ferry_buffer_oldest_age_seconds{lane="alerts"} 0
ferry_buffer_oldest_age_seconds{lane="telemetry"} 90
# HELP ferry_buffer_records Records stored, by lane.
# TYPE ferry_buffer_records gauge
ferry_buffer_records{lane="alerts"} 0
ferry_buffer_records{lane="telemetry"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"ferry_buffer_acked_total", "ferry_buffer_appended_total", "ferry_buffer_oldest_age_seconds", "ferry_buffer_records"); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, name := range []string{
		"ferry_buffer_records", "ferry_buffer_bytes", "ferry_buffer_oldest_age_seconds", "ferry_buffer_dropped_total",
		"ferry_buffer_appended_total", "ferry_buffer_acked_total", "ferry_buffer_commits_total", "ferry_buffer_commit_batch_samples",
		"ferry_buffer_commit_duration_seconds", "ferry_buffer_file_bytes", "ferry_buffer_queue_length", "ferry_buffer_deduplicated_total",
	} {
		if !got[name] {
			t.Errorf("metric %s is missing", name)
		}
	}
	if n := testutil.ToFloat64(b.m.commits); n < 3 {
		t.Errorf("commits_total %v, want at least 3", n)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP ferry_buffer_dropped_total Records (or, for queue_full and disk_error, scans and alerts) dropped, by lane and reason: size, age, queue_full, corrupt, disk_error, closed.
# TYPE ferry_buffer_dropped_total counter
`+droppedZeros()), "ferry_buffer_dropped_total"); err != nil {
		t.Fatal(err)
	}
	// Close unregisters, so that a reopen can register again.
	b.Close()
	b2 := openT(t, dir, testConfig(), Options{Registerer: reg, Now: clk.Now})
	if st := b2.Stats(); st.Lanes[ferry.LaneTelemetry].Records != 2 {
		t.Fatalf("after reopen: %+v", st.Lanes)
	}
}

func droppedZeros() string {
	var s strings.Builder
	for _, l := range []string{"alerts", "telemetry"} {
		for _, r := range []string{reasonAge, reasonCorrupt, reasonDiskError, reasonQueueFull, reasonSize} {
			s.WriteString(`ferry_buffer_dropped_total{lane="` + l + `",reason="` + r + `"} 0` + "\n")
		}
	}
	return s.String()
}
