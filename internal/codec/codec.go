// Package codec is the binary encoding of the records ferry keeps in its
// buffer: the scans of one device committed together (telemetry), or one
// alert transition. It is compact (a point name is written once per record,
// values are varints or 4/8-byte floats, a sample whose time equals its
// scan's time costs no time bytes), versioned, and safe on hostile input:
// Decode functions return an error for any malformed record and never panic.
//
// Format, version 1 (all integers are varints, strings are uvarint length +
// bytes, times are Unix nanoseconds; a time outside their range, 1677-09-21
// to 2262-04-11, is stored as the nearest end of it):
//
//	record    = version:byte(1) kind:byte header body
//	header    = config_version:string
//	telemetry = device:string npoints:uvarint point:string* nscans:uvarint scan*
//	scan      = time:varint(delta from previous scan, first from 0) nsamples:uvarint sample*
//	sample    = point:uvarint(index) flags:byte value [reason:string] [dt:varint]
//	flags     = kind(bits 0-2) | status(bits 3-4) | has_reason(5) | has_dt(6) | aux(7)
//	value     = float: 4 bytes (aux=1, exact float32) or 8 bytes, little endian;
//	            int: zigzag varint; uint: uvarint; bool: aux bit; string: string; none: nothing
//	alert     = id rule device point:string severity:byte state:byte
//	            value_flags:byte value message:string nlabels:uvarint (key value:string)*
//	            since:varint time:varint
//
// A change of the format gets a new version byte; decoders keep reading
// every older version, because a buffer can hold records for days.
package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/ferry-edge/ferry"
)

// Version is the format version written by this package.
const Version = 1

// Kind is what a record holds.
type Kind byte

// The record kinds.
const (
	KindTelemetry Kind = 1
	KindAlert     Kind = 2
)

// Limits that keep a hostile or corrupt record from making the decoder
// allocate without bound.
const (
	maxString = 1 << 20
	maxCount  = 1 << 24
)

// ErrCorrupt is returned (wrapped, with what is wrong) when a record cannot be decoded.
var ErrCorrupt = errors.New("codec: corrupt record")

// Header is what every record starts with.
type Header struct {
	Version int
	Kind    Kind
	// ConfigVersion identifies the configuration (device map) that produced
	// the record, so the receiver knows what each point meant.
	ConfigVersion string
}

// Telemetry is a decoded telemetry record.
type Telemetry struct {
	Header
	Device string
	Scans  []ferry.Scan
}

const (
	flagReason = 1 << 5
	flagDT     = 1 << 6
	flagAux    = 1 << 7
)

// Encoder appends records. It keeps scratch space between calls, so that
// steady-state encoding does not allocate. An Encoder is not safe for
// concurrent use.
type Encoder struct {
	index map[string]uint64
	names []string
}

// AppendTelemetry appends a telemetry record holding scans (all of device)
// to dst and returns the extended buffer.
func (e *Encoder) AppendTelemetry(dst []byte, configVersion, device string, scans []ferry.Scan) []byte {
	dst, _ = e.AppendTelemetryMax(dst, configVersion, device, scans, math.MaxInt)
	return dst
}

