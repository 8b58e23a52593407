package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
)

// Where a command came from, for its audit event.
const (
	ViaNATS = "nats"
	ViaHTTP = "http"
)

// Options is what a Service needs of the gateway. Config, Point and Writer
// are required.
type Options struct {
	Logger *slog.Logger
	// Store keeps the command ids (the buffer).
	Store Store
	// Gateway is put in each audit event's labels.
	Gateway string
	// Config returns the `commands:` section now (a reload changes it).
	Config func() Config
	// Point returns a configured point (with its WriteSpec).
	Point func(device, point string) (ferry.PointInfo, bool)
	// Method reports whether device declares a method of that name that
	// commands may call (OPC UA); nil: none.
	Method func(device, name string) bool
	// Writer returns the driver that holds device; an error says why
	// there is none (unknown device, a protocol that cannot write).
	Writer func(device string) (ferry.Writer, error)
	// Value returns the latest sample of a point an interlock reads.
	Value func(device, point string) (ferry.Sample, bool)
	// Audit receives each audit event once it is stored (the local
	// sinks); it must not block.
	Audit func(ferry.Alert)
	// Registerer receives ferry_commands_total; nil registers none.
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Service is the command path. Create it with New, call Recover once
// before taking commands, then Handle each request.
type Service struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	total *prometheus.CounterVec

	locks      interlocks
	pointLocks sync.Map // "device.point" → *sync.Mutex: checks and write, one at a time per point

	mu       sync.Mutex
	ids      index
	inflight map[string]chan struct{} // closed when the id's reply is stored
	lastW    map[string]time.Time     // "device.point" → last write sent, for the rate limit
}

// New returns a Service. It does no I/O.
func New(o Options) (*Service, error) {
	if o.Config == nil || o.Point == nil || o.Writer == nil || o.Store == nil {
		return nil, errors.New("command: Options.Config, Point, Writer and Store are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Value == nil {
		o.Value = func(string, string) (ferry.Sample, bool) { return ferry.Sample{}, false }
	}
	s := &Service{
		opts:     o,
		log:      o.Logger,
		now:      o.Now,
		ids:      index{at: map[string]*slot{}},
		inflight: map[string]chan struct{}{},
		lastW:    map[string]time.Time{},
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_commands_total",
			Help: "Commands answered, by status (done, refused, failed, unknown).",
		}, []string{"status"}),
	}
	for _, st := range []string{ferry.CommandDone, ferry.CommandRefused, ferry.CommandFailed, ferry.CommandUnknown} {
		s.total.WithLabelValues(st)
	}
	if o.Registerer != nil {
		if err := o.Registerer.Register(s.total); err != nil {
			return nil, fmt.Errorf("command: register metrics: %w", err)
		}
	}
	return s, nil
}

