package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink"
	"github.com/ferry-edge/ferry/uplink/sparkplug/sphost"
	"github.com/ferry-edge/ferry/uplink/sparkplug/sproto"
)

// spConfig is a gateway with a Modbus press, commands on, and the
// Sparkplug node as its only upstream.
func spConfig(dataDir, mbAddr, broker string, commands bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "gateway: {id: %s, site: test}\n", gatewayID)
	fmt.Fprintf(&b, "data_dir: %s\n", dataDir)
	b.WriteString("http: {listen: \"127.0.0.1:0\"}\n")
	b.WriteString("commands: {enabled: true, default_deadline: 10s}\n")
	fmt.Fprintf(&b, "devices:\n  - name: press\n    modbus: {url: \"tcp://%s\", unit: 1, interval: 100ms, timeout: 1s}\n    points:\n", mbAddr)
	for _, p := range writablePoints[:2] {
		fmt.Fprintf(&b, "      - %s\n", p)
	}
	fmt.Fprintf(&b, "uplink:\n  sparkplug: {brokers: [\"%s\"], group_id: plant, commands: %v, reconnect_max: 500ms}\n", broker, commands)
	return b.String()
}

func spDCMD(point string, v float64) []byte {
	b, _ := proto.Marshal(&sproto.Payload{Timestamp: proto.Uint64(uint64(time.Now().UnixNano())), Metrics: []*sproto.Payload_Metric{{
		Name: proto.String(point), Datatype: proto.Uint32(10), Value: &sproto.Payload_Metric_DoubleValue{DoubleValue: v},
	}}})
	return b
}

// TestSparkplugGateway: a gateway with uplink.sparkplug publishes its
// devices from the buffer as a Sparkplug edge node (edge node id = the
// gateway id): the DBIRTH holds the configured points with units and
// write limits, DDATA follows the Modbus registers, and a DCMD goes
// through the command path: written inside the limits, refused outside
// them, each audited (the audit events arrive as Alerts/Event).
func TestSparkplugGateway(t *testing.T) {
	bank := &testpeer.RegBank{}
	mb := testpeer.ModbusServer(t, bank)
	bk := testpeer.Broker(t)
	host := sphost.New(t, bk.URL(), "scada")
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	testutil.WriteFile(t, path, spConfig(filepath.Join(dir, "data"), mb.Addr(), bk.URL(), true))
	h := startDaemon(t, path)

	testutil.WaitFor(t, 20*time.Second, "DBIRTH of press", func() bool { return host.DeviceBorn("plant", gatewayID, "press") })
	bank.Set(0, 42)
	testutil.WaitFor(t, 10*time.Second, "line_speed 42 in DDATA", func() bool {
		for _, v := range host.Values("press", "line_speed") {
			if v.Value == 42.0 || v.Value == uint64(42) || v.Value == int64(42) {
				return true
			}
		}
		return false
	})
	var birth *sproto.Payload
	for _, m := range host.Messages("DBIRTH") {
		birth = m.Payload
	}
	props := map[string]map[string]any{}
	for _, m := range birth.Metrics {
		props[m.GetName()] = sphost.PropMap(m.Properties)
	}
	if sp := props["setpoint"]; sp["writeMax"] != 250.0 || sp["readOnly"] != false || sp["protocol"] != "modbus" {
		t.Errorf("setpoint birth properties = %v", sp)
	}
	if ls := props["line_speed"]; ls["readOnly"] != true {
		t.Errorf("line_speed birth properties = %v", ls)
	}

	topic := "spBv1.0/plant/DCMD/" + gatewayID + "/press"
	host.Publish(topic, spDCMD("setpoint", 180.5), false)
	testutil.WaitFor(t, 10*time.Second, "the setpoint written", func() bool { return bank.Reg(10) == 0xA000 && bank.Reg(11) == 0x44E1 })
	host.Publish(topic, spDCMD("setpoint", 300), false)
	testutil.WaitFor(t, 10*time.Second, "one done, one refused", func() bool {
		done, _ := h.metric("ferry_sparkplug_commands_total", "kind=dcmd", "result=done")
		refused, _ := h.metric("ferry_sparkplug_commands_total", "kind=dcmd", "result=refused")
		return done == 1 && refused == 1
	})
	if n := len(bank.Writes()); n != 1 {
		t.Errorf("%d Modbus writes, want 1 (the refused DCMD writes nothing)", n)
	}
	testutil.WaitFor(t, 10*time.Second, "the audit events as Alerts/Event", func() bool {
		var states []string
		for _, v := range host.Values("", "Alerts/Event") {
			var a ferry.AlertJSON
			if json.Unmarshal([]byte(v.Value.(string)), &a) == nil && a.Rule == "command" && a.Labels["via"] == "sparkplug" {
				states = append(states, a.ID)
			}
		}
		return len(states) >= 3 // accepted + done, refused
	})
	for _, v := range host.Violations() {
		t.Errorf("host: %s", v)
	}
}

