package uplink

import (
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestSetCatalogKeepsPoints: the uplink keeps the catalog's points as
// handed over (the configuration's), without a copy of its own (issue 20:
// 1.4 MB at 10k points), and builds the catalog message from them.
func TestSetCatalogKeepsPoints(t *testing.T) {
	u, err := New(testConfig("nats://127.0.0.1:1"), newMemSource("gw1"), Options{Gateway: "gw1", Site: "lyon", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	points := make([]ferry.PointInfo, 1000)
	for i := range points {
		points[i] = ferry.PointInfo{Device: "press" + strconv.Itoa(i/500), Point: "p" + strconv.Itoa(i), Protocol: "modbus", Source: "holding " + strconv.Itoa(i)}
	}
	u.SetCatalog(Catalog{ConfigVersion: "v1", Points: points})
	u.catMu.Lock()
	c := u.catalog
	u.catMu.Unlock()
	if len(c.Points) != len(points) || &c.Points[0] != &points[0] {
		t.Fatalf("the uplink holds a copy of the %d points", len(points))
	}
	m := u.catalogMessage(c)
	if len(m.Devices) != 2 || len(m.Devices[1].Points) != 500 || m.Devices[1].Points[7].Source != "holding 507" || m.ConfigVersion != "v1" {
		t.Errorf("catalog message: %d devices, %+v", len(m.Devices), m.Devices[1].Points[7])
	}
}

// TestCatalogOverMaxPayload: a gateway of 20,000 points has a catalog of
// about 1.7 MB of JSON, over NATS's default max_payload of 1 MB. With
// compression (the default) it is published, and decodes to every point;
// without, each try fails with an error that names the sizes and the way
// out, counted under reason "catalog", and the drain is not held up.
func TestCatalogOverMaxPayload(t *testing.T) {
	points := make([]ferry.PointInfo, 20000)
	for i := range points {
		points[i] = ferry.PointInfo{Device: "press" + strconv.Itoa(i/500), Point: "temperature_" + strconv.Itoa(i), Protocol: "modbus",
			Source: "unit 1 holding " + strconv.Itoa(i%500*2), Type: "float32", Unit: "degC", Description: "zone temperature " + strconv.Itoa(i)}
	}
	for _, algo := range []string{CompressionZstd, CompressionS2, CompressionNone} {
		t.Run(algo, func(t *testing.T) {
			srv := testpeer.NATS(t)
			cfg := testConfig(srv.URL())
			cfg.Compression = algo
			reg := prometheus.NewRegistry()
			src := newMemSource("gw1")
			src.addScans("cfg1", "press0", scan("press0", time.Unix(1772352000, 0), 3, 1))
			var logs testutil.SyncBuffer
			u, err := New(cfg, src, Options{Gateway: "gw1", Site: "lyon", Version: "1.2.3", Registerer: reg,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			u.SetCatalog(Catalog{ConfigVersion: "cfg1", Points: points})
			runUplink(t, u, src)
			src.waitEmpty(t, 10*time.Second) // the record went out whatever the catalog did
			_, js := testpeer.Connect(t, srv.URL())
			if algo == CompressionNone {
				waitFor(t, 10*time.Second, "a catalog error", func() bool { return metric(t, reg, "ferry_uplink_errors_total", "reason", "catalog") >= 1 })
				if n := metric(t, reg, "ferry_uplink_catalog_published_total"); n != 0 {
					t.Errorf("%v catalogs published over max_payload", n)
				}
				if l := logs.String(); !strings.Contains(l, "over the server's max_payload of 1048576") || !strings.Contains(l, "20000 points") {
					t.Errorf("log does not explain the refused catalog:\n%s", l)
				}
				return
			}
			waitFor(t, 10*time.Second, "catalog", func() bool { return metric(t, reg, "ferry_uplink_catalog_published_total") == 1 })
			cat := streamMsgs(t, js, "FERRY_CATALOG")
			if len(cat) != 1 {
				t.Fatalf("catalog stream holds %d messages", len(cat))
			}
			m, err := Decode(cat[0].Subject(), cat[0].Headers(), cat[0].Data())
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, d := range m.Catalog.Devices {
				n += len(d.Points)
			}
			last := m.Catalog.Devices[len(m.Catalog.Devices)-1]
			if n != len(points) || len(m.Catalog.Devices) != 40 || last.Points[499].Name != "temperature_19999" {
				t.Errorf("decoded catalog: %d devices, %d points", len(m.Catalog.Devices), n)
			}
			t.Logf("%s: %d points in %d bytes on the wire", algo, n, len(cat[0].Data()))
		})
	}
}
