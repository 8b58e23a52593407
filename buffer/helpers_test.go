package buffer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/codec"
)

// Source is a copy of uplink.Source: *Buffer must satisfy it (the buffer
// may not import uplink).
type Source interface {
	Next(ctx context.Context, max, maxBytes int) ([]ferry.Record, error)
	Ack(recs ...ferry.Record) error
	Release(recs ...ferry.Record)
}

var _ Source = (*Buffer)(nil)

var t0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

func testConfig() Config {
	var c Config
	c.SetDefaults()
	return c
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// alertLog collects the alerts the buffer hands to Options.Alert.
type alertLog struct {
	mu sync.Mutex
	as []ferry.Alert
}

func (l *alertLog) add(a ferry.Alert) {
	l.mu.Lock()
	l.as = append(l.as, a)
	l.mu.Unlock()
}

func (l *alertLog) rules() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, a := range l.as {
		out = append(out, a.Rule+":"+a.State.String())
	}
	return out
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("BUFFER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func openT(t testing.TB, dir string, cfg Config, opts Options) *Buffer {
	t.Helper()
	if opts.Gateway == "" {
		opts.Gateway = "gw1"
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	b, err := Open(dir, cfg, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// scan returns a scan of device with n float samples.
func scan(device string, at time.Time, n int) ferry.Scan {
	s := ferry.Scan{Device: device, Time: at, Samples: make([]ferry.Sample, n)}
	for i := range s.Samples {
		s.Samples[i] = ferry.Sample{Device: device, Point: fmt.Sprintf("p%d", i), Value: ferry.FloatValue(float64(i) + 0.5), Time: at}
	}
	return s
}

// result records the Done outcome of a scan.
type result struct {
	ch chan error
}

func newResult() *result { return &result{ch: make(chan error, 1)} }

func (r *result) done(err error) { r.ch <- err }

func (r *result) wait(t testing.TB) error {
	t.Helper()
	select {
	case err := <-r.ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Done was not called within 10s")
		return nil
	}
}

// appendWait appends s and waits for its Done.
func appendWait(t testing.TB, b *Buffer, s ferry.Scan) error {
	t.Helper()
	r := newResult()
	s.Done = r.done
	b.AppendScan(s)
	return r.wait(t)
}

func flush(t testing.TB, b *Buffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

// next calls Next with a timeout.
func next(t testing.TB, b *Buffer, max, maxBytes int) []ferry.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	recs, err := b.Next(ctx, max, maxBytes)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return recs
}

// drainAll takes every ready record without acking it.
func drainAll(t testing.TB, b *Buffer) []ferry.Record {
	t.Helper()
	var out []ferry.Record
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		recs, err := b.Next(ctx, 1000, 1<<30)
		cancel()
		if err != nil {
			return out
		}
		out = append(out, recs...)
	}
}

// decodeScans decodes a telemetry record.
func decodeScans(t testing.TB, r ferry.Record) codec.Telemetry {
	t.Helper()
	tel, err := codec.DecodeTelemetry(r.Data)
	if err != nil {
		t.Fatalf("record %s: %v", r.ID, err)
	}
	return tel
}

func decodeAlert(t testing.TB, r ferry.Record) ferry.Alert {
	t.Helper()
	_, a, err := codec.DecodeAlert(r.Data)
	if err != nil {
		t.Fatalf("record %s: %v", r.ID, err)
	}
	return a
}

func seqs(recs []ferry.Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func counterValue(c prometheus.Counter) float64 { return testutil.ToFloat64(c) }
