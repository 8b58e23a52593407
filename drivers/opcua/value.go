package opcua

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
)

// Reasons of Bad samples that are not an OPC UA status code.
const (
	reasonArray            = "array value"
	reasonIndexRange       = "index out of range"
	reasonNullValue        = "null value"
	reasonNamespaceUnknown = "unknown namespace"
	reasonUnsupportedType  = "unsupported type"
)

var (
	statusOnce  sync.Once
	statusNames map[ua.StatusCode]string
)

// StatusName returns the OPC UA specification's name of a status code
// ("Good", "BadNodeIdUnknown", "UncertainLastUsableValue"), or its hex
// form ("0x80AB0000") when the code is not known. The info bits of the
// code are ignored.
func StatusName(code ua.StatusCode) string {
	statusOnce.Do(func() {
		statusNames = make(map[ua.StatusCode]string, len(ua.StatusCodes))
		r := strings.NewReplacer("ID", "Id", "URI", "Uri", "URL", "Url", "TCP", "Tcp")
		for c, d := range ua.StatusCodes {
			statusNames[c] = r.Replace(strings.TrimPrefix(d.Name, "Status"))
		}
		statusNames[ua.StatusGood] = "Good"
		statusNames[ua.StatusUncertain] = "Uncertain"
		statusNames[ua.StatusBad] = "Bad"
	})
	if n, ok := statusNames[code&0xffff0000]; ok {
		return n
	}
	return "0x" + strings.ToUpper(strconv.FormatUint(uint64(code&0xffff0000), 16))
}

// severity returns Good, Uncertain or Bad from the two top bits of code.
func severity(code ua.StatusCode) ferry.Status {
	switch code >> 30 {
	case 0:
		return ferry.Good
	case 1:
		return ferry.Uncertain
	}
	return ferry.Bad
}

// qualityOf maps a status code to a Quality with the status name as
// reason (no reason for plain Good).
func qualityOf(code ua.StatusCode) ferry.Quality {
	s := severity(code)
	if s == ferry.Good {
		return ferry.GoodQuality
	}
	return ferry.Quality{Status: s, Reason: StatusName(code)}
}

// sampleOf fills the value, quality and time of s from one data value.
// index selects an array element (-1: a scalar is expected). now is used
// when the server sends neither a source nor a server timestamp.
func sampleOf(s *ferry.Sample, dv *ua.DataValue, index int, now time.Time) {
	s.Value = ferry.Value{}
	s.Time = now
	if dv == nil {
		s.Quality = ferry.BadQuality(reasonNullValue)
		return
	}
	switch {
	case !dv.SourceTimestamp.IsZero():
		s.Time = dv.SourceTimestamp
	case !dv.ServerTimestamp.IsZero():
		s.Time = dv.ServerTimestamp
	}
	s.Quality = qualityOf(dv.Status)
	if s.Quality.Status == ferry.Bad {
		return
	}
	v, reason := convert(dv.Value, index)
	if reason != "" {
		s.Quality = ferry.BadQuality(reason)
		return
	}
	s.Value = v
}

// convert turns a variant into a Value. It returns a non-empty reason
// when the variant cannot be one: an array without index, an index out of
// range, a null value, a type ferry does not carry.
func convert(v *ua.Variant, index int) (ferry.Value, string) {
	if v == nil {
		return ferry.Value{}, reasonNullValue
	}
	x := v.Value()
	if index >= 0 {
		el, reason := element(x, index)
		if reason != "" {
			return ferry.Value{}, reason
		}
		x = el
	}
	switch t := x.(type) {
	case bool:
		return ferry.BoolValue(t), ""
	case int8:
		return ferry.IntValue(int64(t)), ""
	case int16:
		return ferry.IntValue(int64(t)), ""
	case int32:
		return ferry.IntValue(int64(t)), ""
	case int64:
		return ferry.IntValue(t), ""
	case uint8:
		return ferry.UintValue(uint64(t)), ""
	case uint16:
		return ferry.UintValue(uint64(t)), ""
	case uint32:
		return ferry.UintValue(uint64(t)), ""
	case uint64:
		return ferry.UintValue(t), ""
	case float32:
		return ferry.FloatValue(widen(t)), ""
	case float64:
		return ferry.FloatValue(t), ""
	case string:
		return ferry.StringValue(t), ""
	case time.Time:
		return ferry.StringValue(t.UTC().Format(time.RFC3339Nano)), ""
	case *ua.LocalizedText:
		if t == nil {
			return ferry.Value{}, reasonNullValue
		}
		return ferry.StringValue(t.Text), ""
	case ua.StatusCode:
		return ferry.StringValue(StatusName(t)), ""
	case nil:
		return ferry.Value{}, reasonNullValue
	}
	if index < 0 && v.Has(ua.VariantArrayValues) {
		return ferry.Value{}, reasonArray
	}
	if index >= 0 {
		// element() returned something of a type we do not carry.
		return ferry.Value{}, reasonUnsupportedType
	}
	return ferry.Value{}, reasonUnsupportedType + " " + strings.TrimPrefix(v.Type().String(), "TypeID")
}

// element returns element i of a one-dimensional array value.
func element(x any, i int) (any, string) {
	switch a := x.(type) {
	case []bool:
		return pick(a, i)
	case []int8:
		return pick(a, i)
	case ua.ByteArray:
		return pick(a, i)
	case []int16:
		return pick(a, i)
	case []uint16:
		return pick(a, i)
	case []int32:
		return pick(a, i)
	case []uint32:
		return pick(a, i)
	case []int64:
		return pick(a, i)
	case []uint64:
		return pick(a, i)
	case []float32:
		return pick(a, i)
	case []float64:
		return pick(a, i)
	case []string:
		return pick(a, i)
	case []time.Time:
		return pick(a, i)
	case []*ua.LocalizedText:
		return pick(a, i)
	case []ua.StatusCode:
		return pick(a, i)
	case nil:
		return nil, reasonNullValue
	}
	return nil, "not a one-dimensional array of a supported type"
}

func pick[T any](a []T, i int) (any, string) {
	if i >= len(a) {
		return nil, reasonIndexRange
	}
	return a[i], ""
}

// widen converts a float32 to the float64 with the same shortest decimal
// form (ferry.Widen32).
func widen(f float32) float64 { return ferry.Widen32(f) }
