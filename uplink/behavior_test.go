package uplink

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestShutdown cancels Run in the middle of a drain: Run returns within
// the flush timeout, nothing stays in flight, and every record is either
// in the stream and acknowledged, or back in the Source.
func TestShutdown(t *testing.T) {
	for _, serverDown := range []bool{false, true} {
		name := "server answers"
		if serverDown {
			name = "answers lost"
		}
		t.Run(name, func(t *testing.T) {
			srv := testpeer.NATS(t)
			p := startProxy(t, srv.URL()[len("nats://"):])
			src := newMemSource("gw1")
			for i := range 2000 {
				src.addScans("v", "press3", scan("press3", time.Now(), 5, float64(i)))
			}
			reg := prometheus.NewRegistry()
			cfg := testConfig("nats://" + p.Addr())
			cfg.FlushTimeout = 500 * time.Millisecond
			cfg.AckTimeout = 5 * time.Second
			cfg.MaxInflight = 64
			u := newTestUplink(t, cfg, src, reg)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- u.Run(ctx) }()
			waitFor(t, 10*time.Second, "drain under way", func() bool { return metric(t, reg, "ferry_uplink_acked_total") > 100 })
			if serverDown {
				// Publishes stay unanswered: the flush times out and
				// releases them.
				// Wait until the acks have stopped with records still
				// in flight: replies already past the proxy are in.
				p.DropReplies.Store(true)
				prev := -1.0
				waitFor(t, 10*time.Second, "acks stopped with records in flight", func() bool {
					acked := metric(t, reg, "ferry_uplink_acked_total")
					_, inflight := src.state()
					stopped := acked == prev && inflight > 0
					prev = acked
					return stopped
				})
			}
			if d := testutil.StopRun(t, cancel, done, 10*time.Second); d > cfg.FlushTimeout+5*time.Second || serverDown && d < cfg.FlushTimeout {
				t.Errorf("Run took %v to return, flush_timeout is %v", d, cfg.FlushTimeout)
			}
			pending, inflight := src.state()
			if inflight != 0 {
				t.Fatalf("%d records still in flight", inflight)
			}
			acked := 0
			for _, n := range src.acks {
				acked += n
			}
			if acked+pending != 2000 {
				t.Fatalf("%d acknowledged + %d pending != 2000", acked, pending)
			}
			if serverDown {
				return
			}
			_, js := testpeer.Connect(t, srv.URL())
			stored := map[string]bool{}
			for _, m := range streamMsgs(t, js, "FERRY") {
				stored[m.Headers().Get(nats.MsgIdHdr)] = true
			}
			for id := range src.acks {
				if !stored[id] {
					t.Errorf("record %s acknowledged to the Source but not in the stream", id)
				}
			}
		})
	}
}

// TestCorruptRecord: a record that cannot be decoded is dropped and
// counted; the records around it are delivered.
func TestCorruptRecord(t *testing.T) {
	srv := testpeer.NATS(t)
	src := newMemSource("gw1")
	good1 := src.addScans("v", "press3", scan("press3", time.Now(), 3, 1))
	src.add(ferry.LaneTelemetry, []byte{1, 1, 0, 9, 'x'})
	bad := src.add(ferry.LaneTelemetry, nil)
	good2 := src.addScans("v", "env", scan("env", time.Now(), 3, 1))
	reg := prometheus.NewRegistry()
	u := newTestUplink(t, testConfig(srv.URL()), src, reg)
	runUplink(t, u, src)
	src.waitEmpty(t, 10*time.Second)
	_, js := testpeer.Connect(t, srv.URL())
	checkExactlyOnce(t, streamMsgs(t, js, "FERRY"), []ferry.Record{good1, good2})
	if got := metric(t, reg, "ferry_uplink_errors_total", "reason", "corrupt"); got != 2 {
		t.Errorf("corrupt errors = %v, want 2", got)
	}
	_ = bad
}