// TestSparkplugDCMDOff: without commands: true a DCMD is refused by the
// node and never reaches the command path.
func TestSparkplugDCMDOff(t *testing.T) {
	bank := &testpeer.RegBank{}
	mb := testpeer.ModbusServer(t, bank)
	bk := testpeer.Broker(t)
	host := sphost.New(t, bk.URL(), "scada")
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	testutil.WriteFile(t, path, spConfig(filepath.Join(dir, "data"), mb.Addr(), bk.URL(), false))
	h := startDaemon(t, path)
	testutil.WaitFor(t, 20*time.Second, "DBIRTH of press", func() bool { return host.DeviceBorn("plant", gatewayID, "press") })
	host.Publish("spBv1.0/plant/DCMD/"+gatewayID+"/press", spDCMD("setpoint", 100), false)
	testutil.WaitFor(t, 10*time.Second, "the refusal", func() bool {
		v, _ := h.metric("ferry_sparkplug_commands_total", "kind=dcmd", "result=refused")
		return v == 1
	})
	if n := len(bank.Writes()); n != 0 {
		t.Errorf("%d Modbus writes, want 0", n)
	}
}

// TestSparkplugAndNATS: uplink.sparkplug and uplink.nats together are two
// upstreams, each on its own buffer cursor. While the Sparkplug primary
// host is offline the node holds its records back, and the NATS upstream
// keeps shipping; when the host is back, the node sends what it held with
// is_historical, and neither upstream blocked the other.
func TestSparkplugAndNATS(t *testing.T) {
	bank := &testpeer.RegBank{}
	mb := testpeer.ModbusServer(t, bank)
	bk := testpeer.Broker(t)
	host := sphost.New(t, bk.URL(), "scada")
	host.State(true)
	srv := testpeer.NATS(t)
	_, js := srv.Connect()
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	text := strings.Replace(spConfig(filepath.Join(dir, "data"), mb.Addr(), bk.URL(), false),
		"reconnect_max: 500ms}", "reconnect_max: 500ms, primary_host_id: scada}", 1) +
		fmt.Sprintf("  nats: {urls: [%q], stream: SPNATS, create_stream: true, reconnect_max: 500ms, batch: {max_delay: 100ms}}\n", srv.URL())
	testutil.WriteFile(t, path, text)
	h := startDaemon(t, path)
	testutil.WaitFor(t, 20*time.Second, "DBIRTH of press", func() bool { return host.DeviceBorn("plant", gatewayID, "press") })
	streamMsgs := func() uint64 {
		st, err := js.Stream(context.Background(), "SPNATS")
		if err != nil {
			return 0
		}
		info, err := st.Info(context.Background())
		if err != nil {
			return 0
		}
		return info.State.Msgs
	}
	testutil.WaitFor(t, 20*time.Second, "the NATS upstream shipping", func() bool { return streamMsgs() > 0 })

	host.State(false)
	testutil.WaitFor(t, 10*time.Second, "the node offline (NDEATH)", func() bool { return len(host.Messages("NDEATH")) > 0 })
	live := len(host.Values("press", "line_speed"))
	n0 := streamMsgs()
	held := []uint16{100, 101, 102, 103, 104}
	for _, v := range held {
		bank.Set(0, v)                     // values the node must hold back
		time.Sleep(300 * time.Millisecond) // pacing: each value lives over a few 100 ms polls (the thing under test)
	}
	bank.Set(0, 200) // ends the last held value's samples
	// readStream counts the stream's telemetry records by id and its
	// line_speed samples by value.
	readStream := func() (ids, inStream map[string]int) {
		ids, inStream = map[string]int{}, map[string]int{}
		testpeer.ReadStream(t, srv.URL(), "SPNATS", func(m jetstream.Msg) {
			all, err := uplink.DecodeAll(m.Subject(), m.Headers(), m.Data())
			if err != nil {
				t.Fatalf("stream message on %s: %v", m.Subject(), err)
			}
			for _, msg := range all {
				if msg.Telemetry == nil {
					continue
				}
				ids[msg.ID]++
				for _, sc := range msg.Telemetry.Scans {
					for _, p := range sc.Points {
						if p.Name == "line_speed" {
							inStream[fmt.Sprint(p.Value.Any())]++
						}
					}
				}
			}
		})
		return ids, inStream
	}
	// Every held sample is stored (the records after it are in the
	// stream) before the host returns: they are all historical then, sent
	// whole; a sample stored after the node's new birth would be live, and
	// sent by exception.
	testutil.WaitFor(t, 20*time.Second, "200 in the stream", func() bool { _, in := readStream(); return in["200"] > 0 })
	testutil.WaitFor(t, 20*time.Second, "NATS shipping on while Sparkplug holds back", func() bool { return streamMsgs() >= n0+5 })
	if got := len(host.Values("press", "line_speed")); got != live {
		t.Fatalf("the node published %d values while its host was offline", got-live)
	}
	// The buffer keeps for the node what it has not taken; the NATS
	// cursor has shipped (almost) everything.
	testutil.Eventually(t, 20*time.Second, "the buffer holding the node's records only", func() error {
		_, body := h.get("/api/status")
		var st struct {
			Upstreams []struct {
				Name    string `json:"name"`
				Pending int    `json:"pending"`
			} `json:"upstreams"`
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			return err
		}
		pend := map[string]int{}
		for _, u := range st.Upstreams {
			pend[u.Name] = u.Pending
		}
		if pend["sparkplug"] < 10 || pend["nats"] > 5 {
			return fmt.Errorf("pending by upstream %v: want the node's backlog and next to nothing for nats", pend)
		}
		return nil
	})
	host.State(true)
	testutil.WaitFor(t, 20*time.Second, "the held values, historical", func() bool {
		seen := map[any]bool{}
		for _, v := range host.Values("press", "line_speed") {
			if v.Historical {
				seen[fmt.Sprint(v.Value)] = true
			}
		}
		return seen["104"]
	})
	// Both upstreams end with everything once: every NATS record id once,
	// and each sample of a held value (the node replays the records it
	// held whole, with is_historical) as often at the host as in the
	// stream.
	testutil.Eventually(t, 20*time.Second, "every record once in the stream, every held sample at both", func() error {
		ids, inStream := readStream()
		var bad error
		for id, n := range ids {
			if n != 1 {
				t.Fatalf("record %s in the stream %d times", id, n) // never fixed by waiting
			}
		}
		atHost := map[string]int{}
		for _, v := range host.Values("press", "line_speed") {
			atHost[fmt.Sprint(v.Value)]++
		}
		for _, v := range held {
			k := fmt.Sprint(v)
			if atHost[k] == 0 || atHost[k] != inStream[k] {
				bad = fmt.Errorf("line_speed %s: %d samples at the Sparkplug host, %d in the NATS stream", k, atHost[k], inStream[k])
			}
		}
		return bad
	})
	if v, ok := h.metric("ferry_buffer_consumer_dropped_total"); ok && v > 0 {
		t.Errorf("%v records dropped for a consumer", v)
	}
	for _, v := range host.Violations() {
		t.Errorf("host: %s", v)
	}
}

