package uplink

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// TestPublish sends telemetry of two devices and alerts, and checks
// subjects, headers and payloads in the stream, the catalog in its own
// stream, and that the Source is empty afterwards.
func TestPublish(t *testing.T) {
	srv := testpeer.NATS(t)
	src := newMemSource("gw1")
	t0 := time.Date(2025, 3, 1, 10, 0, 0, 123456789, time.UTC)
	press := ferry.Scan{Device: "press3", Time: t0, Samples: []ferry.Sample{
		{Point: "oil_temp", Value: ferry.FloatValue(float64(float32(81.3))), Time: t0},
		{Point: "running", Value: ferry.BoolValue(true), Time: t0},
		{Point: "count", Value: ferry.IntValue(-42), Time: t0},
		{Point: "big", Value: ferry.UintValue(math.MaxUint64), Time: t0},
		{Point: "label", Value: ferry.StringValue("line \"3\"\n"), Time: t0},
		{Point: "dead", Quality: ferry.BadQuality(ferry.ReasonTimeout), Time: t0},
		{Point: "nan", Value: ferry.FloatValue(math.NaN()), Quality: ferry.UncertainQuality("sensor"), Time: t0.Add(-time.Millisecond)},
	}}
	press2 := scan("press3", t0.Add(time.Second), 3, 1)
	env := scan("env", t0, 2, 20)
	recs := []ferry.Record{
		src.addScans("cfg1", "press3", press, press2),
		src.addScans("cfg1", "env", env),
		src.addAlert("cfg1", alert(1)),
	}
	reg := prometheus.NewRegistry()
	u := newTestUplink(t, testConfig(srv.URL()), src, reg)
	u.SetCatalog(Catalog{ConfigVersion: "cfg1", Points: []ferry.PointInfo{
		{Device: "press3", Point: "oil_temp", Protocol: "modbus", Source: "unit 1 holding 100", Type: "float32", Unit: "degC", Scale: 0.1},
		{Device: "env", Point: "temperature", Protocol: "mqtt", Source: "sensors/env temp"},
		{Device: "press3", Point: "running", Protocol: "modbus", Source: "unit 1 coil 5", Type: "bool"},
	}})
	runUplink(t, u, src)
	src.waitEmpty(t, 10*time.Second)
	waitFor(t, 5*time.Second, "catalog", func() bool { return metric(t, reg, "ferry_uplink_catalog_published_total") == 1 })
	if err := u.Err(); err != nil {
		t.Fatalf("Err() = %v, want nil", err)
	}

	_, js := testpeer.Connect(t, srv.URL())
	msgs := streamMsgs(t, js, "FERRY")
	seqs := checkExactlyOnce(t, msgs, recs)
	if seqs[recs[2].ID] > seqs[recs[0].ID] {
		t.Errorf("alert at stream seq %d after telemetry at %d", seqs[recs[2].ID], seqs[recs[0].ID])
	}
	wantSubj := map[string]string{
		recs[0].ID: "ferry.lyon.gw1.telemetry.press3",
		recs[1].ID: "ferry.lyon.gw1.telemetry.env",
		recs[2].ID: "ferry.lyon.gw1.alerts",
	}
	for _, m := range msgs {
		id := m.Headers().Get(nats.MsgIdHdr)
		if m.Subject() != wantSubj[id] {
			t.Errorf("%s on subject %s, want %s", id, m.Subject(), wantSubj[id])
		}
		for k, want := range map[string]string{HeaderContentType: "application/json", HeaderVersion: "1.2.3", HeaderConfigVersion: "cfg1"} {
			if got := m.Headers().Get(k); got != want {
				t.Errorf("%s: header %s = %q, want %q", id, k, got, want)
			}
		}
		validateWire(t, m.Headers().Get(HeaderKind), m.Data())
		dm, err := Decode(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		switch id {
		case recs[0].ID:
			tm := dm.Telemetry
			if tm == nil || tm.Gateway != "gw1" || tm.Site != "lyon" || tm.Device != "press3" || tm.ConfigVersion != "cfg1" || len(tm.Scans) != 2 {
				t.Fatalf("press3 message: %+v", tm)
			}
			checkScan(t, tm.Scans[0], press)
			checkScan(t, tm.Scans[1], press2)
			if !strings.Contains(string(m.Data()), `{"name":"oil_temp","value":81.3}`) {
				t.Errorf("float32 81.3 not written as 81.3: %s", m.Data())
			}
		case recs[1].ID:
			checkScan(t, dm.Telemetry.Scans[0], env)
		case recs[2].ID:
			a := dm.Alert
			want := alert(1)
			if a == nil || a.ID != want.ID || a.Rule != want.Rule || a.State != "raised" || a.Severity != "critical" ||
				!a.Value.Equal(want.Value) || a.Labels["line"] != "3" || a.Message != want.Message || !a.Time.Equal(want.Time) {
				t.Errorf("alert message: %+v", a)
			}
		}
	}

	// The catalog is in its own stream, one per gateway: a second one
	// replaces the first.
	u.SetCatalog(Catalog{ConfigVersion: "cfg2", Points: []ferry.PointInfo{{Device: "env", Point: "temperature", Protocol: "mqtt", Source: "sensors/env temp"}}})
	waitFor(t, 5*time.Second, "second catalog", func() bool { return metric(t, reg, "ferry_uplink_catalog_published_total") == 2 })
	cat := streamMsgs(t, js, "FERRY_CATALOG")
	if len(cat) != 1 {
		t.Fatalf("catalog stream holds %d messages, want 1", len(cat))
	}
	// Compressed as the batches are (zstd by default), the header naming it.
	if got := cat[0].Headers().Get(HeaderCompression); got != CompressionZstd {
		t.Errorf("catalog %s header %q, want %q", HeaderCompression, got, CompressionZstd)
	}
	plain, err := decompress(cat[0].Headers().Get(HeaderCompression), cat[0].Data())
	if err != nil {
		t.Fatal(err)
	}
	validateWire(t, KindCatalog, plain)
	dm, err := Decode(cat[0].Subject(), cat[0].Headers(), cat[0].Data())
	if err != nil {
		t.Fatal(err)
	}
	if cat[0].Subject() != "ferry.lyon.gw1.catalog" || dm.Catalog.ConfigVersion != "cfg2" || len(dm.Catalog.Devices) != 1 || dm.Catalog.Devices[0].Points[0].Source != "sensors/env temp" {
		t.Errorf("catalog %s: %+v", cat[0].Subject(), dm.Catalog)
	}

	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"ferry_uplink_published_total", []string{"lane", "telemetry"}, 2},
		{"ferry_uplink_published_total", []string{"lane", "alerts"}, 1},
		{"ferry_uplink_acked_total", nil, 3},
		{"ferry_uplink_samples_total", nil, 12},
		{"ferry_uplink_duplicates_total", nil, 0},
		{"ferry_uplink_inflight", nil, 0},
		{"ferry_uplink_connected", nil, 1},
		{"ferry_uplink_ack_latency_seconds", nil, 3},
	} {
		if got := metric(t, reg, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if metric(t, reg, "ferry_uplink_bytes_total") == 0 {
		t.Error("ferry_uplink_bytes_total is 0")
	}
}

// checkScan compares a decoded scan with the scan that was buffered.
func checkScan(t *testing.T, got ScanMessage, want ferry.Scan) {
	t.Helper()
	if !got.Time.Equal(want.Time) || len(got.Points) != len(want.Samples) {
		t.Fatalf("scan at %v with %d points, want %v with %d", got.Time, len(got.Points), want.Time, len(want.Samples))
	}
	for i, p := range got.Points {
		w := want.Samples[i]
		wv := w.Value
		if f := wv.Float64(); wv.Kind() == ferry.KindFloat && (math.IsNaN(f) || math.IsInf(f, 0)) {
			wv = ferry.StringValue(specialFloat(f))
		}
		same := p.Value.Equal(wv)
		if !same && wv.Kind() == ferry.KindFloat && p.Value.Kind() == ferry.KindFloat && float64(float32(wv.Float64())) == wv.Float64() {
			// Written with the digits of the float32 it came from.
			same = float32(p.Value.Float64()) == float32(wv.Float64())
		}
		if p.Name != w.Point || !same || p.Quality != w.Quality.Status || p.Reason != w.Quality.Reason || !p.Time.Equal(w.Time) {
			t.Errorf("point %d: got %+v, want %+v", i, p, w)
		}
	}
}

func specialFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case f > 0:
		return "+Inf"
	}
	return "-Inf"
}

