package command

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
	"github.com/ferry-edge/ferry/buffer/buffertest"
	"github.com/ferry-edge/ferry/internal/codec"
)

// recWriter is a ferry.Writer that records what it is asked to write and
// answers with err (or the value it got, read back). It stands in for a
// driver in the command path's own tests; drivers' writes are tested
// against real servers in their packages and end to end in
// internal/gateway.
type recWriter struct {
	mu     sync.Mutex
	writes []ferry.WriteRequest
	err    error
	back   *ferry.Value // read back instead of the value written
	block  chan struct{}
}

func (w *recWriter) Write(ctx context.Context, req ferry.WriteRequest) (ferry.WriteResult, error) {
	w.mu.Lock()
	w.writes = append(w.writes, req)
	err, back, block := w.err, w.back, w.block
	w.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ferry.WriteResult{}, fmt.Errorf("write %s.%s: %w", req.Device, req.Point, ferry.ErrWriteUnknown)
		}
	}
	res := ferry.WriteResult{ReadBack: req.Value, Time: time.Now()}
	if len(req.Args) > 0 {
		res = ferry.WriteResult{Outputs: []ferry.Value{ferry.StringValue("started"), ferry.IntValue(int64(len(req.Args)))}, Time: time.Now()}
	}
	if back != nil {
		res.ReadBack = *back
	}
	return res, err
}

func (w *recWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.writes)
}

func f64(f float64) *float64 { return &f }

// env is a Service over a real buffer in a temporary directory.
type env struct {
	t      *testing.T
	dir    string
	buf    *buffer.Buffer
	svc    *Service
	w      *recWriter
	cfg    Config
	points map[string]ferry.PointInfo
	values map[string]ferry.Sample
	now    time.Time
	mu     sync.Mutex
	audits []ferry.Alert
}

func testPoints() map[string]ferry.PointInfo {
	return map[string]ferry.PointInfo{
		"press.setpoint": {Device: "press", Point: "setpoint", Type: "float32",
			Write: &ferry.WriteSpec{Min: f64(0), Max: f64(100)}},
		"press.mode": {Device: "press", Point: "mode", Type: "uint16",
			Write: &ferry.WriteSpec{Allowed: []string{"1", "2", "5"}}},
		"press.run": {Device: "press", Point: "run", Type: "bool",
			Write: &ferry.WriteSpec{Interlock: "line_speed == 0 && cell.door_closed"}},
		"press.reset": {Device: "press", Point: "reset", Type: "bool",
			Write: &ferry.WriteSpec{RateLimit: time.Hour}},
		"press.line_speed": {Device: "press", Point: "line_speed", Type: "float32"},
		"cell.door_closed": {Device: "cell", Point: "door_closed", Type: "bool"},
	}
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), w: &recWriter{}, points: testPoints(), values: map[string]ferry.Sample{},
		now: time.Date(2026, 12, 7, 14, 0, 0, 0, time.UTC)}
	e.cfg.SetDefaults()
	e.cfg.Enabled = true
	e.open()
	return e
}

func (e *env) open() {
	e.t.Helper()
	buf := buffertest.Open(e.t, e.dir, buffer.Options{Gateway: "gw1"}, nil)
	e.buf = buf
	svc, err := New(Options{
		Store:   buf,
		Gateway: "gw1",
		Config: func() Config {
			e.mu.Lock()
			defer e.mu.Unlock()
			return e.cfg
		},
		Point: func(d, p string) (ferry.PointInfo, bool) {
			e.mu.Lock()
			defer e.mu.Unlock()
			info, ok := e.points[d+"."+p]
			return info, ok
		},
		Method: func(d, name string) bool { return d == "press" && name == "start_recipe" },
		Writer: func(d string) (ferry.Writer, error) {
			if d != "press" && d != "cell" {
				return nil, fmt.Errorf("device %q: %w", d, ferry.ErrUnknownDevice)
			}
			return e.w, nil
		},
		Value: func(d, p string) (ferry.Sample, bool) {
			e.mu.Lock()
			defer e.mu.Unlock()
			s, ok := e.values[d+"."+p]
			return s, ok
		},
		Audit: func(a ferry.Alert) {
			e.mu.Lock()
			e.audits = append(e.audits, a)
			e.mu.Unlock()
		},
		Now: func() time.Time {
			e.mu.Lock()
			defer e.mu.Unlock()
			return e.now
		},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := svc.Recover(); err != nil {
		e.t.Fatal(err)
	}
	e.svc = svc
}

// reopen closes the buffer (as a crash would leave it: committed state
// only) and opens a new Service on it.
func (e *env) reopen() {
	e.t.Helper()
	if err := e.buf.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

func (e *env) set(key string, v ferry.Value, q ferry.Quality) {
	e.mu.Lock()
	e.values[key] = ferry.Sample{Value: v, Quality: q}
	e.mu.Unlock()
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

func (e *env) do(req string) ferry.CommandReply {
	e.t.Helper()
	return e.svc.Handle(context.Background(), []byte(req), ViaNATS, "")
}

func req(id, dev, pt string, value any) string {
	v, _ := json.Marshal(value)
	b, _ := json.Marshal(map[string]any{"id": id, "device": dev, "point": pt, "value": json.RawMessage(v)})
	return string(b)
}

// upstream reads every audit event in the buffer's alerts lane (what the
// uplink would ship), acknowledging nothing.
func (e *env) upstream() []ferry.Alert {
	e.t.Helper()
	if err := e.buf.Flush(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	var out []ferry.Alert
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		recs, err := e.buf.Next(ctx, 1000, 1<<20)
		cancel()
		if err != nil || len(recs) == 0 {
			break
		}
		done := false
		for _, r := range recs {
			if r.Lane != ferry.LaneAlerts {
				done = true
				continue
			}
			_, a, err := codec.DecodeAlert(r.Data)
			if err != nil {
				e.t.Fatal(err)
			}
			out = append(out, a)
		}
		e.buf.Ack(recs...)
		if done {
			break
		}
	}
	return out
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
