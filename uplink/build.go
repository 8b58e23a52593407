package uplink

import (
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/codec"
)

// outMsg is one message ready to publish.
type outMsg struct {
	msg     *nats.Msg
	size    int // subject, headers and body
	samples int
}

// msgBuilder turns records into messages. It is used by one goroutine at
// a time (the pump).
type msgBuilder struct {
	u          *Uplink
	enc        *encoder
	benc       *encoder // the head without its brace: a batch's record follows {"id":…,
	tc         transcoder
	maxPayload int // body and headers, at most
	scratch    []byte
	out        []outMsg

	// Header values shared by every message (nats.go only reads them).
	ctype, fver, kindTel, kindAlert []string
	kindBatch, compression          []string
	cfgVer                          map[string][]string
	packed                          []byte // a compressed batch body
}

func newMsgBuilder(u *Uplink, maxPayload int64) *msgBuilder {
	if maxPayload <= 0 {
		maxPayload = 1 << 20
	}
	b := &msgBuilder{
		u:          u,
		enc:        newEncoder(u.opts.Gateway, u.opts.Site),
		benc:       newEncoder(u.opts.Gateway, u.opts.Site),
		maxPayload: int(maxPayload),
		ctype:      []string{ContentTypeJSON},
		fver:       []string{u.opts.Version},
		kindTel:    []string{KindTelemetry},
		kindAlert:  []string{KindAlert},
		kindBatch:  []string{KindBatch},
		cfgVer:     map[string][]string{},
	}
	b.benc.head = b.benc.head[1:]
	if c := u.cfg.Compression; c != "" && c != CompressionNone {
		b.compression = []string{c}
	}
	return b
}

// batchLimit is the most body bytes of a batch message: batch.max_bytes,
// capped by what the server's max_payload leaves after the subject and
// headers.
func (b *msgBuilder) batchLimit() int {
	return min(int(b.u.cfg.Batch.MaxBytes), b.maxPayload-len(b.u.batchSubject)-512)
}

// batchHead starts a batch body: `{"gateway":…,"site":…,"records":[`.
func (b *msgBuilder) batchHead(dst []byte) []byte {
	dst = append(dst, b.enc.head...)
	return append(dst, `,"records":[`...)
}

// element appends rec as a record of a batch body: its telemetry message
// with its id first. It returns the samples in it; an error means the
// record cannot be decoded (dst is returned as it was). The bytes depend
// only on the record, so a batch built again from the same records is the
// same.
func (b *msgBuilder) element(dst []byte, rec ferry.Record) ([]byte, int, error) {
	if rec.Lane != ferry.LaneTelemetry {
		return dst, 0, fmt.Errorf("%s record in a batch", rec.Lane)
	}
	start := len(dst)
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, rec.ID)
	dst = append(dst, ',')
	out, _, _, n, ok := b.tc.telemetry(b.benc, dst, rec.Data)
	if ok {
		return out, n, nil
	}
	t, err := codec.DecodeTelemetry(rec.Data)
	if err != nil {
		return dst[:start], 0, err
	}
	dst, n = b.benc.appendTelemetry(dst, &t, 0, 0)
	return dst, n, nil
}

// batch returns the message of a batch body (from batchHead, with its
// elements, without the closing "]}"), compressed as configured.
func (b *msgBuilder) batch(id string, body []byte, samples int) (outMsg, error) {
	body = append(body, "]}"...)
	hdr := make(nats.Header, 6)
	hdr[nats.MsgIdHdr] = []string{id}
	hdr[HeaderContentType] = b.ctype
	hdr[HeaderKind] = b.kindBatch
	hdr[HeaderVersion] = b.fver
	if b.compression != nil {
		hdr[HeaderCompression] = b.compression
		var err error
		b.packed, err = compress(b.compression[0], b.packed[:0], body)
		if err != nil {
			return outMsg{}, err
		}
		body = b.packed
	}
	return b.msg(b.u.batchSubject, hdr, body, samples), nil
}

func (b *msgBuilder) header(kind []string, id string, configVersion []byte) nats.Header {
	h := make(nats.Header, 5)
	h[nats.MsgIdHdr] = []string{id}
	h[HeaderContentType] = b.ctype
	h[HeaderKind] = kind
	h[HeaderVersion] = b.fver
	if len(configVersion) > 0 {
		cv, ok := b.cfgVer[string(configVersion)]
		if !ok {
			if len(b.cfgVer) > 64 {
				clear(b.cfgVer)
			}
			cv = []string{string(configVersion)}
			b.cfgVer[cv[0]] = cv
		}
		h[HeaderConfigVersion] = cv
	}
	return h
}

