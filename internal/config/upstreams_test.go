package config_test

import (
	"slices"
	"testing"

	"github.com/ferry-edge/ferry/uplink"
)

// The list form of uplink decodes into entries with their names, filters
// and NATS blocks (defaults applied); the map form is the entry "nats".
func TestUplinkListForm(t *testing.T) {
	c, err := load("testdata/upstreams.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	es := c.Uplink.Entries()
	if len(es) != 2 || es[0].Name != "cloud" || es[1].Name != "nats" {
		t.Fatalf("entries %+v, want cloud and nats", es)
	}
	if es[0].NATS.Stream != "CLOUD" || es[1].NATS.Stream != uplink.DefaultStream || es[1].NATS.MaxInflight == 0 {
		t.Fatalf("streams %q %q (max_inflight %d): defaults not applied", es[0].NATS.Stream, es[1].NATS.Stream, es[1].NATS.MaxInflight)
	}
	if !es[0].Filter.All() {
		t.Fatalf("cloud's filter %+v, want all", es[0].Filter)
	}
	f := es[1].Filter
	if f.All() || f.TakesAlerts() || !f.TakesTelemetry() || !f.Device("press3") || !f.Device("oven2") || f.Device("oven3") ||
		!f.Point("oil_temp") || f.Point("speed") || !slices.Equal(f.Points, []string{"*_temp"}) {
		t.Fatalf("site's filter %+v does not match as written", f)
	}
	if c.Uplink.Control() != es[0].NATS {
		t.Fatal("Control is not the first NATS upstream")
	}

	m, err := load("../../configs/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if es := m.Uplink.Entries(); len(es) != 1 || es[0].Name != "nats" || es[0].NATS != m.Uplink.NATS || !es[0].Filter.All() {
		t.Fatalf("map form entries %+v, want one named nats", es)
	}
}
