package mqtt

import (
	"bytes"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/ferry-edge/ferry"
)

// Reasons a payload (or a part of it) is refused. They label
// ferry_mqtt_payload_errors_total and are the Reason of Bad samples.
const (
	reasonNotJSON      = "not json"
	reasonMissingPath  = "missing path"
	reasonWrongType    = "wrong type"
	reasonNull         = "null"
	reasonBadValue     = "bad value"
	reasonOutOfRange   = "out of range"
	reasonBadTime      = "bad time"
	reasonTooLarge     = "too large"
	reasonBadTopic     = "bad topic"
	reasonBadProtobuf  = "bad protobuf"
	reasonUnknownAlias = "unknown alias"
	reasonUnsupported  = "unsupported type"
	reasonSeqGap       = "seq gap"
	reasonStaleDeath   = "stale death"
	reasonNodeDeath    = "node death"
	reasonDeviceDeath  = "device death"
	reasonSubRefused   = "subscription refused"
)

// reasonOf maps a decode error to its reason.
func reasonOf(err error) string {
	switch {
	case errors.Is(err, errNotJSON):
		return reasonNotJSON
	case errors.Is(err, errMissingPath):
		return reasonMissingPath
	case errors.Is(err, errWrongType):
		return reasonWrongType
	case errors.Is(err, errNull):
		return reasonNull
	case errors.Is(err, errBadValue):
		return reasonBadValue
	case errors.Is(err, errOutOfRange):
		return reasonOutOfRange
	}
	return reasonBadValue
}

var errBadValue = errors.New("bad value")

// coerce converts v to the point type typ ("" keeps v).
func coerce(v ferry.Value, typ string) (ferry.Value, error) {
	switch typ {
	case "":
		return v, nil
	case "float":
		if f, ok := v.Number(); ok {
			return ferry.FloatValue(f), nil
		}
		if v.Kind() == ferry.KindString {
			f, err := parseFloatText(v.Str())
			switch {
			case err == nil:
				return ferry.FloatValue(f), nil
			case errors.Is(err, errOutOfRange):
				return ferry.FloatValue(f), err
			}
		}
	case "int":
		switch v.Kind() {
		case ferry.KindInt, ferry.KindBool:
			return ferry.IntValue(v.Int64()), nil
		case ferry.KindUint:
			if v.Uint64() <= math.MaxInt64 {
				return ferry.IntValue(int64(v.Uint64())), nil
			}
		case ferry.KindFloat:
			if i, ok := integral(v.Float64()); ok {
				return ferry.IntValue(i), nil
			}
		case ferry.KindString:
			s := strings.TrimSpace(v.Str())
			if i, err := strconv.ParseInt(s, 10, 64); err == nil {
				return ferry.IntValue(i), nil
			}
			if f, err := parseFloatText(s); err == nil {
				if i, ok := integral(f); ok {
					return ferry.IntValue(i), nil
				}
			}
		}
	case "bool":
		switch v.Kind() {
		case ferry.KindBool:
			return v, nil
		case ferry.KindInt, ferry.KindUint, ferry.KindFloat:
			return ferry.BoolValue(v.Bool()), nil
		case ferry.KindString:
			if b, ok := parseBoolText(v.Str()); ok {
				return ferry.BoolValue(b), nil
			}
		}
	case "string":
		if v.Kind() == ferry.KindString {
			return v, nil
		}
		if !v.IsNone() {
			return ferry.StringValue(v.String()), nil
		}
	}
	return ferry.Value{}, errWrongType
}

// integral returns f as an int64 when it is a whole number in range.
func integral(f float64) (int64, bool) {
	if f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, false
	}
	return int64(f), true
}

// parseFloatText parses a decimal number written as text: "21.5",
// " -3e2 ". Hex, underscores, "inf" and "nan" are refused.
func parseFloatText(s string) (float64, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "+")
	if s == "" || scanNumber([]byte(s), 0) != len(s) {
		return 0, errBadValue
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, errBadValue
	}
	if math.IsInf(f, 0) {
		return f, errOutOfRange
	}
	return f, nil
}

