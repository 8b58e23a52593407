package sparkplug

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/codec"
	"github.com/ferry-edge/ferry/uplink/sparkplug/sproto"
)

// outMsg is one message to publish; rec is the index of the record it
// carries in its batch (-1: none, a birth).
type outMsg struct {
	topic   string
	kind    string // NBIRTH, DBIRTH, DDATA, NDATA, DDEATH
	payload *sproto.Payload
	rec     int
	samples int
	hist    bool
}

func ms(ns int64) uint64 {
	if ns <= 0 {
		return 0
	}
	return uint64(ns / 1e6)
}

// ndeath returns the NDEATH payload of bdSeq (no seq: it is the will).
func (n *Node) ndeath(bdSeq uint64) []byte {
	p := &sproto.Payload{
		Timestamp: proto.Uint64(ms(n.opts.Now().UnixNano())),
		Metrics: []*sproto.Payload_Metric{{
			Name: proto.String(MetricBdSeq), Datatype: proto.Uint32(TypeInt64),
			Value: &sproto.Payload_Metric_LongValue{LongValue: bdSeq},
		}},
	}
	b, _ := proto.Marshal(p)
	return b
}

// nbirth builds the NBIRTH (seq 0) and resets seq.
func (n *Node) nbirth() outMsg {
	now := ms(n.opts.Now().UnixNano())
	n.seq = 0
	mts := []*sproto.Payload_Metric{
		{Name: proto.String(MetricBdSeq), Datatype: proto.Uint32(TypeInt64), Timestamp: proto.Uint64(now),
			Value: &sproto.Payload_Metric_LongValue{LongValue: n.bdSeq}},
		{Name: proto.String(MetricRebirth), Alias: proto.Uint64(n.nodeAlias(MetricRebirth)), Datatype: proto.Uint32(TypeBoolean), Timestamp: proto.Uint64(now),
			Value: &sproto.Payload_Metric_BooleanValue{BooleanValue: false}},
	}
	if n.cfg.Alerts {
		mts = append(mts, &sproto.Payload_Metric{Name: proto.String(MetricAlert), Alias: proto.Uint64(n.nodeAlias(MetricAlert)),
			Datatype: proto.Uint32(TypeString), Timestamp: proto.Uint64(now), IsNull: proto.Bool(true)})
	}
	for _, k := range slices.Sorted(maps.Keys(n.cfg.NodeProperties)) {
		name := PropertiesPrefix + k
		mts = append(mts, &sproto.Payload_Metric{Name: proto.String(name), Alias: proto.Uint64(n.nodeAlias(name)),
			Datatype: proto.Uint32(TypeString), Timestamp: proto.Uint64(now),
			Value: &sproto.Payload_Metric_StringValue{StringValue: n.cfg.NodeProperties[k]}})
	}
	p := &sproto.Payload{Timestamp: proto.Uint64(now), Seq: proto.Uint64(0), Metrics: mts}
	return outMsg{topic: n.topics.nbirth, kind: "NBIRTH", payload: p, rec: -1}
}

// nodeAlias returns the alias of a node metric, assigning it once.
func (n *Node) nodeAlias(name string) uint64 {
	n.idxMu.Lock()
	defer n.idxMu.Unlock()
	t := target{"", name}
	if a, ok := n.names[t]; ok {
		return a
	}
	n.nextAlias++
	n.names[t] = n.nextAlias
	n.idx[n.nextAlias] = t
	return n.nextAlias
}

