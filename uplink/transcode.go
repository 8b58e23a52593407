package uplink

import (
	"encoding/binary"
	"math"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/codec"
)

// transcoder turns a telemetry record in codec format version 1 straight
// into the JSON message, without building ferry.Scan values: no
// allocation per sample, which is what keeps the drain above a million
// samples a second. It follows internal/codec's documented format; for
// anything it does not expect (another version, a malformed record) it
// reports !ok and the caller takes the decoder path, which is the
// authority. FuzzTranscode checks that both paths agree.
type transcoder struct {
	names [][]byte // point names of the record, sub-slices of its data
}

const (
	tcFlagReason = 1 << 5
	tcFlagDT     = 1 << 6
	tcFlagAux    = 1 << 7
)

// tcReader reads a record; any failure sets bad and returns zero values.
type tcReader struct {
	b   []byte
	bad bool
}

func (r *tcReader) byte() byte {
	if len(r.b) < 1 {
		r.bad = true
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *tcReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *tcReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *tcReader) bytes() []byte {
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)) || n > 1<<20 {
		r.bad = true
		return nil
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s
}

// count reads a count of elements of at least minBytes each.
func (r *tcReader) count(minBytes int) int {
	n := r.uvarint()
	if r.bad || n > 1<<24 || n*uint64(minBytes) > uint64(len(r.b)) {
		r.bad = true
		return 0
	}
	return int(n)
}

// telemetry appends the JSON message of a version-1 telemetry record. It
// returns the device and configuration version (sub-slices of data), the
// number of samples, and ok=false when the record is not one it can
// transcode.
func (tc *transcoder) telemetry(e *encoder, dst, data []byte) (out, device, configVersion []byte, samples int, ok bool) {
	r := tcReader{b: data}
	if r.byte() != codec.Version || codec.Kind(r.byte()) != codec.KindTelemetry {
		return dst, nil, nil, 0, false
	}
	configVersion = r.bytes()
	device = r.bytes()
	np := r.count(1)
	tc.names = tc.names[:0]
	for i := 0; i < np && !r.bad; i++ {
		tc.names = append(tc.names, r.bytes())
	}
	ns := r.count(2)
	if r.bad {
		return dst, nil, nil, 0, false
	}
	start := len(dst)
	dst = append(dst, e.head...)
	dst = append(dst, `,"device":`...)
	dst = appendString(dst, device)
	if len(configVersion) > 0 {
		dst = append(dst, `,"config_version":`...)
		dst = appendString(dst, configVersion)
	}
	dst = append(dst, `,"scans":[`...)
	var prev int64
	for i := 0; i < ns; i++ {
		prev += r.varint()
		n := r.count(2)
		if r.bad {
			return dst[:start], nil, nil, 0, false
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"time":`...)
		dst = appendUnixNano(dst, prev)
		dst = append(dst, `,"points":[`...)
		for j := 0; j < n; j++ {
			idx := r.uvarint()
			flags := r.byte()
			if r.bad || idx >= uint64(len(tc.names)) {
				return dst[:start], nil, nil, 0, false
			}
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"name":`...)
			dst = appendString(dst, tc.names[idx])
			dst = append(dst, `,"value":`...)
			dst = tc.value(dst, &r, flags)
			if st := ferry.Status(flags >> 3 & 3); st != ferry.Good {
				dst = append(dst, `,"quality":"`...)
				dst = append(dst, st.String()...)
				dst = append(dst, '"')
			}
			if flags&tcFlagReason != 0 {
				if reason := r.bytes(); len(reason) > 0 {
					dst = append(dst, `,"reason":`...)
					dst = appendString(dst, reason)
				}
			}
			if flags&tcFlagDT != 0 {
				if dt := r.varint(); dt != 0 {
					dst = append(dst, `,"time":`...)
					dst = appendUnixNano(dst, prev+dt)
				}
			}
			if r.bad {
				return dst[:start], nil, nil, 0, false
			}
			dst = append(dst, '}')
			samples++
		}
		dst = append(dst, "]}"...)
	}
	if len(r.b) != 0 {
		return dst[:start], nil, nil, 0, false
	}
	return append(dst, "]}"...), device, configVersion, samples, true
}

func (tc *transcoder) value(dst []byte, r *tcReader, flags byte) []byte {
	switch ferry.Kind(flags & 7) {
	case ferry.KindNone:
		return append(dst, "null"...)
	case ferry.KindFloat:
		if flags&tcFlagAux != 0 {
			if len(r.b) < 4 {
				r.bad = true
				return dst
			}
			f := math.Float32frombits(binary.LittleEndian.Uint32(r.b))
			r.b = r.b[4:]
			return appendFloat(dst, float64(f))
		}
		if len(r.b) < 8 {
			r.bad = true
			return dst
		}
		f := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
		r.b = r.b[8:]
		return appendFloat(dst, f)
	case ferry.KindInt:
		return appendInt(dst, r.varint())
	case ferry.KindUint:
		return appendUint(dst, r.uvarint())
	case ferry.KindBool:
		if flags&tcFlagAux != 0 {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	case ferry.KindString:
		s := r.bytes()
		if r.bad {
			return dst
		}
		return appendString(dst, s)
	}
	r.bad = true
	return dst
}

// appendUnixNano appends the time n (Unix nanoseconds) as appendTime
// does.
func appendUnixNano(dst []byte, n int64) []byte {
	return appendTime(dst, time.Unix(0, n))
}
