// Package sphost is a Sparkplug B host application for tests: it
// subscribes to every Sparkplug message on a broker, decodes each payload
// and checks it against the specification's rules an edge node must keep
// (seq 0 on NBIRTH then +1 mod 256, bdSeq of NDEATH equal to the NBIRTH's,
// every DATA alias born with its data type, no data before its birth),
// and keeps every value it saw. It can publish its STATE and send
// NCMD/DCMD. It is test code: it records violations instead of failing,
// so that a test reports them all at once.
package sphost

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/ferry-edge/ferry/uplink/sparkplug/sproto"
)

// Msg is one Sparkplug message the host received.
type Msg struct {
	Topic   string
	Type    string // NBIRTH, NDEATH, NDATA, DBIRTH, DDATA, DDEATH, NCMD, DCMD
	Group   string
	Node    string
	Device  string
	Payload *sproto.Payload
	Raw     []byte // the payload as received
	At      time.Time
}

// Value is one metric value of a DDATA or NDATA message.
type Value struct {
	Node, Device, Name string
	Alias              uint64
	Datatype           uint32
	Timestamp          uint64
	Historical         bool
	Null               bool
	Value              any // int64/uint64 for Int*/UInt*, float64, bool, string
	Properties         map[string]any
	Seq                uint64
}

type metricInfo struct {
	device, name string
	dtype        uint32
}

type nodeView struct {
	born    bool
	bdSeq   uint64
	seq     uint64
	aliases map[uint64]metricInfo
	devices map[string]bool // device born (and not dead)
}

// Host is a Sparkplug host application connected to one broker.
type Host struct {
	t  testing.TB
	c  paho.Client
	id string

	mu     sync.Mutex
	msgs   []Msg
	values []Value
	errs   []string
	nodes  map[string]*nodeView
	lastTS int64
}

// New connects a host with id hostID to the broker at url and subscribes
// to spBv1.0/#. It is disconnected when the test ends.
func New(t testing.TB, url, hostID string) *Host {
	t.Helper()
	h := &Host{t: t, id: hostID, nodes: map[string]*nodeView{}}
	o := paho.NewClientOptions().AddBroker(url).SetClientID("sphost-" + hostID).
		SetCleanSession(true).SetAutoReconnect(true).SetOrderMatters(true).
		SetConnectTimeout(5 * time.Second)
	o.SetOnConnectHandler(func(c paho.Client) {
		c.Subscribe("spBv1.0/#", 1, func(_ paho.Client, m paho.Message) { h.receive(m.Topic(), m.Payload()) })
	})
	h.c = paho.NewClient(o)
	if tok := h.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("sphost: connect %s: %v", url, tok.Error())
	}
	t.Cleanup(func() { h.c.Disconnect(100) })
	return h
}

// State publishes the host's STATE (retained, QoS 1) with a timestamp
// later than any it published before.
func (h *Host) State(online bool) {
	h.mu.Lock()
	ts := time.Now().UnixMilli()
	if ts <= h.lastTS {
		ts = h.lastTS + 1
	}
	h.lastTS = ts
	h.mu.Unlock()
	b, _ := json.Marshal(map[string]any{"online": online, "timestamp": ts})
	h.Publish("spBv1.0/STATE/"+h.id, b, true)
}

// Publish publishes raw bytes at QoS 1 and waits for the PUBACK.
func (h *Host) Publish(topic string, payload []byte, retain bool) {
	h.t.Helper()
	tok := h.c.Publish(topic, 1, retain, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		h.t.Fatalf("sphost: publish %s: %v", topic, tok.Error())
	}
}

// Rebirth sends NCMD Node Control/Rebirth = true to group/node.
func (h *Host) Rebirth(group, node string) {
	p := &sproto.Payload{Timestamp: proto.Uint64(uint64(time.Now().UnixMilli())), Metrics: []*sproto.Payload_Metric{{
		Name: proto.String("Node Control/Rebirth"), Datatype: proto.Uint32(11),
		Value: &sproto.Payload_Metric_BooleanValue{BooleanValue: true},
	}}}
	b, _ := proto.Marshal(p)
	h.Publish("spBv1.0/"+group+"/NCMD/"+node, b, false)
}

func (h *Host) violate(format string, args ...any) {
	h.errs = append(h.errs, fmt.Sprintf(format, args...))
}

