package uplink

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/codec"
)

// Headers set on every message ferry publishes. Nats-Msg-Id (the record
// id) is set on telemetry and alerts; the catalog has none.
const (
	HeaderContentType   = "Content-Type"
	HeaderKind          = "Ferry-Kind"
	HeaderVersion       = "Ferry-Version"
	HeaderConfigVersion = "Ferry-Config-Version"
	// HeaderCompression names the compression of a batch message's body
	// (s2 or zstd); absent means none.
	HeaderCompression = "Ferry-Compression"

	// ContentTypeJSON is the content type of every message body.
	ContentTypeJSON = "application/json"
)

// Message kinds, the values of the Ferry-Kind header.
const (
	KindTelemetry = "telemetry"
	KindAlert     = "alert"
	KindCatalog   = "catalog"
	// KindBatch is a batch message: many telemetry records in one body.
	KindBatch = "batch"
)

// ErrNotFerry is returned by Decode when a message has no Ferry-Kind header or an unknown kind.
var ErrNotFerry = errors.New("uplink: not a ferry message")

// ErrMalformed is returned by Decode when a body does not match its kind.
var ErrMalformed = errors.New("uplink: malformed ferry message")

// TelemetryMessage is the body of a telemetry message: the scans of one
// device that the buffer committed together.
type TelemetryMessage struct {
	Gateway       string `json:"gateway"`
	Site          string `json:"site,omitempty"`
	Device        string `json:"device"`
	ConfigVersion string `json:"config_version,omitempty"`
	// Part and Parts are set when a record larger than the server's
	// max_payload was cut into several messages (Part counts from 1).
	Part  int           `json:"part,omitempty"`
	Parts int           `json:"parts,omitempty"`
	Scans []ScanMessage `json:"scans"`
}

// ScanMessage is one scan: the points read in one poll or notification.
type ScanMessage struct {
	Time   time.Time      `json:"time"`
	Points []PointMessage `json:"points"`
}

// PointMessage is one sample. Quality is omitted when good; Time is
// omitted when it equals the scan's time (Decode fills it in).
type PointMessage struct {
	Name    string
	Value   ferry.Value
	Quality ferry.Status
	Reason  string
	Time    time.Time
}