func parseBoolText(s string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "1", "on", "yes":
		return true, true
	case "false", "0", "off", "no":
		return false, true
	}
	return false, false
}

// scalarValue parses a `value` payload: a number, true/false, or else a
// UTF-8 string (trimmed of surrounding white space).
func scalarValue(payload []byte) (ferry.Value, error) {
	p := bytes.TrimSpace(payload)
	switch {
	case len(p) == 0:
		return ferry.Value{}, errBadValue
	case string(p) == "true":
		return ferry.BoolValue(true), nil
	case string(p) == "false":
		return ferry.BoolValue(false), nil
	case p[0] == '"' && len(p) >= 2 && p[len(p)-1] == '"':
		s, err := jsonString(p)
		if err != nil {
			return ferry.Value{}, errBadValue
		}
		return ferry.StringValue(s), nil
	}
	if n := scanNumber(p, 0); n == len(p) {
		return numberValue(p)
	}
	if !utf8.Valid(p) {
		return ferry.Value{}, errBadValue
	}
	return ferry.StringValue(string(p)), nil
}

// parseTime reads the timestamp at raw (a JSON value) in layout.
func parseTime(raw []byte, layout string) (time.Time, error) {
	switch layout {
	case LayoutUnixS, LayoutUnixMS, LayoutUnixNS:
		if len(raw) > 0 && raw[0] == '"' {
			s, err := jsonString(raw)
			if err != nil {
				return time.Time{}, err
			}
			raw = []byte(strings.TrimSpace(s))
		}
		if scanNumber(raw, 0) != len(raw) {
			return time.Time{}, errWrongType
		}
		var unit int64
		switch layout {
		case LayoutUnixS:
			unit = 1e9
		case LayoutUnixMS:
			unit = 1e6
		default:
			unit = 1
		}
		ns, err := unixNanos(raw, unit)
		if err != nil {
			return time.Time{}, err
		}
		return time.Unix(0, ns).UTC(), nil
	}
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return time.Time{}, errWrongType
	}
	var s string
	var err error
	if inner := raw[1 : len(raw)-1]; layout == LayoutRFC3339 && len(inner) > 0 && bytes.IndexByte(inner, '\\') < 0 {
		// RFC 3339 is parsed in place, without a copy: time.Parse keeps no
		// reference to s for this layout (numeric offsets only, no zone
		// names), and its error, which would, is dropped.
		s = unsafe.String(&inner[0], len(inner))
	} else if s, err = jsonString(raw); err != nil {
		return time.Time{}, errWrongType
	}
	if layout == LayoutRFC3339 {
		layout = time.RFC3339Nano
	}
	t, err := time.Parse(layout, s)
	if err != nil {
		return time.Time{}, errBadValue
	}
	return t, nil
}

// unixNanos converts a decimal number of units (unit nanoseconds each) to
// nanoseconds, exactly for plain decimals ("1700000000.25"), through
// float64 for exponents.
func unixNanos(raw []byte, unit int64) (int64, error) {
	if bytes.ContainsAny(raw, "eE") {
		f, err := strconv.ParseFloat(string(raw), 64)
		ns := f * float64(unit)
		if err != nil || ns != ns || ns >= math.MaxInt64 || ns <= math.MinInt64 {
			return 0, errBadValue
		}
		return int64(ns), nil
	}
	neg := len(raw) > 0 && raw[0] == '-'
	if neg {
		raw = raw[1:]
	}
	ip, fp, _ := bytes.Cut(raw, []byte("."))
	i, err := strconv.ParseInt(string(ip), 10, 64)
	if err != nil || i > math.MaxInt64/unit {
		return 0, errBadValue
	}
	ns := i * unit
	// The fraction: digits beyond the unit's resolution are dropped.
	scale := unit
	for _, c := range fp {
		scale /= 10
		if scale == 0 {
			break
		}
		ns += int64(c-'0') * scale
	}
	if ns < 0 {
		return 0, errBadValue
	}
	if neg {
		ns = -ns
	}
	return ns, nil
}