// Recover loads the stored ids. A command stored as accepted with no
// reply was cut short by a crash during its write: it gets the reply
// "unknown" (stored, with its audit event) and is never retried. Call it
// once, before Handle.
func (s *Service) Recover() error {
	type cut struct {
		id string
		e  entry
	}
	var cuts []cut
	err := s.opts.Store.ForEach(Bucket, func(k, v []byte) error {
		e, err := decodeEntry(v)
		if err != nil {
			// A record this version cannot read is kept until it ages
			// out; its id stays known (never written twice).
			s.log.Warn("stored command unreadable", "id", string(k), "err", err)
			e = entry{Phase: phaseFinal, Received: s.now(), Reply: ferry.CommandReply{ID: string(k),
				Status: ferry.CommandUnknown, Reason: "this id is known but its stored reply cannot be read", At: s.now()}}
		}
		id := string(k)
		s.ids.add(id, e)
		if e.Wrote {
			key := e.Device + "." + e.Point
			if e.Reply.At.After(s.lastW[key]) {
				s.lastW[key] = e.Reply.At
			}
		}
		if e.Phase == phaseAccepted {
			cuts = append(cuts, cut{id, e})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range cuts {
		e := c.e
		e.Phase = phaseFinal
		e.Wrote = true
		e.Reply = ferry.CommandReply{ID: c.id, Status: ferry.CommandUnknown,
			Reason: "the gateway stopped during the write; it is not retried", At: s.now()}
		key := e.Device + "." + e.Point
		if e.Reply.At.After(s.lastW[key]) {
			s.lastW[key] = e.Reply.At
		}
		if err := s.store(c.id, e, s.auditOf(c.id, e, "unknown")); err != nil {
			return err
		}
		s.log.Warn("command outcome unknown after restart; not retried", "id", c.id, "device", e.Device, "point", e.Point)
		s.total.WithLabelValues(ferry.CommandUnknown).Inc()
	}
	return nil
}

// Handle runs one request (its JSON) through the command path and returns
// the reply. via says where it came from (ViaNATS, ViaHTTP), by who
// asked, when known (the HTTP operator). It returns only after the reply
// is stored: the reply is final.
func (s *Service) Handle(ctx context.Context, data []byte, via, by string) ferry.CommandReply {
	cfg := s.opts.Config()
	now := s.now()
	var req ferry.CommandRequest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return s.refuseUnstored(req.ID, "", "", via, by, "malformed request: "+err.Error(), now)
	}
	if dec.More() {
		return s.refuseUnstored(req.ID, "", "", via, by, "malformed request: data after the JSON object", now)
	}
	if err := checkID(req.ID); err != nil {
		return s.refuseUnstored("", req.Device, req.Point, via, by, "malformed request: "+err.Error(), now)
	}
	if !cfg.Enabled {
		return s.refuseUnstored(req.ID, req.Device, req.Point, via, by, "commands are disabled on this gateway (commands.enabled: false)", now)
	}

	// One command per id at a time; a repeat gets the stored reply.
	for {
		s.mu.Lock()
		if wait, busy := s.inflight[req.ID]; busy {
			s.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return ferry.CommandReply{ID: req.ID, Status: ferry.CommandUnknown,
					Reason: "the same id is being written; ask again for its reply", At: s.now()}
			}
		}
		if sl, known := s.ids.at[req.ID]; known {
			reply := sl.reply
			if !sl.final {
				reply = ferry.CommandReply{ID: req.ID, Status: ferry.CommandUnknown, Reason: "the first request with this id did not finish; it is not retried", At: s.now()}
			}
			s.mu.Unlock()
			return reply
		}
		done := make(chan struct{})
		s.inflight[req.ID] = done
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.inflight, req.ID)
			s.mu.Unlock()
			close(done)
		}()
		break
	}

	e := entry{Device: req.Device, Point: req.Point, Value: req.Value, Via: via, Received: now, Deadline: req.Deadline}
	if e.Deadline.IsZero() {
		e.Deadline = now.Add(cfg.DefaultDeadline)
	}
	return s.run(ctx, cfg, req, e, by)
}

// run does the checks, stores, writes and stores the reply.
func (s *Service) run(ctx context.Context, cfg Config, req ferry.CommandRequest, e entry, by string) ferry.CommandReply {
	info, known := s.opts.Point(req.Device, req.Point)
	if !known && s.opts.Method != nil && s.opts.Method(req.Device, req.Point) {
		return s.call(ctx, cfg, req, e, by)
	}
	if !known {
		if _, err := s.opts.Writer(req.Device); errors.Is(err, ferry.ErrUnknownDevice) {
			return s.refuse(req.ID, e, by, fmt.Sprintf("unknown device %q", req.Device))
		}
		return s.refuse(req.ID, e, by, fmt.Sprintf("unknown point %q of device %q", req.Point, req.Device))
	}
	spec := info.Write
	if spec == nil {
		return s.refuse(req.ID, e, by, fmt.Sprintf("point %s.%s is not writable (no write: block in the device map)", req.Device, req.Point))
	}
	drv, err := s.opts.Writer(req.Device)
	if err != nil {
		return s.refuse(req.ID, e, by, fmt.Sprintf("point %s.%s is not writable: %v", req.Device, req.Point, err))
	}
	wreq := ferry.WriteRequest{Device: req.Device, Point: req.Point}
	if len(req.Args) > 0 {
		return s.refuse(req.ID, e, by, fmt.Sprintf("%s.%s is a point, not a method: send value, not args", req.Device, req.Point))
	}
	v, err := parseValue(req.Value, info.Type)
	if err != nil {
		return s.refuse(req.ID, e, by, "value: "+err.Error())
	}
	if reason := checkLimits(v, spec); reason != "" {
		return s.refuse(req.ID, e, by, reason)
	}
	wreq.Value = v
	if reason := s.checkDeadline(cfg, e); reason != "" {
		return s.refuse(req.ID, e, by, reason)
	}
	// From the rate limit to the write, one command per point at a time.
	key := req.Device + "." + req.Point
	pl, _ := s.pointLocks.LoadOrStore(key, &sync.Mutex{})
	plock := pl.(*sync.Mutex)
	plock.Lock()
	defer plock.Unlock()
	if spec.RateLimit > 0 {
		s.mu.Lock()
		last, seen := s.lastW[key]
		s.mu.Unlock()
		if since := s.now().Sub(last); seen && since < spec.RateLimit {
			return s.refuse(req.ID, e, by, fmt.Sprintf("rate limit: %s was written %v ago, rate_limit is %v", key, since.Round(time.Millisecond), spec.RateLimit))
		}
	}
	if spec.Interlock != "" {
		il, err := s.locks.get(req.Device, spec.Interlock)
		if err != nil {
			return s.refuse(req.ID, e, by, err.Error())
		}
		if ok, reason := il.eval(s.opts.Value); !ok {
			return s.refuse(req.ID, e, by, reason)
		}
	}
	if !s.now().Before(e.Deadline) {
		return s.refuse(req.ID, e, by, fmt.Sprintf("deadline %s has passed", e.Deadline.UTC().Format(time.RFC3339Nano)))
	}
	return s.write(ctx, cfg, req, e, by, drv, wreq)
}