// AlertMessage is the body of an alert message: one transition.
type AlertMessage struct {
	Gateway       string            `json:"gateway"`
	Site          string            `json:"site,omitempty"`
	ConfigVersion string            `json:"config_version,omitempty"`
	ID            string            `json:"id"`
	Rule          string            `json:"rule"`
	Device        string            `json:"device,omitempty"`
	Point         string            `json:"point,omitempty"`
	State         string            `json:"state"`
	Severity      string            `json:"severity"`
	Value         ferry.Value       `json:"-"`
	Message       string            `json:"message,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	Since         time.Time         `json:"since,omitzero"`
	Time          time.Time         `json:"time"`
}

// CatalogMessage is the body of a catalog message: what every configured
// point is and where it comes from, under one configuration version.
type CatalogMessage struct {
	Gateway       string          `json:"gateway"`
	Site          string          `json:"site,omitempty"`
	ConfigVersion string          `json:"config_version"`
	Time          time.Time       `json:"time"`
	Devices       []CatalogDevice `json:"devices"`
}

// CatalogDevice describes one device of the catalog.
type CatalogDevice struct {
	Name     string         `json:"name"`
	Protocol string         `json:"protocol"`
	Points   []CatalogPoint `json:"points"`
}

// CatalogPoint describes one point of the catalog.
type CatalogPoint struct {
	Name        string  `json:"name"`
	Source      string  `json:"source"`
	Type        string  `json:"type,omitempty"`
	Unit        string  `json:"unit,omitempty"`
	Description string  `json:"description,omitempty"`
	Scale       float64 `json:"scale,omitempty"`
	Offset      float64 `json:"offset,omitempty"`
}

// BatchMessage is the body of a batch message: telemetry records of one
// gateway, oldest first, each in the form of a telemetry message with its
// record id.
type BatchMessage struct {
	Gateway string        `json:"gateway"`
	Site    string        `json:"site,omitempty"`
	Records []BatchRecord `json:"records"`
}

// BatchRecord is one record of a batch: a telemetry message and its
// record id (<gateway>-telemetry-<seq>, what Nats-Msg-Id holds when the
// record is sent on its own).
type BatchRecord struct {
	ID string `json:"id"`
	TelemetryMessage
}

// Message is a decoded ferry message: exactly one of Telemetry, Alert,
// Catalog and Batch is set, as Kind says.
type Message struct {
	Subject string
	// ID is the record id: Nats-Msg-Id ("" for the catalog; the batch id
	// for a batch). DecodeAll sets it to each record's own id.
	ID            string
	Kind          string
	FerryVersion  string
	ConfigVersion string
	// BatchID is the Nats-Msg-Id of the batch a record came in (DecodeAll).
	BatchID   string
	Telemetry *TelemetryMessage
	Alert     *AlertMessage
	Catalog   *CatalogMessage
	Batch     *BatchMessage
}

// DecodeAll decodes a message ferry published into the messages of its
// records: a batch gives one telemetry Message per record, with the
// record's own id in ID (and the batch's in BatchID), as if each record
// had been sent alone; any other message gives itself. Readers of the
// stream that count or deduplicate records use it rather than Decode.
func DecodeAll(subject string, hdr nats.Header, data []byte) ([]*Message, error) {
	m, err := Decode(subject, hdr, data)
	if err != nil {
		return nil, err
	}
	if m.Batch == nil {
		return []*Message{m}, nil
	}
	out := make([]*Message, len(m.Batch.Records))
	for i := range m.Batch.Records {
		r := &m.Batch.Records[i]
		out[i] = &Message{
			Subject:       subject,
			ID:            r.ID,
			Kind:          KindTelemetry,
			FerryVersion:  m.FerryVersion,
			ConfigVersion: r.ConfigVersion,
			BatchID:       m.ID,
			Telemetry:     &r.TelemetryMessage,
		}
	}
	return out, nil
}

// Decode decodes a message ferry published, from its subject, headers and
// body; a batch stays one Message (see DecodeAll). It returns ErrNotFerry for a message of another publisher and an
// error wrapping ErrMalformed for a body that does not parse.
func Decode(subject string, hdr nats.Header, data []byte) (*Message, error) {
	m := &Message{
		Subject:       subject,
		ID:            hdr.Get(nats.MsgIdHdr),
		Kind:          hdr.Get(HeaderKind),
		FerryVersion:  hdr.Get(HeaderVersion),
		ConfigVersion: hdr.Get(HeaderConfigVersion),
	}
	var err error
	switch m.Kind {
	case KindTelemetry:
		m.Telemetry = new(TelemetryMessage)
		err = json.Unmarshal(data, m.Telemetry)
		if err == nil && m.Telemetry.Device == "" {
			err = errors.New("device is missing")
		}
	case KindAlert:
		m.Alert = new(AlertMessage)
		err = json.Unmarshal(data, m.Alert)
		if err == nil && m.Alert.Rule == "" {
			err = errors.New("rule is missing")
		}
	case KindCatalog:
		data, err = decompress(hdr.Get(HeaderCompression), data)
		if err == nil {
			m.Catalog = new(CatalogMessage)
			err = json.Unmarshal(data, m.Catalog)
		}
	case KindBatch:
		data, err = decompress(hdr.Get(HeaderCompression), data)
		if err == nil {
			m.Batch = new(BatchMessage)
			err = json.Unmarshal(data, m.Batch)
		}
		if err == nil {
			err = checkBatch(m.Batch)
		}
	case "":
		return nil, fmt.Errorf("%w: no %s header", ErrNotFerry, HeaderKind)
	default:
		return nil, fmt.Errorf("%w: kind %q", ErrNotFerry, m.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s on %s: %v", ErrMalformed, m.Kind, subject, err)
	}
	return m, nil
}

func checkBatch(b *BatchMessage) error {
	if b.Records == nil {
		return errors.New("records are missing")
	}
	for i := range b.Records {
		switch {
		case b.Records[i].ID == "":
			return fmt.Errorf("record %d: id is missing", i)
		case b.Records[i].Device == "":
			return fmt.Errorf("record %s: device is missing", b.Records[i].ID)
		}
	}
	return nil
}

// UnmarshalJSON decodes a scan and gives every point without a time of
// its own the scan's time.
func (s *ScanMessage) UnmarshalJSON(b []byte) error {
	type plain ScanMessage
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	if p.Time.IsZero() {
		return errors.New("scan time is missing")
	}
	for i := range p.Points {
		if p.Points[i].Time.IsZero() {
			p.Points[i].Time = p.Time
		}
	}
	*s = ScanMessage(p)
	return nil
}

// MarshalJSON encodes the point as ferry publishes it.
func (p PointMessage) MarshalJSON() ([]byte, error) {
	return appendPoint(nil, p.Name, p.Value, ferry.Quality{Status: p.Quality, Reason: p.Reason}, p.Time, time.Time{}), nil
}

// UnmarshalJSON decodes a point.
func (p *PointMessage) UnmarshalJSON(b []byte) error {
	var w struct {
		Name    string          `json:"name"`
		Value   json.RawMessage `json:"value"`
		Quality string          `json:"quality"`
		Reason  string          `json:"reason"`
		Time    time.Time       `json:"time"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	if w.Name == "" {
		return errors.New("point name is missing")
	}
	v, err := parseValue(w.Value)
	if err != nil {
		return fmt.Errorf("point %s: %w", w.Name, err)
	}
	st := ferry.Good
	switch w.Quality {
	case "", "good":
	case "uncertain":
		st = ferry.Uncertain
	case "bad":
		st = ferry.Bad
	default:
		return fmt.Errorf("point %s: quality %q is not one of good, uncertain, bad", w.Name, w.Quality)
	}
	*p = PointMessage{Name: w.Name, Value: v, Quality: st, Reason: w.Reason, Time: w.Time}
	return nil
}