// dbirth builds d's DBIRTH: every metric with its name, alias, data type,
// properties and last value (null when none was seen).
func (n *Node) dbirth(d *device) outMsg {
	now := ms(n.opts.Now().UnixNano())
	p := &sproto.Payload{Timestamp: proto.Uint64(now), Seq: proto.Uint64(n.nextSeq())}
	for _, mt := range d.metrics {
		m := &sproto.Payload_Metric{Name: proto.String(mt.name), Alias: proto.Uint64(mt.alias), Datatype: proto.Uint32(mt.dtype)}
		ps := pointProps(mt.info)
		if mt.seen {
			m.Timestamp = proto.Uint64(uint64(mt.lastT))
			setValue(m, mt.dtype, mt.last)
			if ps == nil {
				ps = &sproto.Payload_PropertySet{}
			}
			pp := props{ps}
			pp.int32("Quality", qualityCode(mt.lastQ))
		} else {
			m.Timestamp = proto.Uint64(now)
			m.IsNull = proto.Bool(true)
		}
		m.Properties = ps
		p.Metrics = append(p.Metrics, m)
	}
	d.born, d.dead, d.rebirth = true, false, ""
	return outMsg{topic: n.deviceTopic("DBIRTH", d.id), kind: "DBIRTH", payload: p, rec: -1}
}

// ddeath builds d's DDEATH.
func (n *Node) ddeath(d *device) outMsg {
	p := &sproto.Payload{Timestamp: proto.Uint64(ms(n.opts.Now().UnixNano())), Seq: proto.Uint64(n.nextSeq())}
	d.dead = true
	return outMsg{topic: n.deviceTopic("DDEATH", d.id), kind: "DDEATH", payload: p, rec: -1}
}

// build appends the messages of record i of a batch; historical records
// (accepted before the session was born) carry is_historical. When the
// record yields no message of its own it returns why, for the records
// counter: unchanged (report by exception, a device down), filtered or
// corrupt.
func (n *Node) build(out []outMsg, i int, rec ferry.Record, historical bool) ([]outMsg, string) {
	h, err := codec.PeekHeader(rec.Data)
	if err != nil {
		return out, "corrupt"
	}
	switch h.Kind {
	case codec.KindAlert:
		return n.buildAlert(out, i, rec, historical)
	case codec.KindTelemetry:
		return n.buildTelemetry(out, i, rec, historical)
	}
	return out, "corrupt"
}

func (n *Node) buildAlert(out []outMsg, i int, rec ferry.Record, historical bool) ([]outMsg, string) {
	if !n.cfg.Alerts {
		return out, "filtered"
	}
	_, a, err := codec.DecodeAlert(rec.Data)
	if err != nil {
		return out, "corrupt"
	}
	body, err := json.Marshal(ferry.NewAlertJSON(a, n.opts.Gateway))
	if err != nil {
		return out, "corrupt"
	}
	m := &sproto.Payload_Metric{Alias: proto.Uint64(n.nodeAlias(MetricAlert)), Datatype: proto.Uint32(TypeString),
		Timestamp: proto.Uint64(ms(a.Time.UnixNano())), Value: &sproto.Payload_Metric_StringValue{StringValue: string(body)}}
	var ps props
	ps.str("rule", a.Rule)
	ps.str("severity", a.Severity.String())
	ps.str("state", a.State.String())
	if a.Device != "" {
		ps.str("device", a.Device)
	}
	if a.Point != "" {
		ps.str("point", a.Point)
	}
	ps.str("recordId", rec.ID)
	m.Properties = ps.ps
	if historical {
		m.IsHistorical = proto.Bool(true)
	}
	p := &sproto.Payload{Timestamp: proto.Uint64(ms(n.opts.Now().UnixNano())), Seq: proto.Uint64(n.nextSeq()), Metrics: []*sproto.Payload_Metric{m}}
	return append(out, outMsg{topic: n.topics.ndata, kind: "NDATA", payload: p, rec: i, samples: 1, hist: historical}), ""
}

