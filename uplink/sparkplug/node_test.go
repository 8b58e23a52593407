package sparkplug

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink/sparkplug/sphost"
)

func ptr(f float64) *float64 { return &f }

var testCatalog = []ferry.PointInfo{
	{Device: "press", Point: "pressure", Protocol: "modbus", Source: "unit 1 holding 100", Type: "float32", Unit: "bar",
		Write: &ferry.WriteSpec{Min: ptr(0), Max: ptr(10)}},
	{Device: "press", Point: "count", Protocol: "modbus", Source: "unit 1 holding 102", Type: "int16"},
	{Device: "press", Point: "running", Protocol: "modbus", Source: "unit 1 coil 1", Type: "bool"},
	{Device: "oven", Point: "temp", Protocol: "opcua", Source: "ns=2;s=Oven.Temp", Unit: "°C"},
}

// births returns the metrics of the last DBIRTH of device by name.
func lastBirth(t *testing.T, h *sphost.Host, device string) map[string]birthMetric {
	t.Helper()
	var out map[string]birthMetric
	for _, m := range h.Messages("DBIRTH") {
		if m.Device != device {
			continue
		}
		out = map[string]birthMetric{}
		for _, mt := range m.Payload.Metrics {
			bm := birthMetric{alias: mt.GetAlias(), dtype: mt.GetDatatype(), null: mt.GetIsNull(), props: map[string]string{}}
			for k, v := range sphost.PropMap(mt.Properties) {
				bm.props[k] = fmt.Sprint(v)
			}
			out[mt.GetName()] = bm
		}
	}
	if out == nil {
		t.Fatalf("no DBIRTH of %s", device)
	}
	return out
}

type birthMetric struct {
	alias uint64
	dtype uint32
	null  bool
	props map[string]string
}

func values(h *sphost.Host, device, name string) []any {
	var out []any
	for _, v := range h.Values(device, name) {
		out = append(out, v.Value)
	}
	return out
}

// TestBirthsAndData: NBIRTH and a DBIRTH per catalog device with every
// point's name, alias, data type and properties; DDATA by exception
// refers to those aliases with the born types; a new point rebirths its
// device.
func TestBirthsAndData(t *testing.T) {
	r := newRig(t, func(c *Config) { c.NodeProperties = map[string]string{"Site": "north"} })
	r.node.SetCatalog(testCatalog)
	r.run()
	r.waitBorn(0)
	testutil.WaitFor(t, 10*time.Second, "DBIRTH of both devices", func() bool { return len(r.host.Messages("DBIRTH")) == 2 })

	nb := r.host.Messages("NBIRTH")[0].Payload
	names := map[string]bool{}
	for _, m := range nb.Metrics {
		names[m.GetName()] = true
	}
	for _, want := range []string{MetricBdSeq, MetricRebirth, MetricAlert, "Properties/Site"} {
		if !names[want] {
			t.Errorf("NBIRTH lacks %s: %v", want, names)
		}
	}
	press := lastBirth(t, r.host, "press")
	if len(press) != 3 {
		t.Fatalf("press DBIRTH has %d metrics, want 3: %v", len(press), press)
	}
	if m := press["pressure"]; m.dtype != TypeDouble || !m.null || m.props["engUnit"] == "" || m.props["writeMax"] == "" {
		t.Errorf("pressure birth = %+v, want Double, null, engUnit and writeMax", m)
	}
	if m := press["count"]; m.dtype != TypeInt64 || m.props["readOnly"] == "" {
		t.Errorf("count birth = %+v, want Int64 and readOnly", m)
	}
	if m := press["running"]; m.dtype != TypeBoolean {
		t.Errorf("running birth = %+v, want Boolean", m)
	}

	t0 := time.Now()
	r.add("press", t0, good("pressure", ferry.FloatValue(1.5)), good("count", ferry.IntValue(-3)), good("running", ferry.BoolValue(true)))
	r.add("press", t0.Add(time.Second), good("pressure", ferry.FloatValue(1.5)), good("count", ferry.IntValue(-3)), good("running", ferry.BoolValue(true)))
	r.add("press", t0.Add(2*time.Second), good("pressure", ferry.FloatValue(2.5)), good("count", ferry.IntValue(-3)), good("running", ferry.BoolValue(true)))
	r.add("oven", t0, good("temp", ferry.FloatValue(180)))
	testutil.WaitFor(t, 10*time.Second, "buffer drained", func() bool { return r.pending() == 0 })
	testutil.WaitFor(t, 10*time.Second, "pressure values", func() bool { return len(values(r.host, "press", "pressure")) == 2 })
	if got := values(r.host, "press", "pressure"); !slices.Equal(got, []any{1.5, 2.5}) {
		t.Errorf("pressure = %v, want [1.5 2.5] (the repeat left out by exception)", got)
	}
	if got := values(r.host, "press", "count"); !slices.Equal(got, []any{int64(-3)}) {
		t.Errorf("count = %v, want [-3]", got)
	}
	if got := values(r.host, "press", "running"); !slices.Equal(got, []any{true}) {
		t.Errorf("running = %v, want [true]", got)
	}
	if got := values(r.host, "oven", "temp"); !slices.Equal(got, []any{180.0}) {
		t.Errorf("temp = %v, want [180]", got)
	}
	if n := counter(t, r.reg, "ferry_sparkplug_records_total", "result=unchanged"); n != 1 {
		t.Errorf("records unchanged = %v, want 1", n)
	}

	// A point the catalog did not have: the device is born again with it.
	r.add("press", t0.Add(3*time.Second), good("pressure", ferry.FloatValue(2.5)), good("extra", ferry.StringValue("hello")))
	testutil.WaitFor(t, 10*time.Second, "extra value", func() bool { return len(values(r.host, "press", "extra")) == 1 })
	again := lastBirth(t, r.host, "press")
	if len(again) != 4 || again["extra"].dtype != TypeString {
		t.Errorf("press rebirth = %v, want 4 metrics with extra String", again)
	}
	for name, m := range press {
		if again[name].alias != m.alias {
			t.Errorf("alias of %s changed from %d to %d in the rebirth", name, m.alias, again[name].alias)
		}
	}
	if again["pressure"].null || again["pressure"].props["Quality"] == "" {
		t.Errorf("rebirth pressure = %+v, want the last value with its Quality", again["pressure"])
	}
	if n := counter(t, r.reg, "ferry_sparkplug_rebirths_total", "reason=new_metric"); n != 1 {
		t.Errorf("rebirths new_metric = %v, want 1", n)
	}
	r.noViolations()
}