// call runs a method call: the method is declared in the device's map
// (that is its leave: methods have no limits, rate limit or interlock of
// their own); its arguments are converted by the driver, losslessly or
// not at all.
func (s *Service) call(ctx context.Context, cfg Config, req ferry.CommandRequest, e entry, by string) ferry.CommandReply {
	drv, err := s.opts.Writer(req.Device)
	if err != nil {
		return s.refuse(req.ID, e, by, fmt.Sprintf("method %s.%s cannot be called: %v", req.Device, req.Point, err))
	}
	if len(req.Value) > 0 && string(bytes.TrimSpace(req.Value)) != "null" {
		return s.refuse(req.ID, e, by, fmt.Sprintf("%s.%s is a method: send args, not value", req.Device, req.Point))
	}
	wreq := ferry.WriteRequest{Device: req.Device, Point: req.Point}
	for i, a := range req.Args {
		v, err := parseValue(a, "")
		if err != nil {
			return s.refuse(req.ID, e, by, fmt.Sprintf("args[%d]: %v", i, err))
		}
		wreq.Args = append(wreq.Args, v)
	}
	if reason := s.checkDeadline(cfg, e); reason != "" {
		return s.refuse(req.ID, e, by, reason)
	}
	e.Value, _ = json.Marshal(req.Args)
	key := req.Device + "." + req.Point
	pl, _ := s.pointLocks.LoadOrStore(key, &sync.Mutex{})
	plock := pl.(*sync.Mutex)
	plock.Lock()
	defer plock.Unlock()
	return s.write(ctx, cfg, req, e, by, drv, wreq)
}

// checkDeadline returns why e is past its deadline, or too far ahead.
func (s *Service) checkDeadline(cfg Config, e entry) string {
	if !s.now().Before(e.Deadline) {
		return fmt.Sprintf("deadline %s has passed", e.Deadline.UTC().Format(time.RFC3339Nano))
	}
	if ahead := e.Deadline.Sub(e.Received); ahead > cfg.MaxDeadline {
		return fmt.Sprintf("deadline is %v ahead, more than commands.max_deadline %v", ahead.Round(time.Second), cfg.MaxDeadline)
	}
	return ""
}

// write stores the id (accepted), writes through the driver, stores the
// reply and returns it. The caller holds the point's lock.
func (s *Service) write(ctx context.Context, cfg Config, req ferry.CommandRequest, e entry, by string, drv ferry.Writer, wreq ferry.WriteRequest) ferry.CommandReply {
	key := req.Device + "." + req.Point
	// Accepted: the id is durable before anything goes to the device.
	e.Phase = phaseAccepted
	if err := s.store(req.ID, e, s.auditOf(req.ID, e, "accepted", by)); err != nil {
		// Nothing was written; the id is not stored, so a retry may
		// still succeed once the disk works again.
		s.forget(req.ID)
		reply := ferry.CommandReply{ID: req.ID, Status: ferry.CommandFailed, Reason: "not written: the command id could not be stored: " + err.Error(), At: s.now()}
		s.log.Error("command not written: id not stored", "id", req.ID, "device", req.Device, "point", req.Point, "err", err)
		s.total.WithLabelValues(reply.Status).Inc()
		return reply
	}
	s.log.Info("command accepted", "id", req.ID, "device", req.Device, "point", req.Point, "value", string(e.Value), "via", e.Via, "by", by)

	// The write is not abandoned when the caller goes away (its outcome
	// must be stored); it is bounded by commands.write_timeout. The
	// deadline is checked before it starts: a write that started in time
	// may end after it.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.WriteTimeout)
	res, werr := drv.Write(wctx, wreq)
	cancel()
	at := s.now()
	s.mu.Lock()
	s.lastW[key] = at
	s.mu.Unlock()

	reply := ferry.CommandReply{ID: req.ID, At: at}
	switch {
	case werr == nil:
		reply.Status = ferry.CommandDone
	case errors.Is(werr, ferry.ErrWriteRefused):
		reply.Status = ferry.CommandRefused
	case errors.Is(werr, ferry.ErrReadBackMismatch):
		reply.Status = ferry.CommandFailed
	case errors.Is(werr, ferry.ErrWriteUnknown), errors.Is(werr, context.DeadlineExceeded):
		reply.Status = ferry.CommandUnknown
	default:
		reply.Status = ferry.CommandFailed
	}
	if werr != nil {
		reply.Reason = werr.Error()
	}
	if !res.ReadBack.IsNone() {
		reply.ReadBack = jsonValue(res.ReadBack)
	}
	for _, o := range res.Outputs {
		reply.Outputs = append(reply.Outputs, jsonValue(o))
	}
	e.Phase = phaseFinal
	e.Wrote = reply.Status != ferry.CommandRefused
	e.Reply = reply
	if err := s.store(req.ID, e, s.auditOf(req.ID, e, reply.Status, by)); err != nil {
		// The id stays stored as accepted: the next start reports it
		// unknown. This reply is the one the caller gets now.
		s.log.Error("command reply not stored", "id", req.ID, "status", reply.Status, "err", err)
	}
	s.logReply(req.ID, e, by)
	s.total.WithLabelValues(reply.Status).Inc()
	return reply
}

