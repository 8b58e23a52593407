package buffer

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestOpenLogsNextSequences: the "buffer opened" line names the sequence
// the first record of this run gets in each lane, at the first open and
// after a reopen (where the lanes jump past the floor file), so that a
// consumer can tell the jump between runs from a lost record.
func TestOpenLogsNextSequences(t *testing.T) {
	dir := t.TempDir()
	re := regexp.MustCompile(`msg="buffer opened".* next_alert_seq=(\d+) next_telemetry_seq=(\d+)`)
	for run := 1; run <= 2; run++ {
		var out syncBuffer
		b := openT(t, dir, testConfig(), Options{Logger: slog.New(slog.NewTextHandler(&out, nil))})
		m := re.FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("run %d: no next sequences in the log:\n%s", run, out.String())
		}
		nextAlert, _ := strconv.ParseUint(m[1], 10, 64)
		nextTel, _ := strconv.ParseUint(m[2], 10, 64)
		if err := appendWait(t, b, scan("dev", time.Now(), 3)); err != nil {
			t.Fatal(err)
		}
		b.AppendAlert(ferry.Alert{Rule: "r", Device: "dev", Point: "p0", Severity: ferry.SeverityWarning, State: ferry.AlertRaised, Time: time.Now()})
		if err := b.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		recs, err := b.Next(ctx, 10, 1<<20)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		got := map[ferry.Lane]uint64{}
		for _, r := range recs {
			if _, ok := got[r.Lane]; !ok {
				got[r.Lane] = r.Seq
			}
		}
		if got[ferry.LaneTelemetry] != nextTel || got[ferry.LaneAlerts] != nextAlert {
			t.Errorf("run %d: first records have seqs alerts %d, telemetry %d; the log said %d, %d",
				run, got[ferry.LaneAlerts], got[ferry.LaneTelemetry], nextAlert, nextTel)
		}
		if err := b.Ack(recs...); err != nil {
			t.Fatal(err)
		}
		if err := b.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
