package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
	"github.com/ferry-edge/ferry/internal/codec"
	"github.com/ferry-edge/ferry/internal/plantsim"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/internal/web"
)

// Two NATS upstreams, each on its own nats-server and its own cursor in
// the buffer: while one server is down the other keeps receiving; when it
// returns it catches up; in the end each stream holds every record
// exactly once (by record id), the second one with only the points its
// filter takes.
func TestTwoUpstreamsOneDown(t *testing.T) {
	p := startPlant(t, 2)
	scada := testpeer.NATS(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	cfg := plantConfig{DataDir: filepath.Join(dir, "data"), Extra: fmt.Sprintf(`uplink:
  - name: cloud
    nats: {urls: ["%s"], stream: %s, reconnect_max: 500ms, connect_timeout: 1s}
  - name: scada
    nats: {urls: ["%s"], stream: %s, create_stream: true, reconnect_max: 500ms, connect_timeout: 1s}
    filter: {points: [oil_temp, speed]}
`, p.NATS.URL, plantsim.StreamName, scada.URL(), plantsim.StreamName)}
	testutil.WriteFile(t, path, cfg.yaml(p))
	h := startDaemon(t, path)

	acked := func(upstream string) float64 {
		v, _ := h.metric("ferry_buffer_consumer_acked_total", "consumer="+upstream, "lane=telemetry")
		return v
	}
	status := func() map[string]web.UpstreamStatus {
		code, body := h.get("/api/status")
		if code != http.StatusOK {
			t.Fatalf("/api/status: %d %s", code, body)
		}
		var st struct {
			Upstreams []web.UpstreamStatus `json:"upstreams"`
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatal(err)
		}
		out := map[string]web.UpstreamStatus{}
		for _, u := range st.Upstreams {
			out[u.Name] = u
		}
		return out
	}
	waitFor(t, 30*time.Second, "both upstreams to deliver", func() bool { return acked("cloud") > 5 && acked("scada") > 5 })
	if st := status(); !st["cloud"].Connected || !st["scada"].Connected || st["scada"].Kind != "nats" {
		t.Fatalf("status %+v, want both connected", st)
	}
	// Per-upstream uplink metrics carry the upstream label.
	if _, ok := h.metric("ferry_uplink_connected", "upstream=scada"); !ok {
		t.Fatal("no ferry_uplink_connected{upstream=scada}")
	}

	scada.Shutdown()
	waitFor(t, 30*time.Second, "the scada upstream to notice", func() bool { return !status()["scada"].Connected })
	c0, s0 := acked("cloud"), acked("scada")
	// The outage lasts until cloud has delivered 30 more records: the
	// live upstream keeps flowing.
	waitFor(t, 60*time.Second, "cloud to keep delivering", func() bool { return acked("cloud") > c0+30 })
	st := status()
	if acked("scada") != s0 || st["scada"].Pending < 30 || st["scada"].OldestAgeSeconds <= 0 {
		t.Fatalf("scada while down: acked %v → %v, status %+v; want no acks and a backlog", s0, acked("scada"), st["scada"])
	}
	if st["cloud"].Pending > st["scada"].Pending {
		t.Fatalf("cloud's backlog %d above the stopped scada's %d", st["cloud"].Pending, st["scada"].Pending)
	}

	scada.Start()
	waitFor(t, 60*time.Second, "scada to catch up", func() bool {
		st := status()
		return st["scada"].Connected && acked("scada") > s0+30 && st["scada"].Pending < 10
	})
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}

	// What each stream holds, by record id, and what each cursor left.
	type rec struct {
		lane ferry.Lane
		data []byte
	}
	read := func(url string) map[string]rec {
		out := map[string]rec{}
		readStream(t, url, func(id string, lane ferry.Lane, data []byte) {
			if _, dup := out[id]; dup {
				t.Errorf("%s: record %s twice in the stream", url, id)
			}
			out[id] = rec{lane, data}
		})
		return out
	}
	cloudGot, scadaGot := read(p.NATS.URL), read(scada.URL())
	b, err := buffer.Open(cfg.DataDir, h.d.cfg.Buffer, buffer.Options{Gateway: gatewayID, Consumers: []string{"cloud", "scada"}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	left := map[string]map[string]bool{}
	for _, name := range []string{"cloud", "scada"} {
		cur, _ := b.Cursor(name)
		left[name] = map[string]bool{}
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			recs, err := cur.Next(ctx, 1000, 1<<30)
			cancel()
			if err != nil {
				break
			}
			for _, r := range recs {
				left[name][r.ID] = true
			}
		}
	}
	// Every telemetry record is in both (stream or left in the cursor).
	all := map[string]bool{}
	for id, r := range cloudGot {
		if r.lane == ferry.LaneTelemetry {
			all[id] = true
		}
	}
	for id, r := range scadaGot {
		if r.lane == ferry.LaneTelemetry {
			all[id] = true
		}
	}
	missing := 0
	for id := range all {
		_, inCloud := cloudGot[id]
		_, inScada := scadaGot[id]
		if !(inCloud || left["cloud"][id]) || !(inScada || left["scada"][id]) {
			missing++
			if missing < 5 {
				t.Errorf("record %s: cloud %v (left %v), scada %v (left %v)", id, inCloud, left["cloud"][id], inScada, left["scada"][id])
			}
		}
	}
	if missing > 0 || len(all) < 60 {
		t.Fatalf("%d of %d telemetry records missing from an upstream", missing, len(all))
	}
	// scada's records hold only the points of its filter; cloud's all.
	points := func(data []byte) map[string]bool {
		tel, err := codec.DecodeTelemetry(data)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, sc := range tel.Scans {
			for _, s := range sc.Samples {
				out[s.Point] = true
			}
		}
		return out
	}
	for id, r := range scadaGot {
		if r.lane != ferry.LaneTelemetry {
			continue
		}
		if ps := points(r.data); len(ps) != 2 || !ps["oil_temp"] || !ps["speed"] {
			t.Fatalf("scada's record %s holds points %v, want oil_temp and speed", id, ps)
		}
		if c, ok := cloudGot[id]; ok && len(points(c.data)) != 4 {
			t.Fatalf("cloud's record %s holds points %v, want all 4", id, points(c.data))
		}
	}
	t.Logf("%d telemetry records; cloud stream %d, scada stream %d; left: cloud %d, scada %d", len(all), len(cloudGot), len(scadaGot), len(left["cloud"]), len(left["scada"]))
}
