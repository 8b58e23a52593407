package sparkplug

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"google.golang.org/protobuf/proto"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink/sparkplug/sphost"
	"github.com/ferry-edge/ferry/uplink/sparkplug/sproto"
)

func dcmd(metrics ...*sproto.Payload_Metric) []byte {
	b, _ := proto.Marshal(&sproto.Payload{Timestamp: proto.Uint64(uint64(time.Now().UnixMilli())), Metrics: metrics})
	return b
}

func dcmdTopic(device string) string {
	return "spBv1.0/" + testGroup + "/DCMD/" + testNode + "/" + device
}

// TestDCMDWithoutCommandPath: a gateway without a command path refuses
// every DCMD and counts it; nothing is written.
func TestDCMDWithoutCommandPath(t *testing.T) {
	r := newRig(t, nil)
	r.node.SetCatalog(testCatalog)
	r.run()
	r.waitBorn(0)
	r.host.Publish(dcmdTopic("press"), dcmd(&sproto.Payload_Metric{Name: proto.String("pressure"), Datatype: proto.Uint32(TypeDouble),
		Value: &sproto.Payload_Metric_DoubleValue{DoubleValue: 4}}), false)
	testutil.WaitFor(t, 10*time.Second, "the refusal counted", func() bool {
		return counter(t, r.reg, "ferry_sparkplug_commands_total", "kind=dcmd", "result=refused") == 1
	})
}

// TestDCMDThroughCommandPath: each DCMD metric becomes one command of
// the write path, addressed by name or alias, with an id from the
// payload's timestamp; unknown metrics and values ferry cannot write are
// refused and counted.
func TestDCMDThroughCommandPath(t *testing.T) {
	var mu sync.Mutex
	var got []ferry.CommandRequest
	r := newRig(t, nil, func(o *Options) {
		o.Command = func(_ context.Context, req ferry.CommandRequest) ferry.CommandReply {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, req)
			return ferry.CommandReply{ID: req.ID, Status: ferry.CommandDone}
		}
	})
	r.node.SetCatalog(testCatalog)
	r.run()
	r.waitBorn(0)
	testutil.WaitFor(t, 10*time.Second, "DBIRTH of press", func() bool { return r.host.DeviceBorn(testGroup, testNode, "press") })
	countAlias := lastBirth(t, r.host, "press")["count"].alias
	r.host.Publish(dcmdTopic("press"), dcmd(
		&sproto.Payload_Metric{Name: proto.String("pressure"), Datatype: proto.Uint32(TypeDouble), Value: &sproto.Payload_Metric_DoubleValue{DoubleValue: 4.5}},
		&sproto.Payload_Metric{Alias: proto.Uint64(countAlias), Datatype: proto.Uint32(TypeInt16), Value: &sproto.Payload_Metric_IntValue{IntValue: uint32(0xFFFF)}},
		&sproto.Payload_Metric{Name: proto.String("nosuch"), Datatype: proto.Uint32(TypeDouble), Value: &sproto.Payload_Metric_DoubleValue{DoubleValue: 1}},
		&sproto.Payload_Metric{Name: proto.String("running"), Datatype: proto.Uint32(17), Value: &sproto.Payload_Metric_BytesValue{BytesValue: []byte{1}}},
	), false)
	testutil.WaitFor(t, 10*time.Second, "two commands done, one refused, one unsupported", func() bool {
		return counter(t, r.reg, "ferry_sparkplug_commands_total", "kind=dcmd", "result=done") == 2 &&
			counter(t, r.reg, "ferry_sparkplug_commands_total", "kind=dcmd", "result=refused") == 1 &&
			counter(t, r.reg, "ferry_sparkplug_commands_total", "kind=dcmd", "result=unsupported") == 1
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("commands = %+v, want 2", got)
	}
	if got[0].Device != "press" || got[0].Point != "pressure" || string(got[0].Value) != "4.5" {
		t.Errorf("first command = %+v, want press/pressure 4.5", got[0])
	}
	if got[1].Point != "count" || string(got[1].Value) != "-1" {
		t.Errorf("second command = %+v, want count -1 (Int16 0xFFFF), found by alias", got[1])
	}
	if got[0].ID == got[1].ID || !strings.HasPrefix(got[0].ID, "spb-"+testNode+"-press-pressure-") {
		t.Errorf("ids %q %q: want distinct spb-<node>-<device>-<point>-… ids", got[0].ID, got[1].ID)
	}
}

