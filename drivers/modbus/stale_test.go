package modbus

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
)

// TestStaleTCPFrameDiscarded: a peer that sends, right behind each answer,
// an unsolicited frame carrying the transaction id, unit and function of
// the next request (its data inverted) must not get that frame taken as
// the next answer. The link discards bytes that arrived unasked before it
// sends a request, and counts them.
//
// The peer is a fake (fakeTCPPeer, mode "stale"): no real server library
// sends such a frame; the fault comes from broken gateways and from
// answers that arrive after the request they belong to gave up.
func TestStaleTCPFrameDiscarded(t *testing.T) {
	b := newBank()
	b.fill(1, 0, 4, func(a int) uint16 { return uint16(100 + a) })
	p := &fakeTCPPeer{b: b, mode: "stale"}
	url := startFakeTCPPeer(t, p)
	d := dev("plc", url, 1, 10*time.Millisecond, hr("a", 0, "uint16"), hr("b", 1, "uint16"))
	m := NewMetrics(prometheus.NewRegistry())
	drv := newDriver(t, Options{Metrics: m}, d)
	col := newCollector()
	stop := run(t, drv, col)
	for i := 0; i < 30; i++ {
		s := col.next(t, "plc")
		for _, x := range s.Samples {
			want := map[string]uint64{"a": 100, "b": 101}[x.Point]
			if !x.Quality.IsGood() || x.Value.Kind() != ferry.KindUint || x.Value.Uint64() != want {
				t.Fatalf("scan %d: %s = %v (%v), want %d Good: a stale frame was taken for an answer", i, x.Point, x.Value, x.Quality, want)
			}
		}
	}
	stop()
	link := drv.links[0].name
	if v := testutil.ToFloat64(m.requests.WithLabelValues(link, resultBadFrame)); v != 0 {
		t.Errorf("ferry_modbus_requests_total{result=bad_frame} = %v, want 0: discarding the stale frame keeps the stream in step", v)
	}
	if v := testutil.ToFloat64(m.staleBytes.WithLabelValues(link)); v < 13 {
		t.Errorf("ferry_modbus_stale_bytes_total = %v, want at least one 13-byte frame", v)
	}
}
