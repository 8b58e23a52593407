package mqtt

import (
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ferry-edge/ferry"
)

// Sparkplug B, after the Eclipse Sparkplug 3.0 specification. Topics are
//
//	spBv1.0/<group_id>/<NBIRTH|NDATA|NDEATH|NCMD>/<edge_node_id>
//	spBv1.0/<group_id>/<DBIRTH|DDATA|DDEATH|DCMD>/<edge_node_id>/<device_id>
//
// and payloads are the protobuf message org.eclipse.tahu.protobuf.Payload,
// decoded here field by field with protowire from its field numbers.
const spNamespace = "spBv1.0"

// Payload field numbers.
const (
	spPayloadTimestamp = 1
	spPayloadMetrics   = 2
	spPayloadSeq       = 3
)

// Metric field numbers.
const (
	spMetricName         = 1
	spMetricAlias        = 2
	spMetricTimestamp    = 3
	spMetricDatatype     = 4
	spMetricIsNull       = 7
	spMetricIntValue     = 10
	spMetricLongValue    = 11
	spMetricFloatValue   = 12
	spMetricDoubleValue  = 13
	spMetricBoolValue    = 14
	spMetricStringValue  = 15
	spMetricBytesValue   = 16
	spMetricDatasetValue = 17
	spMetricTemplValue   = 18
	spMetricExtValue     = 19
)

// Sparkplug data types (the DataType enum).
const (
	spInt8     = 1
	spInt16    = 2
	spInt32    = 3
	spInt64    = 4
	spUInt8    = 5
	spUInt16   = 6
	spUInt32   = 7
	spUInt64   = 8
	spFloat    = 9
	spDouble   = 10
	spBoolean  = 11
	spString   = 12
	spDateTime = 13
	spText     = 14
	spUUID     = 15
)

// errBadProtobuf is returned for a payload that is not a well-formed
// Sparkplug B protobuf.
var errBadProtobuf = errors.New("bad protobuf")

// spMetric is one decoded metric. Byte slices point into the payload.
type spMetric struct {
	name      []byte
	alias     uint64
	hasAlias  bool
	timestamp uint64
	hasTime   bool
	datatype  uint32
	isNull    bool
	valField  protowire.Number // the value field present, 0 if none
	bits      uint64           // varint and fixed values
	str       []byte           // string value
}

// spPayload is a decoded payload; reset and reused between messages.
type spPayload struct {
	timestamp uint64
	hasTime   bool
	seq       uint64
	hasSeq    bool
	metrics   []spMetric
}

// decodeSparkplug decodes b into p (reusing p's storage). Unknown fields
// are skipped; a truncated or malformed message is an error wrapping
// errBadProtobuf.
func decodeSparkplug(b []byte, p *spPayload) error {
	*p = spPayload{metrics: p.metrics[:0]}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: payload tag: %v", errBadProtobuf, protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case spPayloadTimestamp, spPayloadSeq:
			if typ != protowire.VarintType {
				return fmt.Errorf("%w: payload field %d has wire type %d", errBadProtobuf, num, typ)
			}
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%w: payload field %d: %v", errBadProtobuf, num, protowire.ParseError(n))
			}
			if num == spPayloadTimestamp {
				p.timestamp, p.hasTime = v, true
			} else {
				p.seq, p.hasSeq = v, true
			}
			b = b[n:]
		case spPayloadMetrics:
			if typ != protowire.BytesType {
				return fmt.Errorf("%w: metric has wire type %d", errBadProtobuf, typ)
			}
			mb, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: metric %d: %v", errBadProtobuf, len(p.metrics), protowire.ParseError(n))
			}
			p.metrics = append(p.metrics, spMetric{})
			if err := decodeMetric(mb, &p.metrics[len(p.metrics)-1]); err != nil {
				return fmt.Errorf("metric %d: %w", len(p.metrics)-1, err)
			}
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("%w: payload field %d: %v", errBadProtobuf, num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return nil
}

