package devstat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
)

func TestStateChangesLoggedOnce(t *testing.T) {
	var logs bytes.Buffer
	lg := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	d := m.Device("modbus", "press1", "tcp://x:502", lg, nil)

	for i := 0; i < 3; i++ {
		d.Lost(fmt.Errorf("dial: %w", syscall.ECONNREFUSED))
	}
	for i := 0; i < 3; i++ {
		d.Connected()
	}
	d.Lost(io.EOF)
	d.Lost(io.EOF)
	d.Connected()

	out := logs.String()
	for _, want := range []string{"cannot connect", "connected", "connection lost", "connection back"} {
		key := "msg=" + want + " "
		if strings.Contains(want, " ") {
			key = "msg=\"" + want + "\""
		}
		if n := strings.Count(out, key); n != 1 {
			t.Errorf("%q logged %d times, want once:\n%s", want, n, out)
		}
	}
	st := d.Status()
	if !st.Connected || st.Errors[ferry.ReasonConnRefused] != 3 || st.Errors[ferry.ReasonDisconnected] != 2 {
		t.Fatalf("status %+v", st)
	}
	if got := testutil.ToFloat64(m.errs.WithLabelValues("modbus", "press1", "connection_refused")); got != 3 {
		t.Fatalf("errors counter %v", got)
	}
	if got := testutil.ToFloat64(m.connected.WithLabelValues("modbus", "press1")); got != 1 {
		t.Fatalf("connected gauge %v", got)
	}
}

func TestPolledAndForget(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	d := m.Device("opcua", "boiler", "opc.tcp://x", nil, nil)
	samples := []ferry.Sample{{Quality: ferry.GoodQuality}, {Quality: ferry.GoodQuality}, {Quality: ferry.BadQuality("x")}}
	d.Polled(time.Now(), 5*time.Millisecond, samples)
	if got := testutil.ToFloat64(m.points.WithLabelValues("opcua", "boiler", "good")); got != 2 {
		t.Fatalf("good points %v", got)
	}
	if got := testutil.ToFloat64(m.points.WithLabelValues("opcua", "boiler", "bad")); got != 1 {
		t.Fatalf("bad points %v", got)
	}
	d.Forget()
	n, err := testutil.GatherAndCount(reg, "ferry_device_points")
	if err != nil || n != 0 {
		t.Fatalf("after Forget: %d series, %v", n, err)
	}
}

// TestReported counts a scan emitted without a poll and sets the points by
// quality, without a poll duration.
func TestReported(t *testing.T) {
	m := NewMetrics(nil)
	d := m.Device("mqtt", "env", "tcp://x", nil, nil)
	d.Polled(time.Now(), time.Millisecond, []ferry.Sample{{Quality: ferry.GoodQuality}, {Quality: ferry.GoodQuality}})
	d.Reported(BadSamples(nil, "env", []string{"a", "b"}, ferry.ReasonConnRefused, time.Now()))
	if got := testutil.ToFloat64(m.scans.WithLabelValues("mqtt", "env")); got != 2 {
		t.Errorf("scans %v, want 2", got)
	}
	if g, b := testutil.ToFloat64(m.points.WithLabelValues("mqtt", "env", "good")), testutil.ToFloat64(m.points.WithLabelValues("mqtt", "env", "bad")); g != 0 || b != 2 {
		t.Errorf("points good %v bad %v, want 0 and 2", g, b)
	}
	if st := d.Status(); st.PollDuration != time.Millisecond {
		t.Errorf("status %+v: a report changed the poll duration", st)
	}
}

// TestMetricsForget removes one device's series by name (a device a
// reload removed) and leaves the others.
func TestMetricsForget(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	gone := m.Device("modbus", "press1", "tcp://a", nil, nil)
	kept := m.Device("modbus", "press2", "tcp://b", nil, nil)
	for _, d := range []*Device{gone, kept} {
		d.Connected()
		d.Lost(errors.New("x"))
		d.Polled(time.Now(), time.Millisecond, []ferry.Sample{{Quality: ferry.GoodQuality}})
		d.Overrun()
	}
	m.Forget("modbus", "press1")
	for _, name := range []string{"ferry_device_connected", "ferry_device_poll_duration_seconds", "ferry_device_errors_total",
		"ferry_device_points", "ferry_device_poll_overruns_total", "ferry_device_scans_total"} {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var devices []string
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, s := range mf.GetMetric() {
				for _, l := range s.GetLabel() {
					if l.GetName() == "device" && !slices.Contains(devices, l.GetValue()) {
						devices = append(devices, l.GetValue())
					}
				}
			}
		}
		if !slices.Equal(devices, []string{"press2"}) {
			t.Errorf("%s: series of %v after forgetting press1, want press2 only", name, devices)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{&net.OpError{Op: "read", Err: timeoutErr{}}, ferry.ReasonTimeout},
		{context.DeadlineExceeded, ferry.ReasonTimeout},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, ferry.ReasonConnRefused},
		{fmt.Errorf("read: %w", io.EOF), ferry.ReasonDisconnected},
		{syscall.ECONNRESET, ferry.ReasonDisconnected},
		{&net.DNSError{Err: "no such host", Name: "plc"}, "dns"},
		{errors.New("weird"), "error"},
		{fmt.Errorf("read: %w", reasonErr("BadSessionIdInvalid")), "BadSessionIdInvalid"},
	}
	for _, tt := range tests {
		if got := Reason(tt.err); got != tt.want {
			t.Errorf("Reason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestBadSamples(t *testing.T) {
	now := time.Now()
	s := BadSamples(make([]ferry.Sample, 5), "d", []string{"a", "b"}, ferry.ReasonTimeout, now)
	if len(s) != 2 || s[1].Point != "b" || s[0].Quality.Status != ferry.Bad || s[0].Quality.Reason != ferry.ReasonTimeout || !s[0].Time.Equal(now) {
		t.Fatalf("%+v", s)
	}
}

type reasonErr string

func (e reasonErr) Error() string  { return "status " + string(e) }
func (e reasonErr) Reason() string { return string(e) }
