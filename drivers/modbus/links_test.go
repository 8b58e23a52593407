package modbus

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/devstat"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// gaps returns the times between consecutive scans.
func gaps(scans []ferry.Scan) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(scans); i++ {
		out = append(out, scans[i].Time.Sub(scans[i-1].Time))
	}
	return out
}

func maxGap(scans []ferry.Scan) time.Duration {
	g := gaps(scans)
	if len(g) == 0 {
		return 0
	}
	return slices.Max(g)
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[int(p*float64(len(s)-1))]
}

// TestDeadLinksDoNotDelayOthers: one server stops, one answers too slowly;
// the device on the healthy link keeps its interval, the dead ones give
// Bad samples (connection refused, timeout) at theirs, and both recover
// when their servers do. A dropped connection is re-established.
func TestDeadLinksDoNotDelayOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("timing scenario")
	}
	mk := func() *bank {
		b := newBank()
		b.fill(1, 0, 10, func(a int) uint16 { return uint16(a) })
		return b
	}
	ba, bb, bc := mk(), mk(), mk()
	sa, sb, sc := startServer(t, ba), startServer(t, bb), startServer(t, bc)
	a := dev("a", sa.URL(), 1, 40*time.Millisecond, hr("x", 0, "uint16"))
	b := dev("b", sb.URL(), 1, 40*time.Millisecond, hr("x", 0, "uint16"))
	c := dev("c", sc.URL(), 1, 40*time.Millisecond, hr("x", 0, "uint16"))
	c.Config.Timeout = 400 * time.Millisecond
	var logs testutil.SyncBuffer
	lg := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	reg := prometheus.NewRegistry()
	ds := devstat.NewMetrics(reg)
	drv := newDriver(t, Options{Logger: lg, Devices: ds}, a, b, c)
	if len(drv.links) != 3 {
		t.Fatalf("%d links, want 3", len(drv.links))
	}
	col := newCollector()
	stop := run(t, drv, col)
	for _, d := range []string{"a", "b", "c"} {
		col.waitFor(t, d, "first good scan", allGood)
	}

	sb.Stop()
	bc.setDelay(time.Second) // longer than c's timeout
	from := len(col.of("a"))
	bad := func(reason string) func(ferry.Scan) bool {
		return func(s ferry.Scan) bool { return s.Samples[0].Quality.Reason == reason }
	}
	col.waitFor(t, "b", "connection refused", bad(ferry.ReasonConnRefused))
	col.waitFor(t, "c", "timeout", bad(ferry.ReasonTimeout))
	// Watch a for a second of its own scans while b and c fail (a's scan
	// times, not a sleep: a slowed a takes longer to fill the second, with
	// fewer scans and a long gap, which the checks below catch).
	watched := len(col.of("a"))
	testutil.WaitFor(t, 15*time.Second, "a second of a's scans", func() bool {
		s := col.of("a")
		return len(s) > watched && s[len(s)-1].Time.Sub(s[watched].Time) >= time.Second
	})
	aScans := col.of("a")[from:]
	for _, s := range aScans {
		if !allGood(s) {
			t.Fatalf("a went bad while others failed: %+v", s.Samples)
		}
	}
	// c blocks for 400ms per poll; if a waited for it, a gap would be that long.
	if g := maxGap(aScans); g > 250*time.Millisecond {
		t.Errorf("device a had a %v gap between scans (interval 40ms) while other links failed", g)
	}
	if n := len(aScans); n < 15 {
		t.Errorf("device a: %d scans in >1.4s at 40ms", n)
	}
	var bBad int
	for _, s := range col.of("b") {
		if bad(ferry.ReasonConnRefused)(s) {
			bBad++
		}
	}
	if bBad < 10 {
		t.Errorf("dead device b emitted %d Bad scans in >1s at 40ms, want them at its interval", bBad)
	}

	sb.Start(t)
	bc.setDelay(0)
	col.waitFor(t, "b", "recovery after the server returns", allGood)
	col.waitFor(t, "c", "recovery after the server is fast again", allGood)

	// Dropped connections: the server restarts under a; a reconnects.
	sa.Stop()
	sa.Start(t)
	col.waitFor(t, "a", "bad or good after a drop", func(ferry.Scan) bool { return true })
	col.waitFor(t, "a", "recovery after a dropped connection", allGood)
	stop()

	out := logs.String()
	for _, want := range []string{`msg="connection lost"`, `msg="connection back"`} {
		n := 0
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, want) && strings.Contains(line, " device=b ") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s of b logged %d times, want once:\n%s", want, n, out)
		}
	}
	if st := drv.DeviceStatus(); st[1].Errors[ferry.ReasonConnRefused] < 10 || !st[1].Connected {
		t.Errorf("status of b %+v", st[1])
	}
}

