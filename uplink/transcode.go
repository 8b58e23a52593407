package uplink

import (
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/codec"
)

// transcoder turns a telemetry record straight into the JSON message,
// without building ferry.Scan values: no allocation per sample, which is
// what keeps the drain above a million samples a second. It reads the
// record with codec.TelemetryReader, the reader codec.DecodeTelemetry is
// built on, so both paths accept the same records; FuzzTranscode checks
// that they also write the same JSON.
type transcoder struct {
	r codec.TelemetryReader
	s codec.SampleView
}

// telemetry appends the JSON message of a telemetry record. It returns
// the device and configuration version (sub-slices of data), the number
// of samples, and ok=false when the record cannot be read (then dst is
// returned as it was, and codec.DecodeTelemetry says why).
func (tc *transcoder) telemetry(e *encoder, dst, data []byte) (out, device, configVersion []byte, samples int, ok bool) {
	r, s := &tc.r, &tc.s
	if r.Reset(data) != nil {
		return dst, nil, nil, 0, false
	}
	device, configVersion = r.Device(), r.ConfigVersion()
	start := len(dst)
	dst = append(dst, e.head...)
	dst = append(dst, `,"device":`...)
	dst = appendString(dst, device)
	if len(configVersion) > 0 {
		dst = append(dst, `,"config_version":`...)
		dst = appendString(dst, configVersion)
	}
	dst = append(dst, `,"scans":[`...)
	for i := 0; ; i++ {
		st, _, more := r.NextScan()
		if !more {
			break
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"time":`...)
		dst = appendUnixNano(dst, st)
		dst = append(dst, `,"points":[`...)
		for j := 0; r.NextSample(s); j++ {
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = appendSampleView(dst, s, st)
			samples++
		}
		dst = append(dst, "]}"...)
	}
	if r.Err() != nil {
		return dst[:start], nil, nil, 0, false
	}
	return append(dst, "]}"...), device, configVersion, samples, true
}

// appendSampleView appends a sample read in place as appendPoint appends
// the decoded sample.
func appendSampleView(dst []byte, s *codec.SampleView, scanTime int64) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendString(dst, s.Point)
	dst = append(dst, `,"value":`...)
	switch s.Value.Kind() {
	case ferry.KindFloat:
		dst = appendFloat(dst, s.Value.Float64())
	case ferry.KindString:
		dst = appendString(dst, s.Text)
	default:
		dst = appendValue(dst, s.Value)
	}
	if s.Status != ferry.Good {
		dst = append(dst, `,"quality":"`...)
		dst = append(dst, s.Status.String()...)
		dst = append(dst, '"')
	}
	if len(s.Reason) > 0 {
		dst = append(dst, `,"reason":`...)
		dst = appendString(dst, s.Reason)
	}
	if s.Time != scanTime {
		dst = append(dst, `,"time":`...)
		dst = appendUnixNano(dst, s.Time)
	}
	return append(dst, '}')
}

// appendUnixNano appends the time n (Unix nanoseconds) as appendTime
// does.
func appendUnixNano(dst []byte, n int64) []byte {
	return appendTime(dst, time.Unix(0, n))
}