// UnmarshalJSON decodes an alert, with its value.
func (a *AlertMessage) UnmarshalJSON(b []byte) error {
	type plain AlertMessage
	var w struct {
		plain
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	v, err := parseValue(w.Value)
	if err != nil {
		return fmt.Errorf("alert value: %w", err)
	}
	*a = AlertMessage(w.plain)
	a.Value = v
	return nil
}

// MarshalJSON encodes the alert as ferry publishes it.
func (a AlertMessage) MarshalJSON() ([]byte, error) {
	e := newEncoder(a.Gateway, a.Site)
	al := ferry.Alert{ID: a.ID, Rule: a.Rule, Device: a.Device, Point: a.Point, Value: a.Value, Message: a.Message, Labels: a.Labels, Since: a.Since, Time: a.Time}
	var err error
	if al.State, err = parseState(a.State); err != nil {
		return nil, err
	}
	if al.Severity, err = ferry.ParseSeverity(a.Severity); err != nil {
		return nil, err
	}
	return e.appendAlert(nil, a.ConfigVersion, &al), nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func parseState(s string) (ferry.AlertState, error) {
	for st := ferry.AlertRaised; st <= ferry.AlertCleared; st++ {
		if st.String() == s {
			return st, nil
		}
	}
	return 0, &ferry.ParseError{What: "alert state", Value: s, Want: "raised, acknowledged, cleared"}
}

// parseValue turns a JSON value into a ferry.Value: null or absent is
// none, an integer literal is int (uint above the int64 range), any other
// number is float, true/false is bool, a string is string.
func parseValue(raw json.RawMessage) (ferry.Value, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ferry.Value{}, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return ferry.Value{}, err
		}
		return ferry.StringValue(s), nil
	case 't', 'f':
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return ferry.Value{}, err
		}
		return ferry.BoolValue(b), nil
	case '{', '[':
		return ferry.Value{}, fmt.Errorf("value %.40s is not a number, bool, string or null", raw)
	}
	if !json.Valid(raw) {
		return ferry.Value{}, fmt.Errorf("value %.40q is not a JSON number", raw)
	}
	s := string(raw)
	if !bytes.ContainsAny(raw, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return ferry.IntValue(i), nil
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return ferry.UintValue(u), nil
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return ferry.Value{}, fmt.Errorf("value %.40q: %w", s, err)
	}
	return ferry.FloatValue(f), nil
}

// encoder appends ferry's JSON messages without reflection. Encoding is
// on the drain's hot path: a sample costs a few appends and one number
// format, and steady-state encoding allocates only the message itself.
type encoder struct {
	head []byte // `{"gateway":"…","site":"…"` (site when set)
}

func newEncoder(gateway, site string) *encoder {
	e := &encoder{}
	e.head = append(e.head, `{"gateway":`...)
	e.head = appendString(e.head, gateway)
	if site != "" {
		e.head = append(e.head, `,"site":`...)
		e.head = appendString(e.head, site)
	}
	return e
}

