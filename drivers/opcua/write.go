package opcua

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
)

var _ ferry.Writer = (*Driver)(nil)

// This file writes points: an Attribute Write of the Value with the node's
// DataType, converted from the command's value only where no information
// is lost, then a Read of the point, compared with what was written.
// call.go calls methods. Both use the device's session: a device that is
// not connected refuses at once, and nothing is ever retried.

// liveSession is the device's session writes use: set once the session is
// prepared, cleared before it closes. It caches the built-in type of every
// node written in that session.
type liveSession struct {
	mu    sync.Mutex
	s     *session
	types map[string]nodeType
}

// nodeType is what a write needs to know of a node: the built-in type its
// value is written as, or why it cannot be written.
type nodeType struct {
	t      ua.TypeID
	reason string
}

// setLive makes s the session writes use (nil: none, the device is not
// connected) and forgets the node types learned in the previous one.
func (dv *device) setLive(s *session) {
	dv.live.mu.Lock()
	defer dv.live.mu.Unlock()
	dv.live.s = s
	dv.live.types = nil
}

func (dv *device) liveSession() *session {
	dv.live.mu.Lock()
	defer dv.live.mu.Unlock()
	return dv.live.s
}

// Write writes one point, or calls one method, of one of the driver's
// devices (see ferry.Writer).
func (d *Driver) Write(ctx context.Context, req ferry.WriteRequest) (ferry.WriteResult, error) {
	var dv *device
	for _, x := range d.devs {
		if x.cfg.Name == req.Device {
			dv = x
		}
	}
	if dv == nil {
		return ferry.WriteResult{}, fmt.Errorf("opcua: device %q: %w", req.Device, ferry.ErrUnknownDevice)
	}
	if m := dv.method(req.Point); m != nil {
		return dv.call(ctx, m, req.Args)
	}
	for _, p := range dv.points {
		if p.name == req.Point {
			return dv.write(ctx, p, req.Value)
		}
	}
	return ferry.WriteResult{}, fmt.Errorf("opcua: device %s: point or method %q: %w", req.Device, req.Point, ferry.ErrUnknownPoint)
}

// refused returns the error of a write that sent nothing to the device.
func refused(what, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", what, fmt.Sprintf(format, args...), ferry.ErrWriteRefused)
}

// ready returns the session a write or call may use now, or why not.
func (dv *device) ready(ctx context.Context, what string) (*session, error) {
	if err := ctx.Err(); err != nil {
		return nil, refused(what, "%v before the request was sent", err)
	}
	s := dv.liveSession()
	if s == nil {
		return nil, refused(what, "device %s is not connected", dv.cfg.Name)
	}
	// The session goroutine may not have seen the loss yet (it does at
	// its next poll or keep-alive); the client knows at once.
	if st := s.c.State(); st != opcua.Connected {
		return nil, refused(what, "device %s is not connected (session %s)", dv.cfg.Name, strings.ToLower(st.String()))
	}
	return s, nil
}

// write writes v to p, reads p back and compares.
func (dv *device) write(ctx context.Context, p *point, v ferry.Value) (ferry.WriteResult, error) {
	what := "write " + dv.cfg.Name + "." + p.name
	if !p.writable {
		return ferry.WriteResult{}, refused(what, "the point is not declared writable (no write: in the device map)")
	}
	s, err := dv.ready(ctx, what)
	if err != nil {
		return ferry.WriteResult{}, err
	}
	n, err := p.id.resolve(s.c.Namespaces())
	if err != nil {
		return ferry.WriteResult{}, refused(what, "node %s: %s", p.id, reasonNamespaceUnknown)
	}
	nt, err := dv.nodeType(ctx, s, n)
	if err != nil {
		return ferry.WriteResult{}, refused(what, "read the data type of %s: %s", p.id, reasonOf(err))
	}
	if nt.reason != "" {
		return ferry.WriteResult{}, refused(what, "node %s: %s", p.id, nt.reason)
	}
	variant, reason := toVariant(v, nt.t)
	if reason != "" {
		return ferry.WriteResult{}, refused(what, "%s", reason)
	}
	want, _ := convert(variant, -1) // what a read of the written value gives
	dv.m.writes.Inc()
	res, err := s.c.Write(ctx, &ua.WriteRequest{NodesToWrite: []*ua.WriteValue{{
		NodeID:      n,
		AttributeID: ua.AttributeIDValue,
		Value:       &ua.DataValue{EncodingMask: ua.DataValueValue, Value: variant},
	}}})
	switch {
	case err != nil:
		dv.m.writeError(reasonOf(err))
		return ferry.WriteResult{}, sendError(what, err)
	case len(res.Results) != 1:
		dv.m.writeError("error")
		return ferry.WriteResult{}, fmt.Errorf("%s: server answered %d results for one node: %w", what, len(res.Results), ferry.ErrWriteUnknown)
	case severity(res.Results[0]) == ferry.Bad:
		dv.m.writeError(StatusName(res.Results[0]))
		return ferry.WriteResult{}, fmt.Errorf("%s: node %s: %s", what, p.id, StatusName(res.Results[0]))
	}
	return dv.readBack(ctx, s, what, n, want)
}

