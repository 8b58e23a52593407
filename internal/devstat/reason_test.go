package devstat

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestReasonChangeLoggedOnce: while a device stays unreachable, a new
// failure reason is a change of state, logged once at Warn; a reason
// already logged in this outage, or a repeat, goes to Debug; Status shows
// the latest reason at every step and none once connected. After a
// reconnection the next outage logs its reasons afresh.
func TestReasonChangeLoggedOnce(t *testing.T) {
	var logs bytes.Buffer
	lg := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d := NewMetrics(prometheus.NewRegistry()).Device("opcua", "cell", "opc.tcp://x:4840", lg, nil)

	count := func(reason string) int {
		return strings.Count(logs.String(), "reason="+reason+" ")
	}
	steps := []struct {
		reason string
		logged int // lines with the reason after the step
	}{
		{"BadCertificateUntrusted", 1},
		{"BadCertificateUntrusted", 1},
		{"BadUserAccessDenied", 1},
		{"BadUserAccessDenied", 1},
		{"BadCertificateUntrusted", 1}, // back to a reason logged in this outage: Debug
		{"BadUserAccessDenied", 1},
	}
	for i, s := range steps {
		d.Lost(reasonErr(s.reason))
		if got := d.Status().Reason; got != s.reason {
			t.Errorf("step %d: Status().Reason = %q, want %q", i, got, s.reason)
		}
		if n := count(s.reason); n != s.logged {
			t.Errorf("step %d: %s logged %d times, want %d:\n%s", i, s.reason, n, s.logged, logs.String())
		}
	}
	if n := strings.Count(logs.String(), `msg="still not connected, for another reason"`); n != 1 {
		t.Errorf("reason change logged %d times, want 1:\n%s", n, logs.String())
	}
	d.Connected()
	if st := d.Status(); st.Reason != "" || !st.Connected {
		t.Errorf("after Connected: reason %q, connected %v", st.Reason, st.Connected)
	}
	d.Lost(reasonErr("BadUserAccessDenied"))
	if n := count("BadUserAccessDenied"); n != 2 {
		t.Errorf("a new outage's reason logged %d times in all, want 2:\n%s", n, logs.String())
	}
}