// appendTelemetry appends the message of a decoded telemetry record and
// returns the number of samples in it.
// part and parts are set (1-based) when a record too large for one
// message is sent in several.
func (e *encoder) appendTelemetry(dst []byte, t *codec.Telemetry, part, parts int) ([]byte, int) {
	n := 0
	dst = append(dst, e.head...)
	dst = append(dst, `,"device":`...)
	dst = appendString(dst, t.Device)
	if t.ConfigVersion != "" {
		dst = append(dst, `,"config_version":`...)
		dst = appendString(dst, t.ConfigVersion)
	}
	if parts > 0 {
		dst = append(dst, `,"part":`...)
		dst = strconv.AppendInt(dst, int64(part), 10)
		dst = append(dst, `,"parts":`...)
		dst = strconv.AppendInt(dst, int64(parts), 10)
	}
	dst = append(dst, `,"scans":[`...)
	for i := range t.Scans {
		sc := &t.Scans[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"time":`...)
		dst = appendTime(dst, sc.Time)
		dst = append(dst, `,"points":[`...)
		for j := range sc.Samples {
			s := &sc.Samples[j]
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = appendPoint(dst, s.Point, s.Value, s.Quality, s.Time, sc.Time)
			n++
		}
		dst = append(dst, "]}"...)
	}
	return append(dst, "]}"...), n
}

func appendPoint(dst []byte, name string, v ferry.Value, q ferry.Quality, t, scanTime time.Time) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendString(dst, name)
	dst = append(dst, `,"value":`...)
	dst = appendValue(dst, v)
	if q.Status != ferry.Good {
		dst = append(dst, `,"quality":"`...)
		dst = append(dst, q.Status.String()...)
		dst = append(dst, '"')
	}
	if q.Reason != "" {
		dst = append(dst, `,"reason":`...)
		dst = appendString(dst, q.Reason)
	}
	if !t.IsZero() && !t.Equal(scanTime) {
		dst = append(dst, `,"time":`...)
		dst = appendTime(dst, t)
	}
	return append(dst, '}')
}

// appendAlert appends the message of an alert.
func (e *encoder) appendAlert(dst []byte, configVersion string, a *ferry.Alert) []byte {
	dst = append(dst, e.head...)
	if configVersion != "" {
		dst = append(dst, `,"config_version":`...)
		dst = appendString(dst, configVersion)
	}
	dst = append(dst, `,"id":`...)
	dst = appendString(dst, a.ID)
	dst = append(dst, `,"rule":`...)
	dst = appendString(dst, a.Rule)
	if a.Device != "" {
		dst = append(dst, `,"device":`...)
		dst = appendString(dst, a.Device)
	}
	if a.Point != "" {
		dst = append(dst, `,"point":`...)
		dst = appendString(dst, a.Point)
	}
	dst = append(dst, `,"state":`...)
	dst = appendString(dst, a.State.String())
	dst = append(dst, `,"severity":`...)
	dst = appendString(dst, a.Severity.String())
	dst = append(dst, `,"value":`...)
	dst = appendValue(dst, a.Value)
	if a.Message != "" {
		dst = append(dst, `,"message":`...)
		dst = appendString(dst, a.Message)
	}
	if len(a.Labels) > 0 {
		dst = append(dst, `,"labels":{`...)
		for i, k := range sortedKeys(a.Labels) {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, k)
			dst = append(dst, ':')
			dst = appendString(dst, a.Labels[k])
		}
		dst = append(dst, '}')
	}
	if !a.Since.IsZero() {
		dst = append(dst, `,"since":`...)
		dst = appendTime(dst, a.Since)
	}
	dst = append(dst, `,"time":`...)
	dst = appendTime(dst, a.Time)
	return append(dst, '}')
}

// appendValue appends v as JSON: numbers as numbers, bool, string, none as
// null. NaN and ±Inf, which JSON cannot hold, become the strings "NaN",
// "+Inf" and "-Inf". A float that is exactly a float32 (a value read from a
// 32-bit register) is written with the fewest digits that identify that
// float32: 81.3, not 81.30000305175781.
func appendValue(dst []byte, v ferry.Value) []byte {
	switch v.Kind() {
	case ferry.KindFloat:
		return appendFloat(dst, v.Float64())
	case ferry.KindInt:
		return strconv.AppendInt(dst, v.Int64(), 10)
	case ferry.KindUint:
		return strconv.AppendUint(dst, v.Uint64(), 10)
	case ferry.KindBool:
		return strconv.AppendBool(dst, v.Bool())
	case ferry.KindString:
		return appendString(dst, v.Str())
	}
	return append(dst, "null"...)
}

func appendFloat(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(dst, `"+Inf"`...)
	case math.IsInf(f, -1):
		return append(dst, `"-Inf"`...)
	}
	bits := 64
	if float64(float32(f)) == f {
		bits = 32
	}
	// Like encoding/json: plain notation between 1e-6 and 1e21, else
	// exponent notation with a short exponent.
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21)) {
		format = 'e'
	}
	start := len(dst)
	dst = strconv.AppendFloat(dst, f, format, -1, bits)
	if format == 'f' {
		// Keep floats recognisable as floats: 2.0, not 2, so that a
		// consumer inferring a column type from the first value does not
		// settle on integer.
		if bytes.IndexByte(dst[start:], '.') < 0 {
			dst = append(dst, '.', '0')
		}
		return dst
	}
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(dst) - start
		if n >= 4 && dst[len(dst)-4] == 'e' && dst[len(dst)-3] == '-' && dst[len(dst)-2] == '0' {
			dst[len(dst)-2] = dst[len(dst)-1]
			dst = dst[:len(dst)-1]
		}
	}
	return dst
}

// appendTime appends t as an RFC 3339 UTC string with nanoseconds (as
// many digits as needed).
func appendTime(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as encoding/json does.
func appendString[S ~string | ~[]byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