// TestSeqWraps: seq goes 0 (NBIRTH), 1, … 255, 0, 1 across more than
// 256 messages, each checked by the host.
func TestSeqWraps(t *testing.T) {
	r := newRig(t, nil)
	r.run()
	r.waitBorn(0)
	t0 := time.Now()
	const n = 600
	for i := range n {
		r.add("press", t0.Add(time.Duration(i)*time.Millisecond), good("count", ferry.IntValue(int64(i))))
	}
	testutil.WaitFor(t, 30*time.Second, "every value", func() bool { return len(r.host.Values("press", "count")) == n })
	wrapped := 0
	for _, v := range r.host.Values("press", "count") {
		if v.Seq == 0 {
			wrapped++
		}
	}
	if wrapped < 2 {
		t.Errorf("DDATA with seq 0 seen %d times in %d messages, want ≥ 2 (seq wraps after 255)", wrapped, n)
	}
	got := values(r.host, "press", "count")
	for i := range n {
		if got[i] != int64(i) {
			t.Fatalf("value %d = %v, want %d (in order, once)", i, got[i], i)
		}
	}
	r.noViolations()
}

// TestBdSeqWillAndRestart: the NDEATH the broker publishes for a lost
// connection carries the bdSeq of that session's NBIRTH; the next session
// uses bdSeq+1, also after a restart of the node (bdSeq is kept in the
// buffer's state store).
func TestBdSeqWillAndRestart(t *testing.T) {
	r := &rig{t: t, dir: t.TempDir()}
	r.bk = testpeer.Broker(t)
	r.host = sphost.New(t, r.bk.URL(), testHost)
	px := testutil.NewProxy(t, r.bk.Addr())
	t.Cleanup(px.Close)
	r.openBuffer()
	viaProxy := func(c *Config) { c.Brokers = []string{"tcp://" + px.Addr()} }
	r.newNode(viaProxy)
	r.run()
	r.waitBorn(0)
	r.add("press", time.Now(), good("count", ferry.IntValue(1)))
	testutil.WaitFor(t, 10*time.Second, "a value", func() bool { return len(r.host.Values("press", "count")) == 1 })

	px.Cut() // the connection drops without DISCONNECT: the broker publishes the will
	testutil.WaitFor(t, 10*time.Second, "NDEATH (the will)", func() bool { return len(r.host.Messages("NDEATH")) == 1 })
	if bd, _ := findBdSeq(r.host.Messages("NDEATH")[0]); bd != 0 {
		t.Errorf("will NDEATH bdSeq = %d, want 0", bd)
	}
	r.waitBorn(1)
	r.add("press", time.Now(), good("count", ferry.IntValue(2)))
	testutil.WaitFor(t, 10*time.Second, "the second value", func() bool { return len(r.host.Values("press", "count")) == 2 })

	r.stop() // a clean stop publishes NDEATH itself
	testutil.WaitFor(t, 10*time.Second, "NDEATH of the clean stop", func() bool { return len(r.host.Messages("NDEATH")) == 2 })
	if bd, _ := findBdSeq(r.host.Messages("NDEATH")[1]); bd != 1 {
		t.Errorf("NDEATH bdSeq = %d, want 1", bd)
	}
	r.newNode(viaProxy)
	r.run()
	r.waitBorn(2)
	r.noViolations()
}