// refuse stores a refusal under the command's id (a retry gets the same
// answer) with its audit event, and returns it. Nothing was written.
func (s *Service) refuse(id string, e entry, by, reason string) ferry.CommandReply {
	e.Phase = phaseFinal
	e.Reply = ferry.CommandReply{ID: id, Status: ferry.CommandRefused, Reason: reason, At: s.now()}
	if err := s.store(id, e, s.auditOf(id, e, ferry.CommandRefused, by)); err != nil {
		s.forget(id)
		s.log.Error("command refusal not stored", "id", id, "err", err)
	}
	s.logReply(id, e, by)
	s.total.WithLabelValues(ferry.CommandRefused).Inc()
	return e.Reply
}

// refuseUnstored refuses a request that cannot be stored (no usable id,
// or commands disabled): its audit event goes to the alerts lane alone.
func (s *Service) refuseUnstored(id, device, point, via, by, reason string, now time.Time) ferry.CommandReply {
	e := entry{Phase: phaseFinal, Device: device, Point: point, Via: via, Received: now,
		Reply: ferry.CommandReply{ID: id, Status: ferry.CommandRefused, Reason: reason, At: now}}
	a := s.auditOf(id, e, ferry.CommandRefused, by)
	if ap, ok := s.opts.Store.(interface{ AppendAlert(ferry.Alert) }); ok {
		ap.AppendAlert(a)
	}
	if s.opts.Audit != nil {
		s.opts.Audit(a)
	}
	s.logReply(id, e, by)
	s.total.WithLabelValues(ferry.CommandRefused).Inc()
	return e.Reply
}

// store commits e under id with the audit event, then hands the event to
// the local sinks.
func (s *Service) store(id string, e entry, audit ferry.Alert) error {
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := s.opts.Store.PutWithAlerts(Bucket, []byte(id), v, audit); err != nil {
		return err
	}
	s.mu.Lock()
	s.ids.add(id, e)
	s.mu.Unlock()
	if s.opts.Audit != nil {
		s.opts.Audit(audit)
	}
	return nil
}

func (s *Service) forget(id string) {
	s.mu.Lock()
	s.ids.drop([]string{id})
	s.mu.Unlock()
}

func (s *Service) logReply(id string, e entry, by string) {
	r := e.Reply
	attrs := []any{"id", id, "device", e.Device, "point", e.Point, "status", r.Status, "via", e.Via}
	if by != "" {
		attrs = append(attrs, "by", by)
	}
	if r.Reason != "" {
		attrs = append(attrs, "reason", r.Reason)
	}
	if r.ReadBack != nil {
		attrs = append(attrs, "read_back", r.ReadBack)
	}
	if r.Status == ferry.CommandDone {
		s.log.Info("command done", attrs...)
	} else {
		s.log.Warn("command "+r.Status, attrs...)
	}
}

