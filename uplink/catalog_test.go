package uplink

import (
	"strconv"
	"testing"

	"github.com/ferry-edge/ferry"
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