func findBdSeq(m sphost.Msg) (uint64, bool) {
	for _, mt := range m.Payload.Metrics {
		if mt.GetName() == MetricBdSeq {
			return mt.GetLongValue(), true
		}
	}
	return 0, false
}

// TestRebirthOnNCMD: NCMD Node Control/Rebirth = true makes the node
// publish NBIRTH (seq 0, same bdSeq) and every DBIRTH again, with the same
// aliases.
func TestRebirthOnNCMD(t *testing.T) {
	r := newRig(t, nil)
	r.node.SetCatalog(testCatalog)
	r.run()
	r.waitBorn(0)
	r.add("press", time.Now(), good("count", ferry.IntValue(7)))
	testutil.WaitFor(t, 10*time.Second, "a value", func() bool { return len(r.host.Values("press", "count")) == 1 })
	before := lastBirth(t, r.host, "press")

	r.host.Rebirth(testGroup, testNode)
	testutil.WaitFor(t, 10*time.Second, "second NBIRTH and DBIRTHs", func() bool {
		return len(r.host.Messages("NBIRTH")) == 2 && len(r.host.Messages("DBIRTH")) == 4
	})
	after := lastBirth(t, r.host, "press")
	for name, m := range before {
		if after[name].alias != m.alias || after[name].dtype != m.dtype {
			t.Errorf("%s: birth %+v, rebirth %+v", name, m, after[name])
		}
	}
	if after["count"].null {
		t.Error("rebirth of count carries no value; want the last one, 7")
	}
	if bd, born := r.host.BdSeq(testGroup, testNode); !born || bd != 0 {
		t.Errorf("bdSeq after rebirth = %d (born %v), want 0: a rebirth is the same MQTT session", bd, born)
	}
	r.add("press", time.Now(), good("count", ferry.IntValue(8)))
	testutil.WaitFor(t, 10*time.Second, "a value after the rebirth", func() bool { return len(r.host.Values("press", "count")) == 2 })
	if n := counter(t, r.reg, "ferry_sparkplug_rebirths_total", "reason=ncmd"); n != 1 {
		t.Errorf("rebirths ncmd = %v, want 1", n)
	}
	r.noViolations()
}

// TestHistoricalAfterHostOutage: while the primary host is offline the
// node is dead (NDEATH) and the buffer keeps every record; when the host
// is back the node is born again and publishes the backlog with
// is_historical in time order, then live data: each value exactly once.
func TestHistoricalAfterHostOutage(t *testing.T) {
	r := newRig(t, func(c *Config) { c.PrimaryHostID = testHost })
	r.run()
	testutil.Never(t, 300*time.Millisecond, "NBIRTH before the host is online", func() bool { return len(r.host.Messages("NBIRTH")) > 0 })
	r.host.State(true)
	r.waitBorn(0)
	t0 := time.Now()
	next := 0
	addN := func(k int) {
		for range k {
			r.add("press", t0.Add(time.Duration(next)*time.Millisecond), good("count", ferry.IntValue(int64(next))))
			next++
		}
	}
	addN(10)
	testutil.WaitFor(t, 10*time.Second, "live values", func() bool { return len(r.host.Values("press", "count")) == 10 })

	r.host.State(false)
	testutil.WaitFor(t, 10*time.Second, "NDEATH on host offline", func() bool { return len(r.host.Messages("NDEATH")) == 1 })
	addN(50)
	testutil.Never(t, 300*time.Millisecond, "data while the host is offline", func() bool { return len(r.host.Values("press", "count")) != 10 })
	if p := r.pending(); p != 50 {
		t.Fatalf("buffer holds %d records while the host is offline, want 50", p)
	}
	if v := counter(t, r.reg, "ferry_sparkplug_primary_host_online"); v != 0 {
		t.Errorf("primary_host_online = %v, want 0", v)
	}

	r.host.State(true)
	r.waitBorn(1)
	addN(5)
	testutil.WaitFor(t, 15*time.Second, "every value", func() bool { return len(r.host.Values("press", "count")) == next })
	testutil.WaitFor(t, 5*time.Second, "buffer drained", func() bool { return r.pending() == 0 })
	vals := r.host.Values("press", "count")
	seen := map[int64]int{}
	for i, v := range vals {
		c := v.Value.(int64)
		seen[c]++
		wantHist := c >= 10 && c < 60
		if v.Historical != wantHist {
			t.Errorf("value %d: is_historical %v, want %v", c, v.Historical, wantHist)
		}
		if i > 0 && c < vals[i-1].Value.(int64) {
			t.Errorf("value %d after %v: not in time order", c, vals[i-1].Value)
		}
	}
	for c := range int64(next) {
		if seen[c] != 1 {
			t.Errorf("value %d seen %d times, want once", c, seen[c])
		}
	}
	if n := counter(t, r.reg, "ferry_sparkplug_samples_total", "historical=true"); n != 50 {
		t.Errorf("historical samples = %v, want 50", n)
	}
	r.noViolations()
}