// TestLiveNotStarved defines the drain policy: the Source serves each lane
// oldest first, so live telemetry queues behind a backlog; alerts overtake
// it. While a backlog drains and live records keep arriving, every record
// arrives exactly once, in lane order, an alert raised mid-drain is
// published ahead of the backlog still waiting, and live records arrive
// once the backlog ahead of them is through.
func TestLiveNotStarved(t *testing.T) {
	srv := testpeer.NATS(t)
	src := newMemSource("gw1")
	t0 := time.Now()
	const backlog = 3000
	for i := range backlog {
		src.addScans("v", "press3", scan("press3", t0.Add(time.Duration(i)*time.Millisecond), 10, float64(i)))
	}
	reg := prometheus.NewRegistry()
	cfg := testConfig(srv.URL())
	cfg.BatchSize = 64
	cfg.MaxInflight = 128
	u := newTestUplink(t, cfg, src, reg)
	runUplink(t, u, src)

	// Live data: 200 records while the backlog drains, and an alert once
	// the drain is under way.
	var alertRec ferry.Record
	var live []ferry.Record
	for i := range 200 {
		live = append(live, src.addScans("v", "env", scan("env", time.Now(), 2, float64(i))))
		if i == 20 {
			waitFor(t, 10*time.Second, "drain under way", func() bool { return metric(t, reg, "ferry_uplink_acked_total") > 100 })
			alertRec = src.addAlert("v", alert(1))
		}
		time.Sleep(200 * time.Microsecond) // paces the live producer: not a wait
	}
	src.waitEmpty(t, 30*time.Second)

	_, js := testpeer.Connect(t, srv.URL())
	msgs := streamMsgs(t, js, "FERRY")
	seqs := checkExactlyOnce(t, msgs, src.records())
	// Lane order: telemetry in record order (no failures happened here).
	var prev uint64
	for _, r := range src.records() {
		if r.Lane != ferry.LaneTelemetry {
			continue
		}
		if s := seqs[r.ID]; s < prev {
			t.Fatalf("telemetry %s at stream seq %d before an older record at %d", r.ID, s, prev)
		} else {
			prev = s
		}
	}
	// The alert overtook the backlog that was still pending.
	overtaken := 0
	for _, r := range src.records() {
		if r.Lane == ferry.LaneTelemetry && seqs[r.ID] > seqs[alertRec.ID] {
			overtaken++
		}
	}
	if overtaken < len(live) {
		t.Errorf("the alert overtook only %d telemetry records; want at least the %d live ones behind the backlog", overtaken, len(live))
	}
	if got := metric(t, reg, "ferry_uplink_inflight"); got != 0 {
		t.Errorf("inflight = %v after the drain", got)
	}
	if src.maxOut > cfg.MaxInflight {
		t.Errorf("the Source had %d records out at once; the window is %d", src.maxOut, cfg.MaxInflight)
	}
}