// receive decodes and checks one message.
func (h *Host) receive(topic string, payload []byte) {
	parts := strings.Split(topic, "/")
	if len(parts) < 4 || parts[0] != "spBv1.0" || parts[1] == "STATE" {
		return
	}
	m := Msg{Topic: topic, Group: parts[1], Type: parts[2], Node: parts[3], Raw: append([]byte(nil), payload...), At: time.Now()}
	if len(parts) > 4 {
		m.Device = strings.Join(parts[4:], "/")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var p sproto.Payload
	if err := proto.Unmarshal(payload, &p); err != nil {
		if m.Type == "NCMD" || m.Type == "DCMD" {
			return // commands are the host's own (a test may send garbage)
		}
		h.violate("%s: payload does not decode: %v", topic, err)
		return
	}
	m.Payload = &p
	h.msgs = append(h.msgs, m)
	if m.Type == "NCMD" || m.Type == "DCMD" {
		return
	}
	key := m.Group + "/" + m.Node
	nv := h.nodes[key]
	if nv == nil {
		nv = &nodeView{}
		h.nodes[key] = nv
	}
	if p.Timestamp == nil {
		h.violate("%s: no payload timestamp", topic)
	}
	switch m.Type {
	case "NBIRTH":
		if p.GetSeq() != 0 || p.Seq == nil {
			h.violate("%s: NBIRTH seq %d, want 0", topic, p.GetSeq())
		}
		bd, ok := findLong(&p, "bdSeq")
		if !ok {
			h.violate("%s: NBIRTH without bdSeq", topic)
		}
		*nv = nodeView{born: true, bdSeq: bd, aliases: map[uint64]metricInfo{}, devices: map[string]bool{}}
		h.birth(nv, "", &p, topic)
		return
	case "NDEATH":
		bd, ok := findLong(&p, "bdSeq")
		if !ok {
			h.violate("%s: NDEATH without bdSeq", topic)
		} else if nv.born && bd != nv.bdSeq {
			h.violate("%s: NDEATH bdSeq %d, NBIRTH had %d", topic, bd, nv.bdSeq)
		}
		if p.Seq != nil {
			h.violate("%s: NDEATH with a seq", topic)
		}
		nv.born = false
		return
	}
	if !nv.born {
		h.violate("%s: %s before NBIRTH", topic, m.Type)
		return
	}
	if p.Seq == nil {
		h.violate("%s: no seq", topic)
	} else if want := (nv.seq + 1) % 256; p.GetSeq() != want {
		h.violate("%s: seq %d, want %d", topic, p.GetSeq(), want)
	}
	nv.seq = p.GetSeq()
	switch m.Type {
	case "DBIRTH":
		for a, mi := range nv.aliases {
			if mi.device == m.Device {
				delete(nv.aliases, a)
			}
		}
		h.birth(nv, m.Device, &p, topic)
		nv.devices[m.Device] = true
	case "DDEATH":
		if !nv.devices[m.Device] {
			h.violate("%s: DDEATH of a device not born", topic)
		}
		nv.devices[m.Device] = false
	case "DDATA", "NDATA":
		if m.Type == "DDATA" && !nv.devices[m.Device] {
			h.violate("%s: DDATA of a device not born (or dead)", topic)
		}
		for _, mt := range p.Metrics {
			mi, ok := nv.aliases[mt.GetAlias()]
			if mt.Alias == nil || !ok {
				h.violate("%s: metric %q alias %d not born", topic, mt.GetName(), mt.GetAlias())
				continue
			}
			if mi.device != m.Device {
				h.violate("%s: alias %d belongs to device %q", topic, mt.GetAlias(), mi.device)
			}
			if mt.Datatype != nil && mt.GetDatatype() != mi.dtype {
				h.violate("%s: %s datatype %d, born %d", topic, mi.name, mt.GetDatatype(), mi.dtype)
			}
			v := Value{Node: m.Node, Device: m.Device, Name: mi.name, Alias: mt.GetAlias(), Datatype: mi.dtype,
				Timestamp: mt.GetTimestamp(), Historical: mt.GetIsHistorical(), Null: mt.GetIsNull(), Seq: p.GetSeq()}
			v.Value = h.value(mt, mi.dtype, topic)
			v.Properties = PropMap(mt.Properties)
			h.values = append(h.values, v)
		}
	default:
		h.violate("%s: unknown message type %s", topic, m.Type)
	}
}

// birth registers the metrics of a birth certificate.
func (h *Host) birth(nv *nodeView, dev string, p *sproto.Payload, topic string) {
	for _, mt := range p.Metrics {
		if mt.GetName() == "" || mt.Datatype == nil {
			h.violate("%s: birth metric without name or datatype", topic)
			continue
		}
		if mt.GetName() == "bdSeq" {
			continue
		}
		if mt.Alias == nil {
			h.violate("%s: birth metric %q without alias", topic, mt.GetName())
			continue
		}
		if prev, ok := nv.aliases[mt.GetAlias()]; ok {
			h.violate("%s: alias %d of %q already names %q of %q", topic, mt.GetAlias(), mt.GetName(), prev.name, prev.device)
		}
		nv.aliases[mt.GetAlias()] = metricInfo{device: dev, name: mt.GetName(), dtype: mt.GetDatatype()}
		if !mt.GetIsNull() {
			h.value(mt, mt.GetDatatype(), topic)
		}
	}
}

// value reads a metric's value, checking that the field set matches the
// data type.
func (h *Host) value(mt *sproto.Payload_Metric, dtype uint32, topic string) any {
	if mt.GetIsNull() {
		if mt.Value != nil {
			h.violate("%s: null metric with a value", topic)
		}
		return nil
	}
	switch v := mt.Value.(type) {
	case *sproto.Payload_Metric_LongValue:
		switch dtype {
		case 4:
			return int64(v.LongValue)
		case 8, 13:
			return v.LongValue
		}
	case *sproto.Payload_Metric_IntValue:
		switch dtype {
		case 1, 2, 3:
			return int64(int32(v.IntValue))
		case 5, 6, 7:
			return uint64(v.IntValue)
		}
	case *sproto.Payload_Metric_DoubleValue:
		if dtype == 10 {
			return v.DoubleValue
		}
	case *sproto.Payload_Metric_FloatValue:
		if dtype == 9 {
			return float64(v.FloatValue)
		}
	case *sproto.Payload_Metric_BooleanValue:
		if dtype == 11 {
			return v.BooleanValue
		}
	case *sproto.Payload_Metric_StringValue:
		if dtype == 12 || dtype == 14 {
			return v.StringValue
		}
	}
	h.violate("%s: value %T does not match datatype %d", topic, mt.Value, dtype)
	return nil
}

func findLong(p *sproto.Payload, name string) (uint64, bool) {
	for _, m := range p.Metrics {
		if m.GetName() == name {
			if v, ok := m.Value.(*sproto.Payload_Metric_LongValue); ok {
				return v.LongValue, true
			}
		}
	}
	return 0, false
}

// PropMap returns a property set as a map (Int32 as int64).
func PropMap(ps *sproto.Payload_PropertySet) map[string]any {
	if ps == nil {
		return nil
	}
	out := map[string]any{}
	for i, k := range ps.Keys {
		if i >= len(ps.Values) {
			break
		}
		switch v := ps.Values[i].Value.(type) {
		case *sproto.Payload_PropertyValue_IntValue:
			out[k] = int64(int32(v.IntValue))
		case *sproto.Payload_PropertyValue_LongValue:
			out[k] = v.LongValue
		case *sproto.Payload_PropertyValue_DoubleValue:
			out[k] = v.DoubleValue
		case *sproto.Payload_PropertyValue_BooleanValue:
			out[k] = v.BooleanValue
		case *sproto.Payload_PropertyValue_StringValue:
			out[k] = v.StringValue
		}
	}
	return out
}

// Violations returns every rule the edge nodes broke so far.
func (h *Host) Violations() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.errs...)
}