// TestSplitLargeRecord: a record larger than the server's max_payload is
// sent in parts with ids <record id>-p<n>; a replay is deduplicated part
// by part.
func TestSplitLargeRecord(t *testing.T) {
	srv := testpeer.NATS(t, func(o *natsserver.Options) { o.MaxPayload = 8 << 10 })
	src := newMemSource("gw1")
	var scans []ferry.Scan
	t0 := time.Now()
	for i := range 40 {
		scans = append(scans, scan("press3", t0.Add(time.Duration(i)*time.Second), 20, float64(i)))
	}
	huge := ferry.Scan{Device: "press3", Time: t0.Add(time.Minute), Samples: []ferry.Sample{
		{Point: "blob", Value: ferry.StringValue(strings.Repeat("x", 20<<10)), Time: t0.Add(time.Minute)},
		{Point: "ok", Value: ferry.FloatValue(1), Time: t0.Add(time.Minute)},
	}}
	scans = append(scans, huge)
	rec := src.addScans("v", "press3", scans...)
	reg := prometheus.NewRegistry()
	u := newTestUplink(t, testConfig(srv.URL()), src, reg)
	runUplink(t, u, src)
	src.waitEmpty(t, 10*time.Second)

	_, js := testpeer.Connect(t, srv.URL())
	msgs := streamMsgs(t, js, "FERRY")
	if len(msgs) < 3 {
		t.Fatalf("%d messages; a %d-byte record should take several", len(msgs), len(rec.Data))
	}
	points := 0
	for i, m := range msgs {
		if want := rec.ID + "-p" + strconv.Itoa(i+1); m.Headers().Get(nats.MsgIdHdr) != want {
			t.Errorf("part %d has id %s, want %s", i+1, m.Headers().Get(nats.MsgIdHdr), want)
		}
		validateWire(t, KindTelemetry, m.Data())
		dm, err := Decode(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if dm.Telemetry.Part != i+1 || dm.Telemetry.Parts != len(msgs) {
			t.Errorf("part %d/%d, want %d/%d", dm.Telemetry.Part, dm.Telemetry.Parts, i+1, len(msgs))
		}
		for _, sc := range dm.Telemetry.Scans {
			for _, p := range sc.Points {
				points++
				if p.Name == "blob" && (p.Quality != ferry.Bad || !p.Value.IsNone()) {
					t.Errorf("oversized sample sent as %+v, want a Bad sample without value", p)
				}
			}
		}
	}
	if points != 40*20+2 {
		t.Errorf("%d points arrived, want %d", points, 40*20+2)
	}
	if metric(t, reg, "ferry_uplink_errors_total", "reason", "too_large") != 1 {
		t.Error("the oversized sample was not counted")
	}

	// A replay of the same record produces the same parts, all dropped.
	src2 := newMemSource("gw1")
	src2.addScans("v", "press3", scans...)
	reg2 := prometheus.NewRegistry()
	u2 := newTestUplink(t, testConfig(srv.URL()), src2, reg2)
	runUplink(t, u2, src2)
	src2.waitEmpty(t, 10*time.Second)
	if got := metric(t, reg2, "ferry_uplink_duplicates_total"); got != float64(len(msgs)) {
		t.Errorf("replay: %v duplicates, want %d", got, len(msgs))
	}
}

// TestDuplicateWindowCheck: a user-managed stream whose duplicate window is
// shorter than ferry needs gets a warning at start; with create_stream the
// stream is updated instead.
func TestDuplicateWindowCheck(t *testing.T) {
	for _, create := range []bool{false, true} {
		t.Run(map[bool]string{false: "managed by the user", true: "create_stream"}[create], func(t *testing.T) {
			srv := testpeer.NATS(t)
			_, js := testpeer.Connect(t, srv.URL())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FERRY", Subjects: []string{"ferry.>"}, Duplicates: 30 * time.Second, AllowRollup: true}); err != nil {
				t.Fatal(err)
			}
			var logs testutil.SyncBuffer
			src := newMemSource("gw1")
			src.addAlert("v", alert(1))
			cfg := testConfig(srv.URL())
			cfg.CreateStream = create
			u, err := New(cfg, src, Options{Gateway: "gw1", Site: "lyon", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			u.SetCatalog(Catalog{ConfigVersion: "c1"})
			runUplink(t, u, src)
			src.waitEmpty(t, 10*time.Second)
			warned := strings.Contains(logs.String(), "duplicate window of 30s, shorter than duplicate_window 2m0s")
			if warned == create {
				t.Errorf("warning logged: %v, want %v\n%s", warned, !create, logs.String())
			}
			s, err := js.Stream(ctx, "FERRY")
			if err != nil {
				t.Fatal(err)
			}
			want := 30 * time.Second
			if create {
				want = 2 * time.Minute
			}
			if got := s.CachedInfo().Config.Duplicates; got != want {
				t.Errorf("stream duplicate window %v, want %v", got, want)
			}
			// The catalog shares the stream, which allows roll-ups: it is
			// published with Nats-Rollup: sub.
			waitFor(t, 5*time.Second, "catalog", func() bool {
				m, err := s.GetLastMsgForSubject(ctx, "ferry.lyon.gw1.catalog")
				return err == nil && m.Header.Get(jetstream.MsgRollup) == jetstream.MsgRollupSubject
			})
		})
	}
}

// TestReconnectWhileIdle drops the connection while the uplink has nothing
// to send: once the client has reconnected, Err (/readyz) and
// ferry_uplink_connected must say so, and records flow again.
func TestReconnectWhileIdle(t *testing.T) {
	srv := testpeer.NATS(t)
	src := newMemSource("gw1")
	reg := prometheus.NewRegistry()
	u := newTestUplink(t, testConfig(srv.URL()), src, reg)
	runUplink(t, u, src)

	waitFor(t, 10*time.Second, "ready", func() bool { return u.Err() == nil })
	srv.Shutdown()
	waitFor(t, 10*time.Second, "disconnect noticed", func() bool { return u.Err() != nil })
	srv.Start()
	waitFor(t, 10*time.Second, "reconnect", func() bool { return metric(t, reg, "ferry_uplink_reconnects_total") >= 1 })
	src.addScans("v", "press3", scan("press3", time.Now(), 5, 1))
	src.waitEmpty(t, 10*time.Second)
	waitFor(t, 5*time.Second, "ready after the reconnect", func() bool { return u.Err() == nil })
	if got := metric(t, reg, "ferry_uplink_connected"); got != 1 {
		t.Errorf("ferry_uplink_connected = %v after the reconnect, records flowing", got)
	}
}