// TestOutage stops the server while records keep coming and restarts it
// on the same store and port: every record arrives exactly once, and an
// alert raised during the outage is published before the telemetry
// backlog.
func TestOutage(t *testing.T) {
	srv := testpeer.NATS(t)
	src := newMemSource("gw1")
	reg := prometheus.NewRegistry()
	cfg := testConfig(srv.URL())
	cfg.AckTimeout = time.Second
	u := newTestUplink(t, cfg, src, reg)
	u.SetCatalog(Catalog{ConfigVersion: "v", Points: []ferry.PointInfo{{Device: "press3", Point: "p0", Protocol: "modbus", Source: "unit 1 holding 0"}}})
	runUplink(t, u, src)

	ctx, cancel := context.WithCancel(context.Background())
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; ctx.Err() == nil; i++ {
			src.addScans("v", "press3", scan("press3", time.Now(), 5, float64(i)))
			time.Sleep(time.Millisecond) // paces the producer: not a wait
		}
	}()
	defer func() { cancel(); <-produced }()

	waitFor(t, 10*time.Second, "first acks", func() bool { return metric(t, reg, "ferry_uplink_acked_total") > 50 })
	srv.Shutdown()
	waitFor(t, 10*time.Second, "disconnect noticed", func() bool { return u.Err() != nil })
	if got := metric(t, reg, "ferry_uplink_connected"); got != 0 {
		t.Errorf("ferry_uplink_connected = %v during the outage", got)
	}
	// Telemetry buffered during the outage, before and after the alert.
	outageStart := len(src.records())
	waitFor(t, 10*time.Second, "telemetry before the alert", func() bool { return len(src.records()) >= outageStart+100 })
	alertRec := src.addAlert("v", alert(7))
	alertAt := len(src.records())
	waitFor(t, 10*time.Second, "telemetry after the alert", func() bool { return len(src.records()) >= alertAt+100 })
	outageEnd := len(src.records())
	// Publishes failed meanwhile (the client refuses them while it
	// reconnects); Err, which /readyz shows, still names the connection
	// and why it is down, not the refused publish.
	if metric(t, reg, "ferry_uplink_errors_total", "reason", "disconnected") < 1 {
		t.Error("no publish failed during the outage")
	}
	waitFor(t, 10*time.Second, "a reconnect attempt to fail", func() bool {
		err := u.Err()
		return err != nil && strings.Contains(err.Error(), "reconnecting to "+srv.URL()) && strings.Contains(err.Error(), "connection refused")
	})
	if err := u.Err(); strings.Contains(err.Error(), "publish") || strings.Contains(err.Error(), "outbound buffer") {
		t.Errorf("Err during the outage: %v, want the connection's state", err)
	}
	srv.Start()
	waitFor(t, 15*time.Second, "reconnect", func() bool { return u.Err() == nil })
	// The catalog is published again after the reconnect.
	waitFor(t, 10*time.Second, "catalog again", func() bool { return metric(t, reg, "ferry_uplink_catalog_published_total") >= 2 })
	// Live records go through on the new connection before the producer stops.
	acked := metric(t, reg, "ferry_uplink_acked_total")
	waitFor(t, 10*time.Second, "acks after the reconnect", func() bool { return metric(t, reg, "ferry_uplink_acked_total") >= acked+50 })
	cancel()
	<-produced
	src.waitEmpty(t, 20*time.Second)

	_, js := testpeer.Connect(t, srv.URL())
	msgs := streamMsgs(t, js, "FERRY")
	recs := src.records()
	seqs := checkExactlyOnce(t, msgs, recs)
	for _, r := range recs[outageStart:outageEnd] {
		if r.Lane == ferry.LaneTelemetry && seqs[r.ID] < seqs[alertRec.ID] {
			t.Errorf("telemetry %s of the outage at stream seq %d, before the alert at %d", r.ID, seqs[r.ID], seqs[alertRec.ID])
		}
	}
	t.Logf("%d records, %d during the outage; duplicates dropped by the stream: %v; released for retry: %v; reconnects: %v",
		len(recs), outageEnd-outageStart, metric(t, reg, "ferry_uplink_duplicates_total"),
		metric(t, reg, "ferry_uplink_released_total"), metric(t, reg, "ferry_uplink_reconnects_total"))
	if metric(t, reg, "ferry_uplink_reconnects_total") < 1 {
		t.Error("ferry_uplink_reconnects_total is 0")
	}
	if metric(t, reg, "ferry_uplink_errors_total", "reason", "connect") < 1 {
		t.Error("no connect error counted")
	}
}