// headerSize is the size of h on the wire.
func headerSize(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

func (b *msgBuilder) msg(subject string, h nats.Header, body []byte, samples int) outMsg {
	data := make([]byte, len(body))
	copy(data, body)
	m := &nats.Msg{Subject: subject, Header: h, Data: data}
	return outMsg{msg: m, size: len(subject) + headerSize(h) + len(data), samples: samples}
}

// build returns the message(s) of rec. The slice is reused by the next
// call. An error means the record cannot be decoded.
func (b *msgBuilder) build(rec ferry.Record) ([]outMsg, error) {
	b.out = b.out[:0]
	h, err := codec.PeekHeader(rec.Data)
	if err != nil {
		return nil, err
	}
	switch h.Kind {
	case codec.KindAlert:
		if rec.Lane != ferry.LaneAlerts {
			return nil, fmt.Errorf("alert record in lane %s", rec.Lane)
		}
		return b.alert(rec)
	case codec.KindTelemetry:
		if rec.Lane != ferry.LaneTelemetry {
			return nil, fmt.Errorf("telemetry record in lane %s", rec.Lane)
		}
		return b.telemetry(rec)
	}
	return nil, fmt.Errorf("%w: unknown record kind %d", codec.ErrCorrupt, h.Kind)
}

func (b *msgBuilder) alert(rec ferry.Record) ([]outMsg, error) {
	h, a, err := codec.DecodeAlert(rec.Data)
	if err != nil {
		return nil, err
	}
	switch {
	case a.ID == "" || a.Rule == "":
		return nil, fmt.Errorf("%w: alert without id or rule", codec.ErrCorrupt)
	case a.Severity > ferry.SeverityCritical:
		return nil, fmt.Errorf("%w: alert severity %d", codec.ErrCorrupt, a.Severity)
	case a.State > ferry.AlertCleared:
		return nil, fmt.Errorf("%w: alert state %d", codec.ErrCorrupt, a.State)
	}
	hdr := b.header(b.kindAlert, rec.ID, []byte(h.ConfigVersion))
	limit := b.maxPayload - headerSize(hdr)
	b.scratch = b.enc.appendAlert(b.scratch[:0], h.ConfigVersion, &a)
	if len(b.scratch) > limit && len(a.Message) > 0 {
		// Only a runaway message text can make an alert this large.
		keep := max(0, len(a.Message)-(len(b.scratch)-limit)-64)
		a.Message = a.Message[:keep] + "… (truncated)"
		b.scratch = b.enc.appendAlert(b.scratch[:0], h.ConfigVersion, &a)
	}
	b.out = append(b.out, b.msg(b.u.subj.Alerts, hdr, b.scratch, 0))
	return b.out, nil
}

func (b *msgBuilder) telemetry(rec ferry.Record) ([]outMsg, error) {
	// The fast path: transcode the record without decoding it.
	body, dev, cv, n, ok := b.tc.telemetry(b.enc, b.scratch[:0], rec.Data)
	if ok {
		b.scratch = body
		if subject, ok := b.u.tel.subjectOf(dev); ok {
			hdr := b.header(b.kindTel, rec.ID, cv)
			if len(body) <= b.maxPayload-headerSize(hdr)-len(subject) {
				b.out = append(b.out, b.msg(subject, hdr, body, n))
				return b.out, nil
			}
		}
	}
	return b.telemetrySlow(rec)
}

// telemetrySlow decodes the record: for records the transcoder does not
// take, and for records that must be split.
func (b *msgBuilder) telemetrySlow(rec ferry.Record) ([]outMsg, error) {
	t, err := codec.DecodeTelemetry(rec.Data)
	if err != nil {
		return nil, err
	}
	subject, ok := b.u.tel.subject(t.Device)
	if !ok {
		return nil, fmt.Errorf("%w: device %q cannot be a subject token", codec.ErrCorrupt, t.Device)
	}
	hdr := b.header(b.kindTel, rec.ID, []byte(t.ConfigVersion))
	limit := b.maxPayload - headerSize(hdr) - len(subject)
	var n int
	b.scratch, n = b.enc.appendTelemetry(b.scratch[:0], &t, 0, 0)
	if len(b.scratch) <= limit {
		b.out = append(b.out, b.msg(subject, hdr, b.scratch, n))
		return b.out, nil
	}
	return b.split(rec, &t, subject, limit)
}

// split cuts a record too large for one message (the server's
// max_payload) into parts, by scans and, for a huge scan, by points. The
// cut depends only on the record and the limit, so a replay after a
// restart produces the same parts with the same ids
// ("<record id>-p<part>") and is deduplicated part by part. A single
// sample larger than the limit is sent as a Bad sample without value.
func (b *msgBuilder) split(rec ferry.Record, t *codec.Telemetry, subject string, limit int) ([]outMsg, error) {
	budget := limit - 256 // room for the message's head, part numbers and ids
	type chunk struct{ scans []ferry.Scan }
	var chunks []chunk
	var cur chunk
	curSize := 0
	var one []byte
	for _, sc := range t.Scans {
		piece := ferry.Scan{Device: sc.Device, Time: sc.Time}
		for _, s := range sc.Samples {
			one = appendPoint(one[:0], s.Point, s.Value, s.Quality, s.Time, sc.Time)
			if len(one)+64 > budget {
				b.u.m.err(reasonTooLarge)
				s.Value = ferry.Value{}
				s.Quality = ferry.BadQuality("value too large for max_payload")
				one = appendPoint(one[:0], s.Point, s.Value, s.Quality, s.Time, sc.Time)
			}
			need := len(one) + 1
			if len(piece.Samples) == 0 {
				need += 64 // the scan's time and brackets
			}
			if curSize+need > budget && (len(cur.scans) > 0 || len(piece.Samples) > 0) {
				if len(piece.Samples) > 0 {
					cur.scans = append(cur.scans, piece)
					piece = ferry.Scan{Device: sc.Device, Time: sc.Time}
				}
				chunks = append(chunks, cur)
				cur, curSize = chunk{}, 0
				need = len(one) + 65
			}
			piece.Samples = append(piece.Samples, s)
			curSize += need
		}
		cur.scans = append(cur.scans, piece)
	}
	if len(cur.scans) > 0 {
		chunks = append(chunks, cur)
	}
	for i, c := range chunks {
		id := rec.ID + "-p" + strconv.Itoa(i+1)
		hdr := b.header(b.kindTel, id, []byte(t.ConfigVersion))
		sub := codec.Telemetry{Header: t.Header, Device: t.Device, Scans: c.scans}
		var n int
		b.scratch, n = b.enc.appendTelemetry(b.scratch[:0], &sub, i+1, len(chunks))
		b.out = append(b.out, b.msg(subject, hdr, b.scratch, n))
	}
	return b.out, nil
}