// readBack reads node n after a write of want and compares.
func (dv *device) readBack(ctx context.Context, s *session, what string, n *ua.NodeID, want ferry.Value) (ferry.WriteResult, error) {
	rr, err := s.c.Read(ctx, &ua.ReadRequest{
		NodesToRead:        []*ua.ReadValueID{{NodeID: n, AttributeID: ua.AttributeIDValue}},
		TimestampsToReturn: ua.TimestampsToReturnNeither,
	})
	if err == nil && len(rr.Results) != 1 {
		err = fmt.Errorf("server answered %d results for one node", len(rr.Results))
	}
	if err != nil {
		dv.m.writeError("read back")
		return ferry.WriteResult{}, fmt.Errorf("%s: written, but the read back failed: %s", what, reasonOf(err))
	}
	var got ferry.Sample
	sampleOf(&got, rr.Results[0], -1, dv.now())
	res := ferry.WriteResult{ReadBack: got.Value, Time: dv.now()}
	switch {
	case got.Quality.Status == ferry.Bad:
		dv.m.writeError("read back")
		return res, fmt.Errorf("%s: written, but the read back is Bad: %s", what, got.Quality.Reason)
	case !got.Value.Equal(want):
		dv.m.writeError("mismatch")
		return res, fmt.Errorf("%s: wrote %v, read back %v: %w", what, want, got.Value, ferry.ErrReadBackMismatch)
	}
	return res, nil
}

// sendError classifies the error of a Write or Call request: a status the
// server answered with (a service fault: nothing was done), the client
// having no channel (nothing was sent: refused), or no answer (a timeout,
// a cut connection: the outcome is unknown).
func sendError(what string, err error) error {
	var sc ua.StatusCode
	switch {
	case errors.Is(err, ua.StatusBadServerNotConnected), errors.Is(err, ua.StatusBadNotConnected),
		errors.Is(err, ua.StatusBadSecureChannelClosed), errors.Is(err, ua.StatusBadConnectionClosed):
		// The client checks its channel before sending.
		return refused(what, "not connected (%s)", reasonOf(err))
	case errors.Is(err, ua.StatusBadTimeout), errors.Is(err, ua.StatusBadRequestTimeout),
		errors.Is(err, ua.StatusBadUnknownResponse),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return fmt.Errorf("%s: no answer (%s): %w", what, reasonOf(err), ferry.ErrWriteUnknown)
	case errors.As(err, &sc):
		// A service fault: the server answered and did nothing.
		return fmt.Errorf("%s: %s", what, StatusName(sc))
	}
	return fmt.Errorf("%s: %v: %w", what, err, ferry.ErrWriteUnknown)
}

// nodeType returns the built-in type values of node n are written as,
// reading the node's DataType attribute (and its value, for an abstract
// type such as BaseDataType or Number) once per session.
func (dv *device) nodeType(ctx context.Context, s *session, n *ua.NodeID) (nodeType, error) {
	key := n.String()
	dv.live.mu.Lock()
	nt, ok := dv.live.types[key]
	dv.live.mu.Unlock()
	if ok {
		return nt, nil
	}
	res, err := s.c.Read(ctx, &ua.ReadRequest{
		NodesToRead: []*ua.ReadValueID{
			{NodeID: n, AttributeID: ua.AttributeIDDataType},
			{NodeID: n, AttributeID: ua.AttributeIDValue},
		},
		TimestampsToReturn: ua.TimestampsToReturnNeither,
	})
	if err != nil {
		return nodeType{}, err
	}
	if len(res.Results) != 2 {
		return nodeType{}, fmt.Errorf("server answered %d results for two attributes", len(res.Results))
	}
	nt = typeOf(res.Results[0], res.Results[1])
	dv.live.mu.Lock()
	if dv.live.s == s {
		if dv.live.types == nil {
			dv.live.types = map[string]nodeType{}
		}
		dv.live.types[key] = nt
	}
	dv.live.mu.Unlock()
	return nt, nil
}