// TestDeviceDeath: a scan with every point Bad publishes DDEATH once; the
// next good scan publishes DBIRTH again before its data.
func TestDeviceDeath(t *testing.T) {
	r := newRig(t, nil)
	r.run()
	r.waitBorn(0)
	t0 := time.Now()
	r.add("press", t0, good("count", ferry.IntValue(1)), good("running", ferry.BoolValue(true)))
	testutil.WaitFor(t, 10*time.Second, "DBIRTH", func() bool { return r.host.DeviceBorn(testGroup, testNode, "press") })
	r.add("press", t0.Add(time.Second), bad("count"), bad("running"))
	r.add("press", t0.Add(2*time.Second), bad("count"), bad("running"))
	testutil.WaitFor(t, 10*time.Second, "DDEATH", func() bool { return len(r.host.Messages("DDEATH")) == 1 })
	testutil.WaitFor(t, 10*time.Second, "buffer drained", func() bool { return r.pending() == 0 })
	if r.host.DeviceBorn(testGroup, testNode, "press") {
		t.Error("press still born after DDEATH")
	}
	r.add("press", t0.Add(3*time.Second), good("count", ferry.IntValue(2)), bad("running"))
	testutil.WaitFor(t, 10*time.Second, "the value after the device is back", func() bool { return len(r.host.Values("press", "count")) == 2 })
	if !r.host.DeviceBorn(testGroup, testNode, "press") || len(r.host.Messages("DBIRTH")) != 2 {
		t.Errorf("press born %v after %d DBIRTHs, want born after 2", r.host.DeviceBorn(testGroup, testNode, "press"), len(r.host.Messages("DBIRTH")))
	}
	if len(r.host.Messages("DDEATH")) != 1 {
		t.Errorf("%d DDEATH, want 1 (the second Bad scan publishes nothing)", len(r.host.Messages("DDEATH")))
	}
	// The DBIRTH of the device's return carries its current state: running
	// still Bad (null, Quality 0), so no DDATA repeats it.
	if m := lastBirth(t, r.host, "press")["running"]; !m.null || m.props["Quality"] != "0" {
		t.Errorf("running in the DBIRTH after DDEATH = %+v, want null with Quality 0", m)
	}
	if got := values(r.host, "press", "running"); !slices.Equal(got, []any{true}) {
		t.Errorf("running DDATA values = %v, want [true]", got)
	}
	if got := values(r.host, "press", "count"); !slices.Equal(got, []any{int64(1), int64(2)}) {
		t.Errorf("count DDATA values = %v, want [1 2]", got)
	}
	if n := counter(t, r.reg, "ferry_sparkplug_rebirths_total", "reason=device_back"); n != 1 {
		t.Errorf("rebirths device_back = %v, want 1", n)
	}
	r.noViolations()
}

// TestHistoricalOfDeadDevice: a device that was down (DDEATH) when the
// primary host went away, with good data in the backlog: the new
// session's births declare it dead, and its historical data comes after
// a DBIRTH, never as DDATA of a dead device.
func TestHistoricalOfDeadDevice(t *testing.T) {
	r := newRig(t, func(c *Config) { c.PrimaryHostID = testHost })
	r.run()
	r.host.State(true)
	r.waitBorn(0)
	t0 := time.Now()
	r.add("press", t0, good("count", ferry.IntValue(1)))
	r.add("press", t0.Add(time.Second), bad("count"))
	testutil.WaitFor(t, 10*time.Second, "DDEATH", func() bool { return len(r.host.Messages("DDEATH")) == 1 })
	r.host.State(false)
	testutil.WaitFor(t, 10*time.Second, "NDEATH", func() bool { return len(r.host.Messages("NDEATH")) == 1 })
	r.add("press", t0.Add(2*time.Second), good("count", ferry.IntValue(2)))
	r.host.State(true)
	r.waitBorn(1)
	testutil.WaitFor(t, 10*time.Second, "the historical value", func() bool { return len(r.host.Values("press", "count")) == 2 })
	if v := r.host.Values("press", "count")[1]; !v.Historical || v.Value != int64(2) {
		t.Errorf("backlog value = %+v, want 2, historical", v)
	}
	r.noViolations()
}
