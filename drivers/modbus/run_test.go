package modbus

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/devstat"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// linkGoroutines counts goroutines running this package's link code.
func linkGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "drivers/modbus.(*link).run(")
}

// TestRunLifecycle: Run refuses to run twice at once, returns soon after
// its context ends even while a request hangs, leaves no goroutine
// behind, and can run again.
func TestRunLifecycle(t *testing.T) {
	b := newBank()
	b.fill(1, 0, 10, func(a int) uint16 { return 5 })
	srv := startServer(t, b)
	d := dev("plc", srv.URL(), 1, 20*time.Millisecond, hr("x", 0, "uint16"))
	d.Config.Timeout = 300 * time.Millisecond
	drv := newDriver(t, Options{}, d)

	for round := 0; round < 2; round++ {
		col := newCollector()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- drv.Run(ctx, col.emit) }()
		col.waitFor(t, "plc", "good", allGood)
		if err := drv.Run(ctx, col.emit); !errors.Is(err, ErrRunning) {
			t.Fatalf("second Run: %v, want ErrRunning", err)
		}
		slow := b.slowCount()
		b.setDelay(2 * time.Second) // the next request hangs past its timeout
		testutil.WaitFor(t, 5*time.Second, "a request hanging", func() bool { return b.slowCount() > slow })
		if took := testutil.StopRun(t, cancel, done, 5*time.Second); took > time.Second {
			t.Errorf("Run took %v to return after cancel (timeout 300ms)", took)
		}
		if n := linkGoroutines(); n != 0 {
			t.Fatalf("%d link goroutines left after Run", n)
		}
		b.setDelay(0)
	}
}

// TestRequestDelay: the link stays silent for request_delay before each
// request to a device that needs it.
func TestRequestDelay(t *testing.T) {
	b := newBank()
	b.fill(1, 0, 100, func(a int) uint16 { return 1 })
	srv := startServer(t, b)
	var points []Point
	for a := 0; a < 5; a++ {
		points = append(points, hr("x"+itoa(a), uint16(20*a), "uint16"))
	}
	d := dev("slowpoke", srv.URL(), 1, time.Hour, points...)
	d.Config.MaxGap = 0
	d.Config.RequestDelay = 30 * time.Millisecond
	drv := newDriver(t, Options{}, d)
	col := newCollector()
	stop := run(t, drv, col)
	col.waitFor(t, "slowpoke", "good", allGood)
	stop()
	reqs := b.requests()
	if len(reqs) != 5 {
		t.Fatalf("%d requests", len(reqs))
	}
	for i := 1; i < len(reqs); i++ {
		if g := reqs[i].at.Sub(reqs[i-1].at); g < 30*time.Millisecond {
			t.Errorf("requests %d and %d %v apart, want >= 30ms", i-1, i, g)
		}
	}
}

// TestDeviceStatus reports each device with its link and state.
func TestDeviceStatus(t *testing.T) {
	b := newBank()
	b.fill(1, 0, 10, func(a int) uint16 { return 1 })
	srv := startServer(t, b)
	drv := newDriver(t, Options{}, dev("plc", srv.URL(), 1, 20*time.Millisecond, hr("x", 0, "uint16")),
		dev("gone", "tcp://127.0.0.1:1", 1, 20*time.Millisecond, hr("x", 0, "uint16")))
	col := newCollector()
	stop := run(t, drv, col)
	col.waitFor(t, "plc", "good", allGood)
	col.waitFor(t, "gone", "refused", func(s ferry.Scan) bool { return s.Samples[0].Quality.Reason == ferry.ReasonConnRefused })
	stop()
	st := drv.DeviceStatus()
	if len(st) != 2 || st[0].Device != "plc" || !st[0].Connected || st[0].Protocol != "modbus" || st[0].Endpoint != srv.URL() || st[0].LastPoll.IsZero() {
		t.Errorf("plc status %+v", st[0])
	}
	if st[1].Connected || !strings.Contains(st[1].LastError, "connection refused") || st[1].Endpoint != "tcp://127.0.0.1:1" {
		t.Errorf("gone status %+v", st[1])
	}
}

// TestForget removes every series of the driver's devices and links.
func TestForget(t *testing.T) {
	b := newBank()
	b.fill(1, 0, 50, func(a int) uint16 { return 1 })
	srv := startServer(t, b)
	reg := prometheus.NewRegistry()
	m, ds := NewMetrics(reg), devstat.NewMetrics(reg)
	drv := newDriver(t, Options{Metrics: m, Devices: ds}, dev("plc", srv.URL(), 1, 20*time.Millisecond, hr("x", 0, "uint16"), hr("y", 40, "uint16")))
	col := newCollector()
	stop := run(t, drv, col)
	col.waitFor(t, "plc", "good", allGood)
	stop()
	mfs, err := reg.Gather()
	if err != nil || len(mfs) < 5 {
		t.Fatalf("%d families before Forget: %v", len(mfs), err)
	}
	drv.Forget()
	mfs, err = reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if len(mf.GetMetric()) > 0 {
			t.Errorf("%s still has %d series", mf.GetName(), len(mf.GetMetric()))
		}
	}
}