// TestLostAck crashes ferry between the PubAck and the buffer's delete:
// the restarted uplink sends the records again, and the stream drops them
// as duplicates.
func TestLostAck(t *testing.T) {
	srv := testpeer.NATS(t)
	src := newMemSource("gw1")
	for i := range 50 {
		src.addScans("v", "press3", scan("press3", time.Now(), 4, float64(i)))
	}
	src.addAlert("v", alert(1))

	reg1 := prometheus.NewRegistry()
	u1 := newTestUplink(t, testConfig(srv.URL()), src, reg1)
	ctx, cancel := context.WithCancel(context.Background())
	lost := 0
	src.ackHook = func(recs []ferry.Record) error {
		lost += len(recs)
		cancel() // the process dies here
		return errors.New("killed before the buffer deleted the records")
	}
	if err := u1.Run(ctx); err != nil {
		t.Fatal(err)
	}
	src.crash()
	if lost == 0 {
		t.Fatal("no acknowledgement was lost")
	}
	src.mu.Lock()
	src.ackHook = nil
	src.mu.Unlock()
	if p, _ := src.state(); p != 51 {
		t.Fatalf("%d records pending after the crash, want 51", p)
	}

	reg2 := prometheus.NewRegistry()
	u2 := newTestUplink(t, testConfig(srv.URL()), src, reg2)
	runUplink(t, u2, src)
	src.waitEmpty(t, 10*time.Second)
	_, js := testpeer.Connect(t, srv.URL())
	checkExactlyOnce(t, streamMsgs(t, js, "FERRY"), src.records())
	if got := metric(t, reg2, "ferry_uplink_duplicates_total"); got < float64(lost) {
		t.Errorf("duplicates_total = %v, want at least the %d records whose ack was lost", got, lost)
	}
	for id, n := range src.acks {
		if n != 1 {
			t.Errorf("record %s acknowledged to the Source %d times", id, n)
		}
	}
}