// TestBadInbound: a STATE that is not Sparkplug 3.0 JSON, an NCMD that is
// not a payload, an NCMD the node does not support: each is counted and
// ignored, and the node keeps publishing.
func TestBadInbound(t *testing.T) {
	r := newRig(t, func(c *Config) { c.PrimaryHostID = testHost })
	r.run()
	r.host.State(true)
	r.waitBorn(0)
	for _, p := range []string{"ONLINE", `{"online":"yes","timestamp":1}`, `{"online":true}`, `{"online":true,"timestamp":-5}`, `{"online":true,"timestamp":1.5}`, ``} {
		r.host.Publish("spBv1.0/STATE/"+testHost, []byte(p), false)
	}
	r.host.Publish("spBv1.0/"+testGroup+"/NCMD/"+testNode, []byte{0xff, 0xff, 0xff}, false)
	r.host.Publish("spBv1.0/"+testGroup+"/NCMD/"+testNode, dcmd(&sproto.Payload_Metric{Name: proto.String("Node Control/Reboot"),
		Datatype: proto.Uint32(TypeBoolean), Value: &sproto.Payload_Metric_BooleanValue{BooleanValue: true}}), false)
	testutil.WaitFor(t, 10*time.Second, "bad inbound messages counted", func() bool {
		return counter(t, r.reg, "ferry_sparkplug_invalid_messages_total", "kind=state") == 6 &&
			counter(t, r.reg, "ferry_sparkplug_invalid_messages_total", "kind=ncmd") == 1 &&
			counter(t, r.reg, "ferry_sparkplug_commands_total", "kind=ncmd", "result=unsupported") == 1
	})
	r.add("press", time.Now(), good("count", ferry.IntValue(1)))
	testutil.WaitFor(t, 10*time.Second, "data after bad input", func() bool { return len(r.host.Values("press", "count")) == 1 })
	if len(r.host.Messages("NBIRTH")) != 1 || len(r.host.Messages("NDEATH")) != 0 {
		t.Errorf("%d NBIRTH, %d NDEATH: bad STATE messages must change nothing", len(r.host.Messages("NBIRTH")), len(r.host.Messages("NDEATH")))
	}
	r.noViolations()
}

// TestOversizeNamesAndDeviceIDs: a point whose name is longer than
// max_metric_name, and a device whose name cannot be a topic level, are
// left out and counted; the rest of the scan is published.
func TestOversizeNamesAndDeviceIDs(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxMetricName = 32 })
	r.run()
	r.waitBorn(0)
	long := strings.Repeat("x", 33)
	r.add("press", time.Now(), good("count", ferry.IntValue(1)), good(long, ferry.IntValue(2)))
	r.add("line/1", time.Now(), good("count", ferry.IntValue(3)))
	testutil.WaitFor(t, 10*time.Second, "buffer drained", func() bool { return r.pending() == 0 })
	testutil.WaitFor(t, 10*time.Second, "count published", func() bool { return len(r.host.Values("press", "count")) == 1 })
	if _, ok := lastBirth(t, r.host, "press")[long]; ok {
		t.Error("the long name was born")
	}
	if n := counter(t, r.reg, "ferry_sparkplug_metrics_refused_total", "reason=name_too_long"); n != 1 {
		t.Errorf("name_too_long = %v, want 1", n)
	}
	if n := counter(t, r.reg, "ferry_sparkplug_metrics_refused_total", "reason=bad_device_id"); n != 1 {
		t.Errorf("bad_device_id = %v, want 1", n)
	}
	r.noViolations()
}

// TestAlertsAsNodeMetric: an alert becomes one NDATA of the node metric
// Alerts/Event: ferry's alert JSON, with rule, severity and state as
// properties.
func TestAlertsAsNodeMetric(t *testing.T) {
	r := newRig(t, nil)
	r.run()
	r.waitBorn(0)
	now := time.Now().UTC().Truncate(time.Millisecond)
	r.buf.AppendAlert(ferry.Alert{ID: "a1", Rule: "overpressure", Device: "press", Point: "pressure", Severity: ferry.SeverityCritical,
		State: ferry.AlertRaised, Value: ferry.FloatValue(11), Message: "too high", Since: now, Time: now})
	testutil.WaitFor(t, 10*time.Second, "the alert", func() bool { return len(r.host.Values("", MetricAlert)) == 1 })
	v := r.host.Values("", MetricAlert)[0]
	var a ferry.AlertJSON
	if err := json.Unmarshal([]byte(v.Value.(string)), &a); err != nil {
		t.Fatal(err)
	}
	if a.ID != "a1" || a.Rule != "overpressure" || a.State != "raised" || a.Value != 11.0 || a.Gateway != testNode {
		t.Errorf("alert = %+v", a)
	}
	if v.Properties["severity"] != "critical" || v.Properties["rule"] != "overpressure" || v.Timestamp != uint64(now.UnixMilli()) {
		t.Errorf("alert metric = %+v", v)
	}
	r.noViolations()
}

// refuseWill is a broker policy that refuses every connection with a
// will.
type refuseWill struct{ mochi.HookBase }

func (h *refuseWill) ID() string { return "refuse-will" }
func (h *refuseWill) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}
func (h *refuseWill) OnConnectAuthenticate(_ *mochi.Client, pk packets.Packet) bool {
	return !pk.Connect.WillFlag
}
func (h *refuseWill) OnACLCheck(*mochi.Client, string, bool) bool { return true }

// TestBrokerRefusesWill: a broker that refuses the NDEATH will refuses the
// connection; the node says so (Err, errors_total{reason="connect_refused"})
// and retries, without publishing anything.
func TestBrokerRefusesWill(t *testing.T) {
	r := &rig{t: t, dir: t.TempDir()}
	r.bk = testpeer.Broker(t, testpeer.BrokerAuth(&refuseWill{}))
	r.host = sphost.New(t, r.bk.URL(), testHost)
	r.openBuffer()
	r.newNode(nil)
	r.run()
	testutil.WaitFor(t, 10*time.Second, "refusals counted", func() bool {
		return counter(t, r.reg, "ferry_sparkplug_errors_total", "reason=connect_refused") >= 2
	})
	if err := r.node.Err(); err == nil || !strings.Contains(err.Error(), "NDEATH will") {
		t.Errorf("Err() = %v, want one that names the will", err)
	}
	if n := len(r.host.Messages()); n != 0 {
		t.Errorf("host saw %d messages", n)
	}
}