// Data types of namespace 0 that are written as a built-in type.
var derivedTypes = map[uint32]ua.TypeID{
	id.UtcTime:  ua.TypeIDDateTime,
	id.Duration: ua.TypeIDDouble,
}

// typeOf decides the built-in type of a node from its DataType attribute
// and its current value.
func typeOf(dt, val *ua.DataValue) nodeType {
	if dt != nil && val != nil && severity(dt.Status) == ferry.Bad && severity(val.Status) == ferry.Bad {
		return nodeType{reason: StatusName(dt.Status)} // BadNodeIdUnknown, …
	}
	var cur *ua.Variant
	if val != nil && severity(val.Status) != ferry.Bad && val.Value != nil && val.Value.Value() != nil {
		cur = val.Value
	}
	if cur != nil && cur.Has(ua.VariantArrayValues) {
		return nodeType{reason: reasonArray}
	}
	if dt != nil && severity(dt.Status) == ferry.Good && dt.Value != nil {
		if nid, ok := dt.Value.Value().(*ua.NodeID); ok && nid.Namespace() == 0 && nid.Type() != ua.NodeIDTypeString {
			n := nid.IntID()
			switch {
			case n >= uint32(ua.TypeIDBoolean) && n <= uint32(ua.TypeIDDiagnosticInfo) && writable(ua.TypeID(n)):
				return nodeType{t: ua.TypeID(n)}
			case n >= uint32(ua.TypeIDGUID) && n <= uint32(ua.TypeIDDiagnosticInfo) && n != id.Structure && n != id.BaseDataType:
				// ByteString, Guid, NodeId, StatusCode, QualifiedName, …
				return nodeType{reason: "data type " + typeName(ua.TypeID(n)) + " cannot be written by ferry"}
			case derivedTypes[n] != 0:
				return nodeType{t: derivedTypes[n]}
			}
		}
	}
	// An abstract type (BaseDataType, Number, an enumeration …), or a
	// server that does not tell: the type of the current value.
	if cur != nil && writable(cur.Type()) {
		return nodeType{t: cur.Type()}
	}
	what := "unknown"
	if dt != nil && dt.Value != nil {
		if nid, ok := dt.Value.Value().(*ua.NodeID); ok {
			what = nid.String()
		}
	}
	return nodeType{reason: "data type " + what + " cannot be written by ferry (and the node holds no value of a type it can write)"}
}

func writable(t ua.TypeID) bool {
	_, ok := writeTypes[typeName(t)]
	return ok
}

// The ranges of the integer built-in types.
var intRanges = map[ua.TypeID]struct {
	min int64
	max uint64
}{
	ua.TypeIDSByte:  {math.MinInt8, math.MaxInt8},
	ua.TypeIDByte:   {0, math.MaxUint8},
	ua.TypeIDInt16:  {math.MinInt16, math.MaxInt16},
	ua.TypeIDUint16: {0, math.MaxUint16},
	ua.TypeIDInt32:  {math.MinInt32, math.MaxInt32},
	ua.TypeIDUint32: {0, math.MaxUint32},
	ua.TypeIDInt64:  {math.MinInt64, math.MaxInt64},
	ua.TypeIDUint64: {0, math.MaxUint64},
}

// toVariant converts v to built-in type t without losing information: a
// whole number in range for an integer type, a number a Float holds (as
// ferry reads it back: 0.1 is written as the float32 that reads 0.1), a
// number a Double holds exactly, text for String and LocalizedText, RFC
// 3339 text for DateTime. Otherwise it returns why not.
func toVariant(v ferry.Value, t ua.TypeID) (*ua.Variant, string) {
	name := typeName(t)
	kindErr := func() string {
		return fmt.Sprintf("%v (%s) cannot be written to a %s node", v, v.Kind(), name)
	}
	var x any
	switch t {
	case ua.TypeIDBoolean:
		if v.Kind() != ferry.KindBool {
			return nil, kindErr()
		}
		x = v.Bool()
	case ua.TypeIDSByte, ua.TypeIDByte, ua.TypeIDInt16, ua.TypeIDUint16,
		ua.TypeIDInt32, ua.TypeIDUint32, ua.TypeIDInt64, ua.TypeIDUint64:
		neg, mag, reason := wholeNumber(v)
		if reason != "" {
			return nil, fmt.Sprintf("%v does not fit %s (%s)", v, name, reason)
		}
		r := intRanges[t]
		if (neg && (r.min == 0 || mag > uint64(-(r.min+1))+1)) || (!neg && mag > r.max) {
			return nil, fmt.Sprintf("%v is out of range of %s (%d..%d)", v, name, r.min, r.max)
		}
		x = intOf(t, neg, mag)
	case ua.TypeIDFloat, ua.TypeIDDouble:
		f, reason := exactFloat(v, t == ua.TypeIDFloat)
		if reason != "" {
			return nil, fmt.Sprintf("%v does not fit %s (%s)", v, name, reason)
		}
		if t == ua.TypeIDFloat {
			x = float32(f)
		} else {
			x = f
		}
	case ua.TypeIDString:
		if v.Kind() != ferry.KindString {
			return nil, kindErr()
		}
		x = v.Str()
	case ua.TypeIDLocalizedText:
		if v.Kind() != ferry.KindString {
			return nil, kindErr()
		}
		x = ua.NewLocalizedText(v.Str())
	case ua.TypeIDDateTime:
		if v.Kind() != ferry.KindString {
			return nil, kindErr()
		}
		ts, err := time.Parse(time.RFC3339Nano, v.Str())
		switch {
		case err != nil:
			return nil, fmt.Sprintf("%q is not an RFC 3339 time for a DateTime node", v.Str())
		case ts.Nanosecond()%100 != 0:
			return nil, fmt.Sprintf("%q is finer than a DateTime holds (100ns)", v.Str())
		case ts.Year() < 1601 || ts.Year() > 9999:
			return nil, fmt.Sprintf("%q is outside a DateTime's years 1601..9999", v.Str())
		}
		x = ts.UTC()
	default:
		return nil, "data type " + name + " cannot be written by ferry"
	}
	variant, err := ua.NewVariant(x)
	if err != nil {
		return nil, err.Error()
	}
	return variant, ""
}

