package gateway

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
	"github.com/ferry-edge/ferry/internal/plantsim"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink"
)

// TestSiteTopology runs the topology plants use (docs/sites.md) with real
// servers: two gateways ship to a site nats-server (JetStream domain
// "lyon", stream SITE capturing ferry.lyon.>) that is a leaf node of a
// hub of three nodes (domain "hub", stream HUB with three replicas
// sourcing SITE across the domain). The hub link goes down for a while:
// the gateways keep shipping to the site; after it returns, every record
// of both gateways is in HUB exactly once, and nothing is lost.
func TestSiteTopology(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-node hub, a site and two gateways")
	}
	start := time.Now()
	hub := testpeer.NATSHub(t, 3, "hub")
	site := testpeer.NATSSite(t, hub, "lyon")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sjs := site.JetStream(t)
	if _, err := sjs.CreateStream(ctx, jetstream.StreamConfig{
		Name: "SITE", Subjects: []string{"ferry.lyon.>"}, Storage: jetstream.FileStorage,
		Duplicates: 2 * time.Minute, AllowRollup: true,
	}); err != nil {
		t.Fatal(err)
	}
	hjs := hub.JetStream(t)
	if _, err := hjs.CreateStream(ctx, jetstream.StreamConfig{
		Name: "HUB", Storage: jetstream.FileStorage, Replicas: 3, Duplicates: 2 * time.Minute,
		Sources: []*jetstream.StreamSource{{Name: "SITE", Domain: "lyon"}},
	}); err != nil {
		t.Fatal(err)
	}

	p := startPlant(t, 2)
	gws := []string{"gw1", "gw2"}
	dirs := map[string]string{}
	var hs []*harness
	for i, gw := range gws {
		dirs[gw] = t.TempDir()
		path := filepath.Join(t.TempDir(), "ferry.yaml")
		testutil.WriteFile(t, path, siteConfig(gw, dirs[gw], p.Presses[i], site.URL()))
		hs = append(hs, startDaemon(t, path))
	}
	stopped := false
	stopAll := func() {
		if stopped {
			return
		}
		stopped = true
		for _, h := range hs {
			if err := h.stop(); err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	t.Cleanup(stopAll)

	// Both gateways reach the hub through the site.
	testutil.Eventually(t, 20*time.Second, "records of both gateways in HUB", func() error {
		ids := streamIDs(t, hub.URLs(), "HUB")
		for _, gw := range gws {
			if countPrefix(ids, gw+"-") == 0 {
				return fmt.Errorf("none of %s among %d records", gw, len(ids))
			}
		}
		return nil
	})

	site.HubDown(t)
	downAt := time.Now()
	hubAtDown := streamInfo(t, hjs, "HUB").State.Msgs
	acked := map[string]float64{}
	for i, h := range hs {
		acked[gws[i]], _ = h.metric("ferry_uplink_acked_total")
	}
	// The gateways keep shipping to the site: each gets a good number of
	// records acknowledged by SITE while the hub is away.
	testutil.Eventually(t, 20*time.Second, "gateways shipping to the site with the hub down", func() error {
		for i, h := range hs {
			v, _ := h.metric("ferry_uplink_acked_total")
			if v < acked[gws[i]]+40 {
				return fmt.Errorf("%s: %v records acknowledged since the hub went down", gws[i], v-acked[gws[i]])
			}
			if c, _ := h.metric("ferry_uplink_connected"); c != 1 {
				return fmt.Errorf("%s: uplink not connected", gws[i])
			}
		}
		return nil
	})
	if n := streamInfo(t, hjs, "HUB").State.Msgs; n != hubAtDown {
		t.Errorf("HUB went from %d to %d messages with the hub link down", hubAtDown, n)
	}
	outage := time.Since(downAt)

	site.HubUp(t)
	upAt := time.Now()
	// Stop the gateways, so that what they produced is final: every record
	// is in SITE or still in a buffer.
	stopAll()
	siteInfo := streamInfo(t, sjs, "SITE")
	testutil.Eventually(t, 30*time.Second, "HUB caught up with SITE", func() error {
		hi := streamInfo(t, hjs, "HUB")
		if hi.State.Msgs != siteInfo.State.Msgs {
			return fmt.Errorf("HUB holds %d messages, SITE %d", hi.State.Msgs, siteInfo.State.Msgs)
		}
		return nil
	})
	catchUp := time.Since(upAt)

	siteIDs := streamIDs(t, site.URL(), "SITE")
	hubIDs := streamIDs(t, hub.URLs(), "HUB")
	total := 0
	committed := map[string]int{}
	for _, gw := range gws {
		in, err := buffer.Inspect(dirs[gw])
		if err != nil {
			t.Fatal(err)
		}
		buffered := map[string]bool{}
		for _, lane := range []ferry.Lane{ferry.LaneAlerts, ferry.LaneTelemetry} {
			err := in.Records(lane, 0, func(rec ferry.Record, err error) error {
				buffered[rec.ID] = true
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		last := in.Sequences
		in.Close()
		// Ids of one run are consecutive, from the next sequences the
		// buffer logged when it opened to the last it stored. Every record
		// the gateway accepted is in SITE or its buffer, and every one in
		// SITE is in HUB exactly once.
		first := firstSeqs(t, hs[slices.Index(gws, gw)])
		for _, lane := range []ferry.Lane{ferry.LaneAlerts, ferry.LaneTelemetry} {
			if last[lane]+1 < first[lane] {
				t.Fatalf("%s %s: last sequence %d, first of the run %d", gw, lane, last[lane], first[lane])
			}
			committed[gw] += int(last[lane] + 1 - first[lane])
			for seq := first[lane]; seq <= last[lane]; seq++ {
				id := ferry.RecordID(gw, lane, seq)
				total++
				if siteIDs[id] == 0 && !buffered[id] {
					t.Errorf("record %s is neither in SITE nor in %s's buffer", id, gw)
				}
				if siteIDs[id] > 1 {
					t.Errorf("record %s is %d times in SITE", id, siteIDs[id])
				}
				if siteIDs[id] > 0 && hubIDs[id] != 1 {
					t.Errorf("record %s is in SITE, and %d times in HUB", id, hubIDs[id])
				}
			}
		}
		if committed[gw] < 40 {
			t.Errorf("%s committed %d records, too few to show anything", gw, committed[gw])
		}
		if len(buffered) > 0 {
			t.Logf("%s: %d records still buffered at the stop", gw, len(buffered))
		}
	}
	for id, n := range hubIDs {
		if siteIDs[id] != 1 && n > 0 {
			t.Errorf("record %s is in HUB %d times, in SITE %d times", id, n, siteIDs[id])
		}
	}
	t.Logf("%d records of 2 gateways; hub link down %v (SITE took them), HUB caught up %v after it returned; %d records in HUB, %d messages; test took %v",
		total, outage.Round(time.Millisecond), catchUp.Round(time.Millisecond), len(hubIDs), siteInfo.State.Msgs, time.Since(start).Round(time.Millisecond))
}

// firstSeqs returns the first sequence of each lane in this run of the
// daemon, from its "buffer opened" log line.
func firstSeqs(t *testing.T, h *harness) [ferry.NumLanes]uint64 {
	t.Helper()
	var out [ferry.NumLanes]uint64
	lines := h.logs.lines("buffer opened")
	if len(lines) != 1 {
		t.Fatalf("%d \"buffer opened\" log lines, want 1", len(lines))
	}
	for lane, key := range map[ferry.Lane]string{ferry.LaneAlerts: "next_alert_seq", ferry.LaneTelemetry: "next_telemetry_seq"} {
		m := regexp.MustCompile(key + `=(\d+)`).FindStringSubmatch(lines[0])
		if m == nil {
			t.Fatalf("no %s in %q", key, lines[0])
		}
		v, err := strconv.ParseUint(m[1], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		out[lane] = v
	}
	return out
}

// siteConfig is the configuration of gateway gw of site lyon: one press,
// shipping to the site server at url, into the stream the site manages.
func siteConfig(gw, dataDir string, pr *plantsim.Press, url string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "gateway: {id: %s, site: lyon}\n", gw)
	fmt.Fprintf(&b, "data_dir: %s\n", dataDir)
	b.WriteString("log: {level: debug}\n")
	b.WriteString("http: {listen: \"127.0.0.1:0\"}\n")
	fmt.Fprintf(&b, `devices:
  - name: %s
    modbus: {url: "tcp://%s", unit: 1, interval: 50ms, timeout: 500ms}
    points:
      - {name: oil_temp, table: holding, address: %d, type: float32}
      - {name: cycles, table: holding, address: %d, type: uint32}
`, pr.Name, pr.Addr, plantsim.HROilTemp, plantsim.HRCycles)
	fmt.Fprintf(&b, `uplink:
  nats:
    urls: ["%s"]
    stream: SITE
    reconnect_max: 500ms
    connect_timeout: 1s
    batch: {max_bytes: 4KiB, max_delay: 100ms}
`, url)
	return b.String()
}

// streamIDs counts the record ids in stream at url (batches decoded into
// their records); messages without an id (the catalog) are left out.
func streamIDs(t *testing.T, url, stream string) map[string]int {
	t.Helper()
	ids := map[string]int{}
	testpeer.ReadStream(t, url, stream, func(m jetstream.Msg) {
		if m.Headers().Get(nats.MsgIdHdr) == "" {
			return
		}
		all, err := uplink.DecodeAll(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			t.Fatalf("%s message on %s: %v", stream, m.Subject(), err)
		}
		for _, msg := range all {
			if msg.ID != "" {
				ids[msg.ID]++
			}
		}
	})
	return ids
}

func countPrefix(ids map[string]int, prefix string) int {
	n := 0
	for id := range ids {
		if strings.HasPrefix(id, prefix) {
			n++
		}
	}
	return n
}

func streamInfo(t *testing.T, js jetstream.JetStream, name string) *jetstream.StreamInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo()
}