func decodeMetric(b []byte, m *spMetric) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: tag: %v", errBadProtobuf, protowire.ParseError(n))
		}
		b = b[n:]
		want := protowire.Type(-1)
		switch num {
		case spMetricName, spMetricStringValue:
			want = protowire.BytesType
		case spMetricAlias, spMetricTimestamp, spMetricDatatype, spMetricIsNull,
			spMetricIntValue, spMetricLongValue, spMetricBoolValue:
			want = protowire.VarintType
		case spMetricFloatValue:
			want = protowire.Fixed32Type
		case spMetricDoubleValue:
			want = protowire.Fixed64Type
		}
		if want >= 0 && typ != want {
			return fmt.Errorf("%w: field %d has wire type %d, want %d", errBadProtobuf, num, typ, want)
		}
		switch want {
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", errBadProtobuf, num, protowire.ParseError(n))
			}
			if num == spMetricName {
				m.name = v
			} else {
				m.valField, m.str = num, v
			}
			b = b[n:]
			continue
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", errBadProtobuf, num, protowire.ParseError(n))
			}
			switch num {
			case spMetricAlias:
				m.alias, m.hasAlias = v, true
			case spMetricTimestamp:
				m.timestamp, m.hasTime = v, true
			case spMetricDatatype:
				m.datatype = uint32(v)
			case spMetricIsNull:
				m.isNull = v != 0
			default:
				m.valField, m.bits = num, v
			}
			b = b[n:]
			continue
		case protowire.Fixed32Type:
			v, n := protowire.ConsumeFixed32(b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", errBadProtobuf, num, protowire.ParseError(n))
			}
			m.valField, m.bits = num, uint64(v)
			b = b[n:]
			continue
		case protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", errBadProtobuf, num, protowire.ParseError(n))
			}
			m.valField, m.bits = num, v
			b = b[n:]
			continue
		}
		// Metadata, properties, flags, and the value kinds ferry does not
		// read (bytes, dataset, template, extension): skipped, but the
		// value kind is remembered so that the point can be marked.
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return fmt.Errorf("%w: field %d: %v", errBadProtobuf, num, protowire.ParseError(n))
		}
		if num >= spMetricBytesValue && num <= spMetricExtValue {
			m.valField = num
		}
		b = b[n:]
	}
	return nil
}

// value converts the metric's value, read as datatype dt (the metric's own
// datatype, or the one its BIRTH declared), to a Value.
func (m *spMetric) value(dt uint32) (ferry.Value, string) {
	if m.datatype != 0 {
		dt = m.datatype
	}
	if m.isNull {
		return ferry.Value{}, reasonNull
	}
	switch m.valField {
	case spMetricIntValue, spMetricLongValue:
		v := m.bits
		switch dt {
		case spInt8:
			return ferry.IntValue(int64(int8(v))), ""
		case spInt16:
			return ferry.IntValue(int64(int16(v))), ""
		case spInt32:
			return ferry.IntValue(int64(int32(v))), ""
		case spInt64, spDateTime:
			return ferry.IntValue(int64(v)), ""
		case spUInt8:
			return ferry.UintValue(uint64(uint8(v))), ""
		case spUInt16:
			return ferry.UintValue(uint64(uint16(v))), ""
		case spUInt32:
			return ferry.UintValue(uint64(uint32(v))), ""
		case spBoolean:
			return ferry.BoolValue(v != 0), ""
		case spFloat, spDouble, spString, spText, spUUID:
			return ferry.Value{}, reasonWrongType
		}
		return ferry.UintValue(v), ""
	case spMetricFloatValue:
		return ferry.FloatValue(float64(math.Float32frombits(uint32(m.bits)))), ""
	case spMetricDoubleValue:
		return ferry.FloatValue(math.Float64frombits(m.bits)), ""
	case spMetricBoolValue:
		return ferry.BoolValue(m.bits != 0), ""
	case spMetricStringValue:
		if !utf8.Valid(m.str) {
			return ferry.Value{}, reasonBadValue
		}
		return ferry.StringValue(string(m.str)), ""
	case 0:
		return ferry.Value{}, reasonBadValue
	}
	return ferry.Value{}, reasonUnsupported
}

// spTime returns the time of metric m in payload p: the metric's own
// timestamp, else the payload's, else now.
func spTime(p *spPayload, m *spMetric, now time.Time) time.Time {
	switch {
	case m != nil && m.hasTime:
		return msTime(m.timestamp, now)
	case p.hasTime:
		return msTime(p.timestamp, now)
	}
	return now
}

func msTime(ms uint64, now time.Time) time.Time {
	if ms > uint64(math.MaxInt64/int64(time.Millisecond)) {
		return now
	}
	return time.UnixMilli(int64(ms)).UTC()
}

// spTopic is a parsed Sparkplug topic; the strings are parts of the topic.
type spTopic struct {
	group, kind, node, device string
}

// parseSparkplugTopic splits a Sparkplug B topic. ok is false for a topic
// outside the namespace or with the wrong number of levels.
func parseSparkplugTopic(topic string) (spTopic, bool) {
	var t spTopic
	if len(topic) <= len(spNamespace) || topic[:len(spNamespace)] != spNamespace || topic[len(spNamespace)] != '/' {
		return t, false
	}
	rest := topic[len(spNamespace)+1:]
	var parts [4]string
	n := 0
	for n < 4 {
		i := indexSlash(rest)
		if i < 0 {
			parts[n] = rest
			n++
			rest = ""
			break
		}
		parts[n] = rest[:i]
		rest = rest[i+1:]
		n++
	}
	if rest != "" || n < 3 {
		return t, false
	}
	t = spTopic{group: parts[0], kind: parts[1], node: parts[2], device: parts[3]}
	switch t.kind {
	case "NBIRTH", "NDATA", "NDEATH", "NCMD":
		return t, n == 3
	case "DBIRTH", "DDATA", "DDEATH", "DCMD":
		return t, n == 4
	}
	return t, false
}

func indexSlash(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return i
		}
	}
	return -1
}

// spNodeKey identifies an edge node.
type spNodeKey struct{ group, node string }