// TestStreamProblems starts with a stream that cannot be used: a clear
// error through Err and a metric, records stay in the Source, retries;
// once the stream is fixed the records arrive.
func TestStreamProblems(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(context.Context, jetstream.JetStream) error
		fix     func(context.Context, jetstream.JetStream) error
		wantErr error
		reason  string
	}{
		{
			name:    "missing",
			setup:   func(context.Context, jetstream.JetStream) error { return nil },
			fix:     createFerryStreams,
			wantErr: ErrStreamNotFound,
			reason:  "stream_absent",
		},
		{
			name: "wrong subjects",
			setup: func(ctx context.Context, js jetstream.JetStream) error {
				_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FERRY", Subjects: []string{"other.>"}})
				return err
			},
			fix: func(ctx context.Context, js jetstream.JetStream) error {
				if err := js.DeleteStream(ctx, "FERRY"); err != nil {
					return err
				}
				return createFerryStreams(ctx, js)
			},
			wantErr: ErrStreamMismatch,
			reason:  "stream",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := testpeer.NATS(t)
			_, js := testpeer.Connect(t, srv.URL())
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := tt.setup(ctx, js); err != nil {
				t.Fatal(err)
			}
			src := newMemSource("gw1")
			rec := src.addScans("v", "press3", scan("press3", time.Now(), 3, 1))
			reg := prometheus.NewRegistry()
			cfg := testConfig(srv.URL())
			cfg.CreateStream = false
			u := newTestUplink(t, cfg, src, reg)
			runUplink(t, u, src)
			waitFor(t, 10*time.Second, "retries", func() bool {
				return metric(t, reg, "ferry_uplink_errors_total", "reason", tt.reason) >= 2
			})
			if err := u.Err(); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Err() = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(u.Err().Error(), "FERRY") {
				t.Errorf("Err() = %q does not name the stream", u.Err())
			}
			if p, f := src.state(); p+f != 1 {
				t.Fatalf("the record left the Source: pending %d, in flight %d", p, f)
			}
			if err := tt.fix(ctx, js); err != nil {
				t.Fatal(err)
			}
			src.waitEmpty(t, 10*time.Second)
			if err := u.Err(); err != nil {
				t.Errorf("Err() = %v after the fix", err)
			}
			checkExactlyOnce(t, streamMsgs(t, js, "FERRY"), []ferry.Record{rec})
		})
	}
}

