package sparkplug

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/uplink/sparkplug/sproto"
)

// Sparkplug B data types (the specification's table of metric types).
const (
	TypeInt8     uint32 = 1
	TypeInt16    uint32 = 2
	TypeInt32    uint32 = 3
	TypeInt64    uint32 = 4
	TypeUInt8    uint32 = 5
	TypeUInt16   uint32 = 6
	TypeUInt32   uint32 = 7
	TypeUInt64   uint32 = 8
	TypeFloat    uint32 = 9
	TypeDouble   uint32 = 10
	TypeBoolean  uint32 = 11
	TypeString   uint32 = 12
	TypeDateTime uint32 = 13
	TypeText     uint32 = 14
)

// Names of the node metrics ferry publishes.
const (
	MetricBdSeq   = "bdSeq"
	MetricRebirth = "Node Control/Rebirth"
	MetricAlert   = "Alerts/Event"
	// PropertiesPrefix prefixes Config.NodeProperties in the NBIRTH.
	PropertiesPrefix = "Properties/"
)

// Quality codes of the "Quality" metric property (OPC DA codes, as
// Ignition reads them).
const (
	QualityGood      = 192
	QualityUncertain = 64
	QualityBad       = 0
)

// typeOf returns the Sparkplug data type of a ferry value kind.
func typeOf(k ferry.Kind) uint32 {
	switch k {
	case ferry.KindInt:
		return TypeInt64
	case ferry.KindUint:
		return TypeUInt64
	case ferry.KindBool:
		return TypeBoolean
	case ferry.KindString:
		return TypeString
	}
	return TypeDouble
}

// typeHint returns the data type a configured point type suggests, for a
// birth published before any value of the point was seen.
func typeHint(p *ferry.PointInfo) uint32 {
	t := strings.ToLower(p.Type)
	switch {
	case t == "":
		return TypeDouble
	case strings.Contains(t, "bool") || t == "coil" || t == "discrete":
		return TypeBoolean
	case strings.Contains(t, "string") || t == "text":
		return TypeString
	case strings.Contains(t, "float") || strings.Contains(t, "double") || strings.Contains(t, "real"):
		return TypeDouble
	case p.Scale != 0 && p.Scale != 1 || p.Offset != 0:
		return TypeDouble
	case strings.HasPrefix(t, "uint") || strings.HasPrefix(t, "u"):
		return TypeUInt64
	case strings.Contains(t, "int"):
		return TypeInt64
	}
	return TypeDouble
}

// fits reports whether a value of kind k is published as data type t
// without a rebirth.
func fits(t uint32, k ferry.Kind) bool {
	return k == ferry.KindNone || typeOf(k) == t
}

// setValue sets m's value from v, as data type t.
func setValue(m *sproto.Payload_Metric, t uint32, v ferry.Value) {
	if v.IsNone() {
		m.IsNull = proto.Bool(true)
		return
	}
	switch t {
	case TypeInt64:
		m.Value = &sproto.Payload_Metric_LongValue{LongValue: uint64(v.Int64())}
	case TypeUInt64:
		m.Value = &sproto.Payload_Metric_LongValue{LongValue: v.Uint64()}
	case TypeBoolean:
		m.Value = &sproto.Payload_Metric_BooleanValue{BooleanValue: v.Bool()}
	case TypeString:
		m.Value = &sproto.Payload_Metric_StringValue{StringValue: v.String()}
	default:
		m.Value = &sproto.Payload_Metric_DoubleValue{DoubleValue: v.Float64()}
	}
}

// qualityCode maps a ferry status to the Quality property.
func qualityCode(s ferry.Status) uint32 {
	switch s {
	case ferry.Good:
		return QualityGood
	case ferry.Uncertain:
		return QualityUncertain
	}
	return QualityBad
}

// props builds a property set from alternating keys and values (string,
// bool, int32 (as uint32 for Int32), float64).
type props struct{ ps *sproto.Payload_PropertySet }

func (p *props) add(key string, v *sproto.Payload_PropertyValue) {
	if p.ps == nil {
		p.ps = &sproto.Payload_PropertySet{}
	}
	p.ps.Keys = append(p.ps.Keys, key)
	p.ps.Values = append(p.ps.Values, v)
}

func (p *props) str(key, v string) {
	p.add(key, &sproto.Payload_PropertyValue{Type: proto.Uint32(TypeString), Value: &sproto.Payload_PropertyValue_StringValue{StringValue: v}})
}

func (p *props) int32(key string, v uint32) {
	p.add(key, &sproto.Payload_PropertyValue{Type: proto.Uint32(TypeInt32), Value: &sproto.Payload_PropertyValue_IntValue{IntValue: v}})
}

func (p *props) double(key string, v float64) {
	p.add(key, &sproto.Payload_PropertyValue{Type: proto.Uint32(TypeDouble), Value: &sproto.Payload_PropertyValue_DoubleValue{DoubleValue: v}})
}

func (p *props) boolean(key string, v bool) {
	p.add(key, &sproto.Payload_PropertyValue{Type: proto.Uint32(TypeBoolean), Value: &sproto.Payload_PropertyValue_BooleanValue{BooleanValue: v}})
}

// pointProps are the birth properties of a configured point: engUnit,
// description, source, protocol, readOnly, writeMin and writeMax.
func pointProps(p *ferry.PointInfo) *sproto.Payload_PropertySet {
	var ps props
	if p == nil {
		return nil
	}
	if p.Unit != "" {
		ps.str("engUnit", p.Unit)
	}
	if p.Description != "" {
		ps.str("description", p.Description)
	}
	if p.Source != "" {
		ps.str("source", p.Source)
	}
	if p.Protocol != "" {
		ps.str("protocol", p.Protocol)
	}
	ps.boolean("readOnly", p.Write == nil)
	if w := p.Write; w != nil {
		if w.Min != nil {
			ps.double("writeMin", *w.Min)
		}
		if w.Max != nil {
			ps.double("writeMax", *w.Max)
		}
	}
	return ps.ps
}