// Run forgets the ids past commands.keep, and the oldest beyond
// commands.max_ids, once a minute until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		s.Evict()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Evict forgets the ids past commands.keep and the oldest beyond
// commands.max_ids now; it returns how many.
func (s *Service) Evict() int {
	cfg := s.opts.Config()
	s.mu.Lock()
	ids := s.ids.expired(s.now(), cfg.Keep, cfg.MaxIDs)
	// Not the ids being written now: their entries are about to change.
	n := 0
	for _, id := range ids {
		if _, busy := s.inflight[id]; !busy {
			ids[n] = id
			n++
		}
	}
	ids = ids[:n]
	s.mu.Unlock()
	var gone []string
	for _, id := range ids {
		if err := s.opts.Store.Delete(Bucket, []byte(id)); err != nil {
			s.log.Warn("command id not forgotten", "id", id, "err", err)
			break
		}
		gone = append(gone, id)
	}
	s.mu.Lock()
	s.ids.drop(gone)
	s.mu.Unlock()
	return len(gone)
}

// checkID checks a command id: 1..MaxIDLen printable bytes.
func checkID(id string) error {
	switch {
	case id == "":
		return errors.New(`"id" is required`)
	case len(id) > MaxIDLen:
		return fmt.Errorf("id is longer than %d bytes", MaxIDLen)
	}
	for _, r := range id {
		if !unicode.IsPrint(r) || r == unicode.ReplacementChar {
			return errors.New("id holds a character that is not printable")
		}
	}
	return nil
}

// parseValue turns a JSON value into a ferry.Value for a point of type
// typ ("" when the point's type is the device's own, as OPC UA's).
func parseValue(raw json.RawMessage, typ string) (ferry.Value, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ferry.Value{}, errors.New(`"value" is required`)
	}
	var v ferry.Value
	switch raw[0] {
	case 't', 'f':
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return v, fmt.Errorf("%s is not a JSON value", raw)
		}
		v = ferry.BoolValue(b)
	case '"':
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return v, fmt.Errorf("%s is not a JSON string", raw)
		}
		v = ferry.StringValue(str)
	case '[', '{':
		return v, errors.New("must be a number, a bool or a string")
	default:
		n := json.Number(raw)
		if i, err := strconv.ParseInt(n.String(), 10, 64); err == nil {
			v = ferry.IntValue(i)
		} else if f, err := strconv.ParseFloat(n.String(), 64); err == nil && !math.IsInf(f, 0) {
			v = ferry.FloatValue(f)
		} else {
			return v, fmt.Errorf("%s is not a number", raw)
		}
	}
	switch {
	case typ == "":
		return v, nil
	case typ == "bool":
		if v.Kind() != ferry.KindBool {
			return v, fmt.Errorf("%s does not fit a bool point (send true or false)", raw)
		}
	case typ == "string":
		if v.Kind() != ferry.KindString {
			return v, fmt.Errorf("%s does not fit a string point (send a JSON string)", raw)
		}
	default:
		if _, ok := v.Number(); !ok {
			return v, fmt.Errorf("%s does not fit a %s point (send a number)", raw, typ)
		}
	}
	return v, nil
}

// checkLimits checks v against the point's min, max and allowed values;
// it returns the reason of a refusal, or "".
func checkLimits(v ferry.Value, spec *ferry.WriteSpec) string {
	if f, ok := v.Number(); ok {
		if math.IsNaN(f) {
			return "value NaN cannot be written"
		}
		if spec.Min != nil && f < *spec.Min {
			return fmt.Sprintf("value %s is below min %s", v, strconv.FormatFloat(*spec.Min, 'g', -1, 64))
		}
		if spec.Max != nil && f > *spec.Max {
			return fmt.Sprintf("value %s is above max %s", v, strconv.FormatFloat(*spec.Max, 'g', -1, 64))
		}
	}
	if len(spec.Allowed) > 0 {
		for _, a := range spec.Allowed {
			if allowedEqual(a, v) {
				return ""
			}
		}
		return fmt.Sprintf("value %s is not one of the allowed values %s", v, strings.Join(spec.Allowed, ", "))
	}
	return ""
}

// allowedEqual compares an allowed value (text) with v after converting
// it to v's kind.
func allowedEqual(a string, v ferry.Value) bool {
	switch v.Kind() {
	case ferry.KindBool:
		b, err := strconv.ParseBool(a)
		return err == nil && b == v.Bool()
	case ferry.KindString:
		return a == v.Str()
	}
	f, ok := v.Number()
	g, err := strconv.ParseFloat(strings.TrimSpace(a), 64)
	return ok && err == nil && f == g
}

// jsonValue is v as it goes into a reply.
func jsonValue(v ferry.Value) any {
	if v.Kind() == ferry.KindFloat {
		f := v.Float64()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return v.String()
		}
	}
	return v.Any()
}