// TestTwoUnitsOneLink: two units on one connection at different intervals
// are both served at their rates.
func TestTwoUnitsOneLink(t *testing.T) {
	b := newBank()
	b.fill(1, 0, 10, func(a int) uint16 { return 1 })
	b.fill(2, 0, 10, func(a int) uint16 { return 2 })
	srv := startServer(t, b)
	fast := dev("fast", srv.URL(), 1, 30*time.Millisecond, hr("x", 0, "uint16"))
	slow := dev("slow", srv.URL(), 2, 90*time.Millisecond, hr("x", 0, "uint16"))
	drv := newDriver(t, Options{}, fast, slow)
	if len(drv.links) != 1 {
		t.Fatalf("%d links, want one shared link", len(drv.links))
	}
	col := newCollector()
	stop := run(t, drv, col)
	for len(col.of("slow")) < 12 {
		col.next(t, "slow")
	}
	stop()
	fs, ss := col.of("fast"), col.of("slow")
	if v := sample(t, fs[0], "x").Value.Uint64(); v != 1 {
		t.Errorf("fast read unit %d's value", v)
	}
	if v := sample(t, ss[0], "x").Value.Uint64(); v != 2 {
		t.Errorf("slow read unit %d's value", v)
	}
	ratio := float64(len(fs)) / float64(len(ss))
	if ratio < 2.3 || ratio > 3.7 {
		t.Errorf("fast/slow scans = %d/%d = %.2f, want about 3", len(fs), len(ss), ratio)
	}
	for _, sc := range [][]ferry.Scan{fs, ss} {
		span := sc[len(sc)-1].Time.Sub(sc[0].Time)
		mean := span / time.Duration(len(sc)-1)
		iv := 30 * time.Millisecond
		if sc[0].Device == "slow" {
			iv = 90 * time.Millisecond
		}
		if mean < iv*9/10 || mean > iv*3/2 {
			t.Errorf("%s: mean period %v, interval %v", sc[0].Device, mean, iv)
		}
	}
	if n, m := b.countUnit(1), b.countUnit(2); n != len(fs) || m != len(ss) {
		t.Errorf("server saw %d/%d requests for %d/%d scans", n, m, len(fs), len(ss))
	}
}

// TestRoundRobinBetweenUnits: a unit whose poll takes many slow requests
// does not starve another unit on the same link: requests interleave, so
// the small unit keeps its interval while the big one counts overruns.
func TestRoundRobinBetweenUnits(t *testing.T) {
	if testing.Short() {
		t.Skip("timing scenario")
	}
	b := newBank()
	b.fill(1, 0, 400, func(a int) uint16 { return 1 })
	b.fill(2, 0, 10, func(a int) uint16 { return 2 })
	b.setDelay(4 * time.Millisecond)
	srv := startServer(t, b)
	var many []Point
	for a := 0; a < 40; a++ {
		many = append(many, hr("x"+itoa(a), uint16(10*a), "uint16"))
	}
	big := dev("big", srv.URL(), 1, 100*time.Millisecond, many...)
	big.Config.MaxGap = 0 // 40 requests of ~4ms: a poll takes longer than the interval
	small := dev("small", srv.URL(), 2, 30*time.Millisecond, hr("x", 0, "uint16"))
	reg := prometheus.NewRegistry()
	ds := devstat.NewMetrics(reg)
	drv := newDriver(t, Options{Devices: ds}, big, small)
	col := newCollector()
	stop := run(t, drv, col)
	for len(col.of("small")) < 25 {
		col.next(t, "small")
	}
	stop()
	g := gaps(col.of("small"))
	// A whole poll of big takes >160ms; served in turn, small waits at
	// most one of big's requests.
	if p := percentile(g, 0.9); p > 80*time.Millisecond {
		t.Errorf("small: 90th percentile gap %v (interval 30ms): starved by big's polls; gaps %v", p, g)
	}
	if len(col.of("big")) == 0 {
		t.Fatal("big never finished a poll")
	}
	if v := testpeer.Gather(t, reg).Sum("ferry_device_poll_overruns_total", "device=big"); v < 1 {
		t.Errorf("big: %v overruns counted, want some", v)
	}
	if st := drv.DeviceStatus()[0]; st.PollDuration < 100*time.Millisecond {
		t.Errorf("big's poll took %v; the scenario needs it longer than its interval", st.PollDuration)
	}
}