func createFerryStreams(ctx context.Context, js jetstream.JetStream) error {
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FERRY", Subjects: []string{"ferry.*.*.telemetry.*", "ferry.*.*.alerts"}, Duplicates: 2 * time.Minute}); err != nil {
		return err
	}
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FERRY_CATALOG", Subjects: []string{"ferry.*.*.catalog"}, MaxMsgsPerSubject: 1})
	return err
}

// TestCredentials starts with credentials the server refuses or cannot
// read: a clear error and a metric, records stay, retries; once the
// credentials are fixed the records arrive.
func TestCredentials(t *testing.T) {
	// Two NKey users (test keys made with nkeys.CreateUser); the server
	// knows the first.
	const pub = "UBE36F3HHBAOHLYECRSFSHTQQWX7HCE3VIBOXLVXNY4TLQNW6DWTMYWN"
	rightSeed := []byte("SUABARIYRXCE3VCMUENQDC2NKHW2XIASED6GBAETW6UMZGB5FC3ZZ7EVIU")
	wrongSeed := []byte("SUAP4AXKFIUQELMYRC6PNK5AK44FQ4JQY46PCZDT2PCALW4BTLCAOD4GPE")

	tests := []struct {
		name    string
		server  func(*natsserver.Options)
		config  func(*NATSConfig, string)
		fix     func(*testpeer.NATSServer, string)
		wantErr error
		reason  string
	}{
		{
			name:   "nkey not allowed",
			server: func(o *natsserver.Options) { o.Nkeys = []*natsserver.NkeyUser{{Nkey: pub}} },
			config: func(c *NATSConfig, dir string) {
				c.NKey = filepath.Join(dir, "gw.nk")
				os.WriteFile(c.NKey, wrongSeed, 0o600)
			},
			fix:     func(_ *testpeer.NATSServer, dir string) { os.WriteFile(filepath.Join(dir, "gw.nk"), rightSeed, 0o600) },
			wantErr: nats.ErrAuthorization,
			reason:  "auth",
		},
		{
			name:    "nkey file missing",
			server:  func(o *natsserver.Options) { o.Nkeys = []*natsserver.NkeyUser{{Nkey: pub}} },
			config:  func(c *NATSConfig, dir string) { c.NKey = filepath.Join(dir, "gw.nk") },
			fix:     func(_ *testpeer.NATSServer, dir string) { os.WriteFile(filepath.Join(dir, "gw.nk"), rightSeed, 0o600) },
			wantErr: errCredentials,
			reason:  "credentials",
		},
		{
			name:   "wrong password",
			server: func(o *natsserver.Options) { o.Users = []*natsserver.User{{Username: "gw", Password: "old"}} },
			config: func(c *NATSConfig, _ string) { c.User, c.Password = "gw", "new" },
			fix: func(s *testpeer.NATSServer, _ string) {
				o := s.Options()
				o.Users = []*natsserver.User{{Username: "gw", Password: "new"}}
				if err := s.Server().ReloadOptions(o); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: nats.ErrAuthorization,
			reason:  "auth",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := testpeer.NATS(t, tt.server)
			dir := t.TempDir()
			src := newMemSource("gw1")
			rec := src.addAlert("v", alert(1))
			reg := prometheus.NewRegistry()
			cfg := testConfig(srv.URL())
			tt.config(&cfg, dir)
			u := newTestUplink(t, cfg, src, reg)
			runUplink(t, u, src)
			waitFor(t, 10*time.Second, "retries", func() bool {
				return metric(t, reg, "ferry_uplink_errors_total", "reason", tt.reason) >= 2
			})
			if err := u.Err(); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Err() = %v, want %v", err, tt.wantErr)
			}
			if strings.Contains(u.Err().Error(), "new") || strings.Contains(u.Err().Error(), string(wrongSeed)) {
				t.Errorf("Err() reveals a secret: %v", u.Err())
			}
			if p, _ := src.state(); p != 1 {
				t.Fatalf("the record left the Source before the uplink connected")
			}
			tt.fix(srv, dir)
			src.waitEmpty(t, 10*time.Second)
			_, js := testpeer.Connect(t, srv.URL(), nats.UserInfo("gw", "new"), nkeyOpt(t, dir))
			checkExactlyOnce(t, streamMsgs(t, js, "FERRY"), []ferry.Record{rec})
		})
	}
}