// spDevKey identifies an alias or metric name within an edge node (device
// "" is the node itself).
type spAliasKey struct {
	device string
	alias  uint64
}

type spNameKey struct {
	device, name string
}

type spAlias struct {
	name     string
	datatype uint32
}

// spNode is what ferry knows of one edge node: whether it is alive, its
// sequence numbers, the aliases and data types its BIRTHs declared, and the
// ferry devices that stand for it or its devices.
type spNode struct {
	key      spNodeKey
	filter   string
	name     string // group/edge_node, for logs and metrics
	born     bool
	bdSeq    uint64
	hasBdSeq bool
	nextSeq  uint64
	seqKnown bool
	aliases  map[spAliasKey]spAlias
	types    map[spNameKey]uint32
	dborn    map[string]bool // devices whose DBIRTH came since the NBIRTH
	devs     []*device       // every ferry device of this node

	// Rebirth requests (sparkplug.rebirth).
	askRebirth bool
	lastAsk    time.Time // when the last request was made
	asked      bool      // a request is waiting for the NBIRTH (logged once)
}

func (n *spNode) rebirth() {
	n.aliases = map[spAliasKey]spAlias{}
	n.types = map[spNameKey]uint32{}
	n.dborn = map[string]bool{}
}

// learn records the aliases and data types a BIRTH declares.
func (n *spNode) learn(device string, p *spPayload) {
	if n.aliases == nil {
		n.rebirth()
	}
	if device != "" {
		n.dborn[device] = true
	}
	// A DBIRTH replaces what the device declared before.
	for k := range n.aliases {
		if k.device == device {
			delete(n.aliases, k)
		}
	}
	for k := range n.types {
		if k.device == device {
			delete(n.types, k)
		}
	}
	for i := range p.metrics {
		m := &p.metrics[i]
		if len(m.name) == 0 {
			continue
		}
		name := string(m.name)
		n.types[spNameKey{device, name}] = m.datatype
		if m.hasAlias {
			n.aliases[spAliasKey{device, m.alias}] = spAlias{name: name, datatype: m.datatype}
		}
	}
}

// resolve returns the name and declared datatype of metric m of device;
// ok is false for an alias no BIRTH declared.
func (n *spNode) resolve(device string, m *spMetric) (string, uint32, bool) {
	if len(m.name) > 0 {
		dt := n.types[spNameKey{device, string(m.name)}]
		return string(m.name), dt, true
	}
	if !m.hasAlias {
		return "", 0, false
	}
	a, ok := n.aliases[spAliasKey{device, m.alias}]
	return a.name, a.datatype, ok
}

// checkSeq checks a message's sequence number against the node's; on a
// gap it returns the number it expected.
func (n *spNode) checkSeq(p *spPayload) (want uint64, gap bool) {
	if !p.hasSeq {
		return 0, false
	}
	want = n.nextSeq
	gap = n.born && n.seqKnown && p.seq != want
	n.nextSeq, n.seqKnown = (p.seq+1)%256, true
	return want, gap
}

// bdSeqOf returns the bdSeq metric of an NBIRTH or NDEATH.
func bdSeqOf(p *spPayload) (uint64, bool) {
	for i := range p.metrics {
		if string(p.metrics[i].name) == "bdSeq" {
			switch p.metrics[i].valField {
			case spMetricIntValue, spMetricLongValue:
				return p.metrics[i].bits, true
			}
		}
	}
	return 0, false
}

// rebirthInterval is the least time between two rebirth requests to one
// edge node: a node that does not answer (or whose answer is lost) is
// asked again at most this often while its data cannot be resolved.
const rebirthInterval = 30 * time.Second

// rebirthMetric is the NCMD metric that asks an edge node to publish its
// NBIRTH and DBIRTHs again (Sparkplug 3.0, "Node Control/Rebirth").
const rebirthMetric = "Node Control/Rebirth"

// rebirthTopic is the topic of an NCMD to node.
func rebirthTopic(k spNodeKey) string {
	return spNamespace + "/" + k.group + "/NCMD/" + k.node
}

// appendRebirthRequest appends the payload of a rebirth NCMD: timestamp
// ms, and one metric Node Control/Rebirth, Boolean, true, with the same
// timestamp. Host commands carry no seq.
func appendRebirthRequest(b []byte, ms uint64) []byte {
	var m []byte
	m = protowire.AppendTag(m, spMetricName, protowire.BytesType)
	m = protowire.AppendString(m, rebirthMetric)
	m = protowire.AppendTag(m, spMetricTimestamp, protowire.VarintType)
	m = protowire.AppendVarint(m, ms)
	m = protowire.AppendTag(m, spMetricDatatype, protowire.VarintType)
	m = protowire.AppendVarint(m, spBoolean)
	m = protowire.AppendTag(m, spMetricBoolValue, protowire.VarintType)
	m = protowire.AppendVarint(m, protowire.EncodeBool(true))
	b = protowire.AppendTag(b, spPayloadTimestamp, protowire.VarintType)
	b = protowire.AppendVarint(b, ms)
	b = protowire.AppendTag(b, spPayloadMetrics, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}