// decodeJSON fills samples (one per point of dev) from a JSON payload and
// returns what went wrong, for counting. Every point gets a sample: Good
// with its value, or Bad with the reason.
//
// starts is scratch for the top-level index (jsonindex.go), kept by the
// caller from message to message.
func (dv *device) decodeJSON(payload []byte, name string, now time.Time, dst []ferry.Sample, starts *[]int) ([]ferry.Sample, []problem) {
	var probs []problem
	if !validJSON(payload) {
		return badAll(dst, dv, name, reasonNotJSON, now), append(probs, problem{reason: reasonNotJSON})
	}
	t := now
	if dv.timePath != nil {
		raw, err := lookup(payload, dv.timePath)
		if err == nil {
			t, err = parseTime(raw, dv.cfg.Time.Layout)
		}
		if err != nil {
			t = now
			probs = append(probs, problem{point: "time", reason: reasonBadTime})
		}
	}
	if dv.top != nil {
		*starts = dv.top.fill(payload, *starts)
	}
	for i := range dv.points {
		pt := &dv.points[i]
		s := ferry.Sample{Device: name, Point: pt.cfg.Name, Time: t}
		var raw []byte
		var err error
		if k := dv.topSlot(i); k >= 0 {
			if at := (*starts)[k]; at >= 0 {
				raw, err = lookupAt(payload, at, pt.path[1:])
			} else {
				err = errMissingPath
			}
		} else {
			raw, err = lookup(payload, pt.path)
		}
		var v ferry.Value
		if err == nil {
			v, err = jsonValue(raw)
		}
		if err == nil {
			v, err = coerce(v, pt.cfg.Type)
		}
		if err != nil {
			r := reasonOf(err)
			probs = append(probs, problem{point: pt.cfg.Name, reason: r})
			s.Quality = ferry.BadQuality(r)
			if keepOutOfRange(err, pt.cfg.Type) {
				s.Value = v // ±Inf, kept with Bad quality
			}
		} else {
			s.Value = v
		}
		dst = append(dst, s)
	}
	return dst, probs
}

// topSlot returns the slot of point i in dv.top, or -1.
func (dv *device) topSlot(i int) int {
	if dv.top == nil {
		return -1
	}
	return dv.top.pointSlot[i]
}

// decodeValue fills the one sample of a `value` device.
func (dv *device) decodeValue(payload []byte, name string, now time.Time, dst []ferry.Sample) ([]ferry.Sample, []problem) {
	pt := &dv.points[0]
	s := ferry.Sample{Device: name, Point: pt.cfg.Name, Time: now}
	v, err := scalarValue(payload)
	if err == nil {
		v, err = coerce(v, pt.cfg.Type)
	}
	if err != nil {
		r := reasonOf(err)
		s.Quality = ferry.BadQuality(r)
		if keepOutOfRange(err, pt.cfg.Type) {
			s.Value = v // ±Inf, kept with Bad quality
		}
		return append(dst, s), []problem{{point: pt.cfg.Name, reason: r}}
	}
	s.Value = v
	return append(dst, s), nil
}

// keepOutOfRange reports whether a Bad sample refused for err keeps its
// value: a number beyond float64 (1e400, a 400-digit integer) is kept as
// ±Inf, with Bad quality and reason "out of range", on a point of type
// float or of no type; a point of another type gets no value.
func keepOutOfRange(err error, typ string) bool {
	return errors.Is(err, errOutOfRange) && (typ == "" || typ == "float")
}

// badAll appends one Bad sample per point of dv.
func badAll(dst []ferry.Sample, dv *device, name, reason string, t time.Time) []ferry.Sample {
	q := ferry.BadQuality(reason)
	for i := range dv.points {
		dst = append(dst, ferry.Sample{Device: name, Point: dv.points[i].cfg.Name, Quality: q, Time: t})
	}
	return dst
}