func (n *Node) buildTelemetry(out []outMsg, i int, rec ferry.Record, historical bool) ([]outMsg, string) {
	t, err := codec.DecodeTelemetry(rec.Data)
	if err != nil {
		return out, "corrupt"
	}
	if !n.wantDevice(t.Device) {
		return out, "filtered"
	}
	d := n.device(t.Device)
	if d == nil {
		return out, "filtered"
	}
	// Resolve every sample's metric first: a new point or a type the birth
	// did not declare needs a DBIRTH before the data.
	samples, bad := 0, 0
	for _, sc := range t.Scans {
		for _, s := range sc.Samples {
			mt := n.metricOf(d, s.Point, typeOf(s.Value.Kind()))
			if mt == nil {
				continue
			}
			samples++
			if s.Quality.Status == ferry.Bad {
				bad++
			}
			if !fits(mt.dtype, s.Value.Kind()) {
				mt.dtype = typeOf(s.Value.Kind())
				if d.born && d.rebirth == "" {
					d.rebirth = "type_change"
				}
			}
		}
	}
	if samples == 0 {
		return out, "filtered"
	}
	allBad := bad == samples
	if !historical && allBad {
		// The device is down: DDEATH once, then nothing until it is back.
		n.remember(d, &t)
		if d.born && !d.dead {
			o := n.ddeath(d)
			o.rec = i
			return append(out, o), ""
		}
		return out, "unchanged"
	}
	// A dead device is born again before any data, historical too: a
	// host takes no DDATA of a device after its DDEATH.
	if !d.born || d.rebirth != "" || d.dead {
		reason := d.rebirth
		if d.dead {
			reason = "device_back"
		}
		if d.born && reason != "" {
			n.m.rebirths.WithLabelValues(reason).Inc()
		}
		out = append(out, n.dbirth(d))
	}
	p := &sproto.Payload{Timestamp: proto.Uint64(ms(n.opts.Now().UnixNano()))}
	for _, sc := range t.Scans {
		for _, s := range sc.Samples {
			mt := d.byName[s.Point]
			if mt == nil {
				continue
			}
			// Report by exception: a live value equal to the last one
			// published, with the same quality, is left out. Historical
			// records go out whole.
			if !historical && mt.seen && mt.last.Equal(s.Value) && mt.lastQ == s.Quality.Status {
				continue
			}
			m := &sproto.Payload_Metric{Alias: proto.Uint64(mt.alias), Datatype: proto.Uint32(mt.dtype), Timestamp: proto.Uint64(ms(s.Time.UnixNano()))}
			setValue(m, mt.dtype, s.Value)
			if s.Quality.Status != ferry.Good || (mt.seen && mt.lastQ != ferry.Good) {
				var ps props
				ps.int32("Quality", qualityCode(s.Quality.Status))
				if s.Quality.Reason != "" {
					ps.str("reason", s.Quality.Reason)
				}
				m.Properties = ps.ps
			}
			if historical {
				m.IsHistorical = proto.Bool(true)
			}
			p.Metrics = append(p.Metrics, m)
			mt.last, mt.lastQ, mt.lastT, mt.seen = s.Value, s.Quality.Status, int64(ms(s.Time.UnixNano())), true
		}
	}
	if len(p.Metrics) == 0 {
		return out, "unchanged" // report by exception: nothing to send
	}
	p.Seq = proto.Uint64(n.nextSeq())
	return append(out, outMsg{topic: n.deviceTopic("DDATA", d.id), kind: "DDATA", payload: p, rec: i, samples: len(p.Metrics), hist: historical}), ""
}

// remember keeps the values of a record that is not published (a device
// down), so that its next birth carries them.
func (n *Node) remember(d *device, t *codec.Telemetry) {
	for _, sc := range t.Scans {
		for _, s := range sc.Samples {
			if mt := d.byName[s.Point]; mt != nil {
				mt.last, mt.lastQ, mt.lastT, mt.seen = s.Value, s.Quality.Status, int64(ms(s.Time.UnixNano())), true
			}
		}
	}
}

// marshal encodes a message's payload.
func marshal(o outMsg) ([]byte, error) {
	b, err := proto.Marshal(o.payload)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", o.kind, err)
	}
	return b, nil
}