// TestSparkplugReload: a reload that adds a point rebirths the running
// node with it (same MQTT session: same bdSeq); one that changes the
// sparkplug block restarts the node (next bdSeq).
func TestSparkplugReload(t *testing.T) {
	bank := &testpeer.RegBank{}
	mb := testpeer.ModbusServer(t, bank)
	bk := testpeer.Broker(t)
	host := sphost.New(t, bk.URL(), "scada")
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	text := spConfig(filepath.Join(dir, "data"), mb.Addr(), bk.URL(), false)
	one := strings.Replace(text, "      - "+writablePoints[1]+"\n", "", 1)
	testutil.WriteFile(t, path, one)
	h := startDaemon(t, path)
	testutil.WaitFor(t, 20*time.Second, "DBIRTH of press", func() bool { return host.DeviceBorn("plant", gatewayID, "press") })
	birthNames := func() map[string]bool {
		out := map[string]bool{}
		for _, m := range host.Messages("DBIRTH") {
			out = map[string]bool{}
			for _, mt := range m.Payload.Metrics {
				out[mt.GetName()] = true
			}
		}
		return out
	}
	if n := birthNames(); n["setpoint"] || !n["line_speed"] {
		t.Fatalf("first DBIRTH metrics %v, want line_speed only", n)
	}
	h.reload(text)
	testutil.WaitFor(t, 20*time.Second, "a rebirth with setpoint", func() bool { return birthNames()["setpoint"] })
	if bd, born := host.BdSeq("plant", gatewayID); !born || bd != 0 || len(host.Messages("NBIRTH")) != 2 {
		t.Errorf("after the catalog reload: bdSeq %d born %v, %d NBIRTH; want bdSeq 0, 2 NBIRTH", bd, born, len(host.Messages("NBIRTH")))
	}
	h.reload(strings.Replace(text, "reconnect_max: 500ms", "reconnect_max: 400ms", 1))
	testutil.WaitFor(t, 20*time.Second, "the restarted node born with bdSeq 1", func() bool {
		bd, born := host.BdSeq("plant", gatewayID)
		return born && bd == 1
	})
	if n := len(host.Messages("NDEATH")); n != 1 {
		t.Errorf("%d NDEATH, want 1 (the old node's goodbye)", n)
	}
	for _, v := range host.Violations() {
		t.Errorf("host: %s", v)
	}
}