// Messages returns the messages received of the given types (all when
// none are given), in arrival order.
func (h *Host) Messages(types ...string) []Msg {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Msg
	for _, m := range h.msgs {
		if len(types) == 0 || contains(types, m.Type) {
			out = append(out, m)
		}
	}
	return out
}

// Values returns the DDATA/NDATA values of device's metric name ("" device:
// node metrics), in arrival order.
func (h *Host) Values(device, name string) []Value {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Value
	for _, v := range h.values {
		if v.Device == device && v.Name == name {
			out = append(out, v)
		}
	}
	return out
}

// AllValues returns every DDATA/NDATA value, in arrival order.
func (h *Host) AllValues() []Value {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Value(nil), h.values...)
}

// BdSeq returns the bdSeq of group/node's last NBIRTH, and whether it is
// born now.
func (h *Host) BdSeq(group, node string) (uint64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	nv := h.nodes[group+"/"+node]
	if nv == nil {
		return 0, false
	}
	return nv.bdSeq, nv.born
}

// DeviceBorn reports whether device of group/node is born and not dead.
func (h *Host) DeviceBorn(group, node, device string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	nv := h.nodes[group+"/"+node]
	return nv != nil && nv.born && nv.devices[device]
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Count returns how many DDATA/NDATA values the host has seen.
func (h *Host) Count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.values)
}