// AppendTelemetryMax appends a telemetry record holding the longest prefix
// of scans (all of device) whose encoding takes at most maxBytes bytes, but
// at least one scan, and returns the extended buffer and the number of scans
// the record holds. The caller encodes scans[n:] into further records. The
// bytes written for a prefix are exactly those AppendTelemetry writes for
// it.
func (e *Encoder) AppendTelemetryMax(dst []byte, configVersion, device string, scans []ferry.Scan, maxBytes int) ([]byte, int) {
	if e.index == nil {
		e.index = make(map[string]uint64)
	}
	clear(e.index)
	e.names = e.names[:0]
	// Size the record scan by scan, the way the loop below writes it, and
	// stop before the first scan that would take it past maxBytes.
	fixed := 2 + stringLen(configVersion) + stringLen(device)
	namesLen, scansLen := 0, 0
	n := 0
	var prev int64
	for i := range scans {
		sc := &scans[i]
		t := nanos(sc.Time)
		before := len(e.names)
		added := 0
		size := varintLen(t-prev) + uvarintLen(uint64(len(sc.Samples)))
		for j := range sc.Samples {
			s := &sc.Samples[j]
			idx, ok := e.index[s.Point]
			if !ok {
				idx = uint64(len(e.names))
				e.index[s.Point] = idx
				e.names = append(e.names, s.Point)
				added += stringLen(s.Point)
			}
			var dt int64
			if !s.Time.IsZero() {
				dt = nanos(s.Time) - t
			}
			size += uvarintLen(idx) + sampleLen(s.Value, s.Quality, dt)
		}
		total := fixed + uvarintLen(uint64(len(e.names))) + namesLen + added + uvarintLen(uint64(i+1)) + scansLen + size
		if n > 0 && total > maxBytes {
			for _, p := range e.names[before:] {
				delete(e.index, p)
			}
			e.names = e.names[:before]
			break
		}
		namesLen += added
		scansLen += size
		prev = t
		n = i + 1
	}
	dst = append(dst, Version, byte(KindTelemetry))
	dst = appendString(dst, configVersion)
	dst = appendString(dst, device)
	dst = binary.AppendUvarint(dst, uint64(len(e.names)))
	for _, name := range e.names {
		dst = appendString(dst, name)
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	prev = 0
	for i := range scans[:n] {
		sc := &scans[i]
		t := nanos(sc.Time)
		dst = binary.AppendVarint(dst, t-prev)
		prev = t
		dst = binary.AppendUvarint(dst, uint64(len(sc.Samples)))
		for j := range sc.Samples {
			s := &sc.Samples[j]
			dst = binary.AppendUvarint(dst, e.index[s.Point])
			var dt int64
			if !s.Time.IsZero() {
				dt = nanos(s.Time) - t
			}
			dst = appendSample(dst, s.Value, s.Quality, dt)
		}
	}
	return dst, n
}

// AppendTelemetry appends a telemetry record with a throw-away Encoder.
func AppendTelemetry(dst []byte, configVersion, device string, scans []ferry.Scan) []byte {
	var e Encoder
	return e.AppendTelemetry(dst, configVersion, device, scans)
}

func appendSample(dst []byte, v ferry.Value, q ferry.Quality, dt int64) []byte {
	flags := byte(v.Kind()) | byte(q.Status&3)<<3
	if q.Reason != "" {
		flags |= flagReason
	}
	if dt != 0 {
		flags |= flagDT
	}
	dst = appendValue(dst, flags, v)
	if q.Reason != "" {
		dst = appendString(dst, q.Reason)
	}
	if dt != 0 {
		dst = binary.AppendVarint(dst, dt)
	}
	return dst
}

// appendValue writes the flags byte (with the aux bit set as the value
// needs) and the value.
func appendValue(dst []byte, flags byte, v ferry.Value) []byte {
	switch v.Kind() {
	case ferry.KindFloat:
		f := v.Float64()
		if f32 := float32(f); float64(f32) == f || f != f {
			dst = append(dst, flags|flagAux)
			return binary.LittleEndian.AppendUint32(dst, math.Float32bits(f32))
		}
		dst = append(dst, flags)
		return binary.LittleEndian.AppendUint64(dst, math.Float64bits(f))
	case ferry.KindInt:
		return binary.AppendVarint(append(dst, flags), v.Int64())
	case ferry.KindUint:
		return binary.AppendUvarint(append(dst, flags), v.Uint64())
	case ferry.KindBool:
		if v.Bool() {
			flags |= flagAux
		}
		return append(dst, flags)
	case ferry.KindString:
		return appendString(append(dst, flags), v.Str())
	}
	return append(dst, flags)
}

// AppendAlert appends an alert record to dst.
func AppendAlert(dst []byte, configVersion string, a *ferry.Alert) []byte {
	dst = append(dst, Version, byte(KindAlert))
	dst = appendString(dst, configVersion)
	dst = appendString(dst, a.ID)
	dst = appendString(dst, a.Rule)
	dst = appendString(dst, a.Device)
	dst = appendString(dst, a.Point)
	dst = append(dst, byte(a.Severity), byte(a.State))
	dst = appendValue(dst, byte(a.Value.Kind()), a.Value)
	dst = appendString(dst, a.Message)
	keys := make([]string, 0, len(a.Labels))
	for k := range a.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	dst = binary.AppendUvarint(dst, uint64(len(keys)))
	for _, k := range keys {
		dst = appendString(dst, k)
		dst = appendString(dst, a.Labels[k])
	}
	dst = binary.AppendVarint(dst, unixNano(a.Since))
	return binary.AppendVarint(dst, unixNano(a.Time))
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return nanos(t)
}

// The ends of the time range that Unix nanoseconds can hold.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// nanos returns t in Unix nanoseconds, or the nearest end of their range
// when t is outside it (where UnixNano's result is undefined).
func nanos(t time.Time) int64 {
	if s := t.Unix(); s > math.MinInt64/int64(time.Second) && s < math.MaxInt64/int64(time.Second) {
		return t.UnixNano() // the usual case, well inside the range
	}
	switch {
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// The lengths of what the append functions write, for AppendTelemetryMax.

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func varintLen(v int64) int {
	u := uint64(v) << 1
	if v < 0 {
		u = ^u
	}
	return uvarintLen(u)
}

func stringLen(s string) int { return uvarintLen(uint64(len(s))) + len(s) }

func sampleLen(v ferry.Value, q ferry.Quality, dt int64) int {
	n := valueLen(v)
	if q.Reason != "" {
		n += stringLen(q.Reason)
	}
	if dt != 0 {
		n += varintLen(dt)
	}
	return n
}

// valueLen is the length of the flags byte and the value appendValue writes.
func valueLen(v ferry.Value) int {
	switch v.Kind() {
	case ferry.KindFloat:
		f := v.Float64()
		if f32 := float32(f); float64(f32) == f || f != f {
			return 1 + 4
		}
		return 1 + 8
	case ferry.KindInt:
		return 1 + varintLen(v.Int64())
	case ferry.KindUint:
		return 1 + uvarintLen(v.Uint64())
	case ferry.KindString:
		return 1 + stringLen(v.Str())
	}
	return 1
}

// PeekHeader decodes the header of a record without decoding its body.
func PeekHeader(data []byte) (Header, error) {
	r := reader{b: data}
	h := r.header()
	return h, r.err
}

// DecodeTelemetry decodes a telemetry record. It reads the record with a
// TelemetryReader, so that the format has one reader.
func DecodeTelemetry(data []byte) (Telemetry, error) {
	var tr TelemetryReader
	err := tr.Reset(data)
	t := Telemetry{Header: tr.header}
	t.ConfigVersion = string(tr.configVersion)
	if err != nil {
		return t, err
	}
	t.Device = string(tr.device)
	// Each point name becomes one string, shared by its samples.
	names := make([]string, len(tr.names))
	for i, n := range tr.names {
		names[i] = string(n)
	}
	t.Scans = make([]ferry.Scan, 0, tr.scans)
	var s SampleView
	for {
		st, n, ok := tr.NextScan()
		if !ok {
			break
		}
		scanTime := time.Unix(0, st)
		sc := ferry.Scan{Device: t.Device, Time: scanTime, Samples: make([]ferry.Sample, 0, n)}
		for tr.NextSample(&s) {
			v := s.Value
			if v.Kind() == ferry.KindString {
				v = ferry.StringValue(string(s.Text))
			}
			ts := scanTime
			if s.Time != st {
				ts = time.Unix(0, s.Time)
			}
			sc.Samples = append(sc.Samples, ferry.Sample{
				Device:  t.Device,
				Point:   names[s.index],
				Value:   v,
				Quality: ferry.Quality{Status: s.Status, Reason: string(s.Reason)},
				Time:    ts,
			})
		}
		t.Scans = append(t.Scans, sc)
	}
	return t, tr.Err()
}

// TelemetryReader reads a telemetry record in place, scan by scan and
// sample by sample, without building ferry values: once its point table
// has grown to a record's number of points, reading allocates nothing
// (only an error does). It is the one reader of the telemetry format:
// DecodeTelemetry is built on it, and so is the uplink's transcoding of
// records to JSON.
//
// Use:
//
//	if err := tr.Reset(data); err != nil { … }
//	for t, n, ok := tr.NextScan(); ok; t, n, ok = tr.NextScan() {
//		for tr.NextSample(&s) { … }
//	}
//	if err := tr.Err(); err != nil { … }
//
// A record is valid only when Err returns nil after NextScan has returned
// false: the reader checks the record's end (no trailing bytes) there.
// The byte slices it yields are sub-slices of the record, valid as long
// as the record's bytes are and not to be modified. A TelemetryReader is
// not safe for concurrent use; its zero value is ready to use.
type TelemetryReader struct {
	r             reader
	header        Header
	configVersion []byte
	device        []byte
	names         [][]byte
	scans         int   // scans left
	samples       int   // samples left in the current scan
	scanTime      int64 // Unix nanoseconds of the current scan
}

// SampleView is one sample as TelemetryReader.NextSample yields it.
type SampleView struct {
	// Point is the point name, a sub-slice of the record.
	Point []byte
	// Value is the value. For a string value it holds only the kind
	// (Value.Str() is empty): the text is Text, a sub-slice of the record.
	Value ferry.Value
	Text  []byte
	// Status and Reason are the quality; Reason is empty when the sample
	// has none.
	Status ferry.Status
	Reason []byte
	// Time is the sample's time in Unix nanoseconds: its scan's time
	// unless the sample has one of its own.
	Time int64

	index uint64 // of Point in the record's point table
}

// Reset starts reading data, a telemetry record, and reads its header,
// device and point names. It returns an error wrapping ErrCorrupt when
// they cannot be read or the record is not telemetry; Err returns the
// same error.
func (tr *TelemetryReader) Reset(data []byte) error {
	tr.r = reader{b: data}
	r := &tr.r
	tr.header = Header{}
	tr.configVersion, tr.device, tr.names = nil, nil, tr.names[:0]
	tr.scans, tr.samples, tr.scanTime = 0, 0, 0
	v := r.byte()
	if r.err == nil && v != Version {
		r.fail("version %d is not supported (want %d)", v, Version)
	}
	k := Kind(r.byte())
	if r.err != nil {
		return r.err
	}
	tr.header.Version, tr.header.Kind = int(v), k
	tr.configVersion = r.bytes()
	if r.err == nil && k != KindTelemetry {
		r.fail("kind %d is not telemetry", k)
	}
	tr.device = r.bytes()
	np := r.count(1)
	for i := 0; i < np && r.err == nil; i++ {
		tr.names = append(tr.names, r.bytes())
	}
	tr.scans = r.count(2)
	if r.err != nil {
		tr.scans = 0
		return r.err
	}
	return nil
}

// ConfigVersion returns the record's configuration version, a sub-slice
// of the record.
func (tr *TelemetryReader) ConfigVersion() []byte { return tr.configVersion }

// Device returns the record's device, a sub-slice of the record.
func (tr *TelemetryReader) Device() []byte { return tr.device }

// NextScan moves to the next scan, skipping what is left of the current
// one, and returns its time in Unix nanoseconds and its number of
// samples. It returns ok=false after the last scan and on a malformed
// record (then Err says why).
func (tr *TelemetryReader) NextScan() (t int64, samples int, ok bool) {
	if tr.samples > 0 {
		var s SampleView
		for tr.NextSample(&s) {
		}
	}
	r := &tr.r
	if r.err != nil {
		return 0, 0, false
	}
	if tr.scans == 0 {
		if len(r.b) != 0 {
			r.fail("%d trailing bytes", len(r.b))
		}
		return 0, 0, false
	}
	tr.scans--
	tr.scanTime += r.varint()
	tr.samples = r.count(2)
	if r.err != nil {
		tr.samples = 0
		return 0, 0, false
	}
	return tr.scanTime, tr.samples, true
}

// NextSample reads the next sample of the current scan into s. It returns
// false at the end of the scan and on a malformed record (then Err says
// why).
func (tr *TelemetryReader) NextSample(s *SampleView) bool {
	if tr.samples == 0 {
		return false
	}
	tr.samples--
	r := &tr.r
	var idx uint64
	var flags byte
	if b := r.b; len(b) >= 2 && b[0] < 0x80 {
		// The usual case, read in place: an index below 128 and the flags.
		idx, flags = uint64(b[0]), b[1]
		r.b = b[2:]
	} else {
		idx = r.uvarint()
		flags = r.byte()
	}
	if r.err == nil && idx >= uint64(len(tr.names)) {
		r.fail("point index %d of %d", idx, len(tr.names))
	}
	// The usual values, floats, are read in place.
	switch k := flags & (7 | flagAux); {
	case k == byte(ferry.KindFloat)|flagAux && len(r.b) >= 4:
		s.Value, s.Text = ferry.FloatValue(float64(math.Float32frombits(binary.LittleEndian.Uint32(r.b)))), nil
		r.b = r.b[4:]
	case k == byte(ferry.KindFloat) && len(r.b) >= 8:
		s.Value, s.Text = ferry.FloatValue(math.Float64frombits(binary.LittleEndian.Uint64(r.b))), nil
		r.b = r.b[8:]
	default:
		s.Value, s.Text = r.value(flags)
	}
	s.Status = ferry.Status(flags >> 3 & 3)
	s.Reason = nil
	s.Time = tr.scanTime
	if flags&(flagReason|flagDT) != 0 {
		if flags&flagReason != 0 {
			s.Reason = r.bytes()
		}
		if flags&flagDT != 0 {
			// dt wraps around (a sample time centuries from its scan's),
			// and so does this sum, back to the sample time.
			s.Time += r.varint()
		}
	}
	if r.err != nil {
		tr.samples, tr.scans = 0, 0
		return false
	}
	s.index = idx
	s.Point = tr.names[idx]
	return true
}

// Err returns the first error met reading the record, wrapping
// ErrCorrupt, or nil.
func (tr *TelemetryReader) Err() error { return tr.r.err }

// DecodeAlert decodes an alert record.
func DecodeAlert(data []byte) (Header, ferry.Alert, error) {
	r := reader{b: data}
	var a ferry.Alert
	h := r.header()
	if r.err == nil && h.Kind != KindAlert {
		return h, a, fmt.Errorf("%w: kind %d is not an alert", ErrCorrupt, h.Kind)
	}
	a.ID = r.string()
	a.Rule = r.string()
	a.Device = r.string()
	a.Point = r.string()
	a.Severity = ferry.Severity(r.byte())
	a.State = ferry.AlertState(r.byte())
	var text []byte
	a.Value, text = r.value(r.byte())
	if a.Value.Kind() == ferry.KindString {
		a.Value = ferry.StringValue(string(text))
	}
	a.Message = r.string()
	if n := r.count(2); n > 0 {
		a.Labels = make(map[string]string, n)
		for i := 0; i < n && r.err == nil; i++ {
			k := r.string()
			a.Labels[k] = r.string()
		}
	}
	a.Since = fromUnixNano(r.varint())
	a.Time = fromUnixNano(r.varint())
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	return h, a, r.err
}

// reader decodes with sticky errors: after the first failure every read
// returns a zero value, so decoders check r.err once per loop.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
	}
	r.b = nil
}

func (r *reader) header() Header {
	var h Header
	v := r.byte()
	if r.err == nil && v != Version {
		r.fail("version %d is not supported (want %d)", v, Version)
		return h
	}
	h.Version = int(v)
	h.Kind = Kind(r.byte())
	h.ConfigVersion = r.string()
	return h
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.fail("truncated")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a length that is followed by at least minBytes bytes per
// element, and refuses counts the remaining input cannot hold.
func (r *reader) count(minBytes int) int {
	n := r.uvarint()
	if r.err != nil {
		return 0
	}
	if n > maxCount || n*uint64(minBytes) > uint64(len(r.b)) {
		r.fail("count %d exceeds the record", n)
		return 0
	}
	return int(n)
}

func (r *reader) string() string { return string(r.bytes()) }

// bytes reads a string and returns it as a sub-slice of the record (its
// capacity cut at its end, so that appending to it cannot overwrite the
// record).
func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > maxString || n > uint64(len(r.b)) {
		r.fail("string of %d bytes exceeds the record", n)
		return nil
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s
}

// value reads a value of the kind flags give. A string value is returned
// as its kind alone, with its text as a sub-slice of the record.
func (r *reader) value(flags byte) (ferry.Value, []byte) {
	if r.err != nil {
		return ferry.Value{}, nil
	}
	switch ferry.Kind(flags & 7) {
	case ferry.KindNone:
		return ferry.Value{}, nil
	case ferry.KindFloat:
		if flags&flagAux != 0 {
			if len(r.b) < 4 {
				r.fail("truncated float32")
				return ferry.Value{}, nil
			}
			f := math.Float32frombits(binary.LittleEndian.Uint32(r.b))
			r.b = r.b[4:]
			return ferry.FloatValue(float64(f)), nil
		}
		if len(r.b) < 8 {
			r.fail("truncated float64")
			return ferry.Value{}, nil
		}
		f := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
		r.b = r.b[8:]
		return ferry.FloatValue(f), nil
	case ferry.KindInt:
		return ferry.IntValue(r.varint()), nil
	case ferry.KindUint:
		return ferry.UintValue(r.uvarint()), nil
	case ferry.KindBool:
		return ferry.BoolValue(flags&flagAux != 0), nil
	case ferry.KindString:
		b := r.bytes()
		return ferry.StringValue(""), b
	}
	r.fail("unknown value kind %d", flags&7)
	return ferry.Value{}, nil
}