// State is the payload of spBv1.0/STATE/<host_id> (Sparkplug 3.0).
type State struct {
	Online    bool  `json:"online"`
	Timestamp int64 `json:"timestamp"`
}

// ErrInvalidState is returned by ParseState for a payload that is not a
// Sparkplug 3.0 STATE message.
var ErrInvalidState = errors.New("invalid STATE payload")

// ParseState decodes a STATE payload: a JSON object with a boolean
// online and a non-negative integer timestamp (ms since the epoch).
func ParseState(b []byte) (State, error) {
	if len(b) > 4096 {
		return State{}, fmt.Errorf("%w: %d bytes", ErrInvalidState, len(b))
	}
	var raw struct {
		Online    *bool            `json:"online"`
		Timestamp *json.RawMessage `json:"timestamp"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return State{}, fmt.Errorf("%w: %v", ErrInvalidState, err)
	}
	if raw.Online == nil || raw.Timestamp == nil {
		return State{}, fmt.Errorf("%w: online and timestamp are required", ErrInvalidState)
	}
	var ts float64
	if err := json.Unmarshal(*raw.Timestamp, &ts); err != nil || ts < 0 || ts != math.Trunc(ts) || ts > 1<<53 {
		return State{}, fmt.Errorf("%w: timestamp %s is not a non-negative integer", ErrInvalidState, *raw.Timestamp)
	}
	return State{Online: *raw.Online, Timestamp: int64(ts)}, nil
}

// Command is one metric of an NCMD or DCMD payload.
type Command struct {
	// Name is the metric's name; empty when the command gave only an
	// alias (the node resolves it).
	Name  string
	Alias uint64
	// HasAlias tells an alias 0 from none.
	HasAlias bool
	Value    ferry.Value
	// Unsupported is set (with Value none) for a value ferry cannot write:
	// bytes, data sets, templates, extensions, null.
	Unsupported string
}

// ErrInvalidCommand is returned by ParseCommand for a payload that is not
// a Sparkplug B payload.
var ErrInvalidCommand = errors.New("invalid command payload")

// maxCommandMetrics bounds the metrics of one command payload.
const maxCommandMetrics = 1024

// ParseCommand decodes an NCMD or DCMD payload into its metrics and the
// payload's timestamp.
func ParseCommand(b []byte) ([]Command, uint64, error) {
	if len(b) > 1<<20 {
		return nil, 0, fmt.Errorf("%w: %d bytes", ErrInvalidCommand, len(b))
	}
	var p sproto.Payload
	if err := proto.Unmarshal(b, &p); err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrInvalidCommand, err)
	}
	if len(p.Metrics) == 0 {
		return nil, 0, fmt.Errorf("%w: no metrics", ErrInvalidCommand)
	}
	if len(p.Metrics) > maxCommandMetrics {
		return nil, 0, fmt.Errorf("%w: %d metrics (at most %d)", ErrInvalidCommand, len(p.Metrics), maxCommandMetrics)
	}
	out := make([]Command, 0, len(p.Metrics))
	for _, m := range p.Metrics {
		c := Command{Name: m.GetName(), Alias: m.GetAlias(), HasAlias: m.Alias != nil}
		if c.Name == "" && !c.HasAlias {
			return nil, 0, fmt.Errorf("%w: a metric without name or alias", ErrInvalidCommand)
		}
		c.Value, c.Unsupported = commandValue(m)
		out = append(out, c)
	}
	return out, p.GetTimestamp(), nil
}

// commandValue reads a command metric's value by its declared datatype
// (or, without one, by the field that is set).
func commandValue(m *sproto.Payload_Metric) (ferry.Value, string) {
	if m.GetIsNull() {
		return ferry.Value{}, "null value"
	}
	t := m.GetDatatype()
	switch v := m.Value.(type) {
	case *sproto.Payload_Metric_IntValue:
		switch t {
		case TypeInt8:
			return ferry.IntValue(int64(int8(v.IntValue))), ""
		case TypeInt16:
			return ferry.IntValue(int64(int16(v.IntValue))), ""
		case TypeInt32:
			return ferry.IntValue(int64(int32(v.IntValue))), ""
		case TypeBoolean:
			return ferry.BoolValue(v.IntValue != 0), ""
		}
		return ferry.UintValue(uint64(v.IntValue)), ""
	case *sproto.Payload_Metric_LongValue:
		switch t {
		case TypeInt8, TypeInt16, TypeInt32, TypeInt64, TypeDateTime:
			return ferry.IntValue(int64(v.LongValue)), ""
		}
		return ferry.UintValue(v.LongValue), ""
	case *sproto.Payload_Metric_FloatValue:
		return ferry.FloatValue(ferry.Widen32(v.FloatValue)), ""
	case *sproto.Payload_Metric_DoubleValue:
		return ferry.FloatValue(v.DoubleValue), ""
	case *sproto.Payload_Metric_BooleanValue:
		return ferry.BoolValue(v.BooleanValue), ""
	case *sproto.Payload_Metric_StringValue:
		return ferry.StringValue(v.StringValue), ""
	case *sproto.Payload_Metric_BytesValue:
		return ferry.Value{}, "bytes value"
	case nil:
		if len(m.ProtoReflect().GetUnknown()) > 0 {
			return ferry.Value{}, "data set, template or extension value"
		}
		return ferry.Value{}, "no value"
	}
	return ferry.Value{}, "unsupported value"
}