// nkeyOpt authenticates a test client with the seed in dir, if any.
func nkeyOpt(t *testing.T, dir string) nats.Option {
	p := filepath.Join(dir, "gw.nk")
	if _, err := os.Stat(p); err != nil {
		return func(*nats.Options) error { return nil }
	}
	o, err := nats.NkeyOptionFromSeed(p)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestStreamDeletedWhileRunning deletes the stream under a running
// uplink: publishes fail while every record is out of the Source; they go
// back to it, the uplink reports the missing stream and delivers once the
// stream is back.
func TestStreamDeletedWhileRunning(t *testing.T) {
	srv := testpeer.NATS(t)
	_, js := testpeer.Connect(t, srv.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := createFerryStreams(ctx, js); err != nil {
		t.Fatal(err)
	}
	src := newMemSource("gw1")
	reg := prometheus.NewRegistry()
	cfg := testConfig(srv.URL())
	cfg.CreateStream = false
	u := newTestUplink(t, cfg, src, reg)
	runUplink(t, u, src)
	first := src.addScans("v", "press3", scan("press3", time.Now(), 3, 1))
	src.waitEmpty(t, 10*time.Second)

	if err := js.DeleteStream(ctx, "FERRY"); err != nil {
		t.Fatal(err)
	}
	var later []ferry.Record
	for i := range 5 {
		later = append(later, src.addScans("v", "press3", scan("press3", time.Now(), 3, float64(i))))
	}
	waitFor(t, 10*time.Second, "missing stream reported", func() bool { return errors.Is(u.Err(), ErrStreamNotFound) })
	if p, f := src.state(); p+f != 5 {
		t.Fatalf("records lost: %d pending, %d in flight", p, f)
	}
	if err := createFerryStreams(ctx, js); err != nil {
		t.Fatal(err)
	}
	src.waitEmpty(t, 10*time.Second)
	checkExactlyOnce(t, streamMsgs(t, js, "FERRY"), later)
	_ = first
	if metric(t, reg, "ferry_uplink_errors_total", "reason", "no_stream") == 0 {
		t.Error("no no_stream error counted")
	}
}

// TestServerLater starts the uplink before any server listens: the error
// says why (connection refused), records stay, and they arrive once the
// server is up.
func TestServerLater(t *testing.T) {
	// The server binds its port once and is shut down before the uplink
	// starts: nothing listens there until the restart binds it again
	// (nats-server cannot take a listener handed over open).
	srv := testpeer.NATS(t)
	srv.Shutdown()
	src := newMemSource("gw1")
	rec := src.addAlert("v", alert(1))
	reg := prometheus.NewRegistry()
	cfg := testConfig(srv.URL())
	u := newTestUplink(t, cfg, src, reg)
	runUplink(t, u, src)
	waitFor(t, 10*time.Second, "retries", func() bool { return metric(t, reg, "ferry_uplink_errors_total", "reason", "connect") >= 2 })
	if err := u.Err(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Err() = %v, want the dial error", err)
	}
	if p, _ := src.state(); p != 1 {
		t.Fatal("the record left the Source")
	}
	srv.Start()
	src.waitEmpty(t, 10*time.Second)
	_, js := testpeer.Connect(t, srv.URL())
	checkExactlyOnce(t, streamMsgs(t, js, "FERRY"), []ferry.Record{rec})
}