// wholeNumber returns v as a sign and magnitude when v is a whole number
// (an int, a uint, or a float without fraction).
func wholeNumber(v ferry.Value) (neg bool, mag uint64, reason string) {
	switch v.Kind() {
	case ferry.KindInt:
		i := v.Int64()
		if i < 0 {
			return true, uint64(-(i + 1)) + 1, ""
		}
		return false, uint64(i), ""
	case ferry.KindUint:
		return false, v.Uint64(), ""
	case ferry.KindFloat:
		f := v.Float64()
		switch {
		case math.IsNaN(f) || math.IsInf(f, 0):
			return false, 0, "not a finite number"
		case f != math.Trunc(f):
			return false, 0, "not a whole number"
		case math.Abs(f) >= 1<<64:
			return false, 0, "out of range"
		case f < 0:
			return true, uint64(-f), ""
		}
		return false, uint64(f), ""
	}
	return false, 0, "not a number"
}

// intOf returns sign and magnitude as a value of integer type t (in range).
func intOf(t ua.TypeID, neg bool, mag uint64) any {
	i := int64(mag) // wraps for MinInt64's magnitude, which negates back to itself
	if neg {
		i = -i
	}
	switch t {
	case ua.TypeIDSByte:
		return int8(i)
	case ua.TypeIDByte:
		return uint8(mag)
	case ua.TypeIDInt16:
		return int16(i)
	case ua.TypeIDUint16:
		return uint16(mag)
	case ua.TypeIDInt32:
		return int32(i)
	case ua.TypeIDUint32:
		return uint32(mag)
	case ua.TypeIDInt64:
		return i
	}
	return mag
}

// exactFloat returns v as a float64 that a Float (single) or Double holds
// with no loss: for a Float, one whose float32 reads back (widened to its
// shortest decimal form, as a read reports it) as the same number.
func exactFloat(v ferry.Value, single bool) (float64, string) {
	var f float64
	switch v.Kind() {
	case ferry.KindFloat:
		f = v.Float64()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, "not a finite number"
		}
	case ferry.KindInt, ferry.KindUint:
		neg, mag, _ := wholeNumber(v)
		f = float64(mag)
		if mag != 0 && (f >= 1<<64 || uint64(f) != mag) {
			return 0, "a Double cannot hold this integer exactly"
		}
		if neg {
			f = -f
		}
		if single {
			f32 := float32(f)
			if float64(f32) != f {
				return 0, "a Float cannot hold this integer exactly"
			}
		}
		return f, ""
	default:
		return 0, "not a number"
	}
	if single {
		f32 := float32(f)
		if math.IsInf(float64(f32), 0) {
			return 0, "beyond the range of a Float"
		}
		// Exact, or the shortest decimal form of the float32 (0.1 for
		// 0.1f, as a read reports it).
		if float64(f32) != f {
			short, _ := strconv.ParseFloat(strconv.FormatFloat(float64(f32), 'g', -1, 32), 64)
			if short != f {
				return 0, "a Float would hold " + strconv.FormatFloat(widen(f32), 'g', -1, 64)
			}
		}
	}
	return f, ""
}
