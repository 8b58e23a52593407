package sinks

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
)

// writeTimeout bounds one write to a stream client: a client whose TCP
// window stays shut that long is disconnected.
const writeTimeout = 10 * time.Second

// Stream is the hub of the Server-Sent Events stream of alert
// transitions. Each client has a bounded buffer; Publish never waits for
// a client: one that falls a full buffer behind is disconnected (and can
// reconnect and read GET /api/alerts to catch up).
//
// Events:
//
//	event: active   one per alert active when the client connected (see Serve)
//	event: alert    one per transition, data: ferry.AlertJSON
//
// and a comment line (": ping") when idle.
type Stream struct {
	gateway   string
	log       *slog.Logger
	now       func() time.Time
	buf, max  int
	heartbeat time.Duration

	sent, slow, errs prometheus.Counter
	clientsGauge     prometheus.Gauge

	mu      sync.Mutex
	clients map[*client]struct{}
	closed  bool
	seq     uint64
}

type client struct {
	ch   chan []byte
	gone chan struct{} // closed when the hub drops the client
}

func newStream(cfg StreamConfig, opts Options, m *metrics) *Stream {
	return &Stream{
		gateway:      opts.Gateway,
		log:          opts.Logger.With("sink", "stream"),
		now:          opts.Now,
		buf:          cfg.Buffer,
		max:          cfg.Clients,
		heartbeat:    cfg.Heartbeat,
		sent:         m.sent.WithLabelValues("stream"),
		slow:         m.dropped.WithLabelValues("stream", "slow_client"),
		errs:         m.errors.WithLabelValues("stream"),
		clientsGauge: m.clients,
		clients:      map[*client]struct{}{},
	}
}

// Gateway returns the gateway id the stream puts in every event.
func (s *Stream) Gateway() string { return s.gateway }

// event formats one SSE event.
func (s *Stream) event(name string, id uint64, a ferry.Alert) []byte {
	data, _ := json.Marshal(ferry.NewAlertJSON(a, s.gateway))
	b := make([]byte, 0, len(data)+48)
	if id > 0 {
		b = append(b, "id: "...)
		b = strconv.AppendUint(b, id, 10)
		b = append(b, '\n')
	}
	b = append(b, "event: "...)
	b = append(b, name...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}

// Publish sends a transition to every client without waiting.
func (s *Stream) Publish(a ferry.Alert) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.clients) == 0 {
		return
	}
	s.seq++
	ev := s.event("alert", s.seq, a)
	for c := range s.clients {
		select {
		case c.ch <- ev:
		default:
			s.slow.Inc()
			s.log.Info("alert stream client too slow; disconnected", "buffer", s.buf)
			s.drop(c)
		}
	}
}

// drop removes c; s.mu is held.
func (s *Stream) drop(c *client) {
	if _, ok := s.clients[c]; ok {
		delete(s.clients, c)
		close(c.gone)
		s.clientsGauge.Set(float64(len(s.clients)))
	}
}

// Close disconnects every client and refuses new ones.
func (s *Stream) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.clients {
		s.drop(c)
	}
}

// ServeHTTP serves the stream without an initial snapshot.
func (s *Stream) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.Serve(w, r, nil) }

// Serve streams transitions to one client until it goes away, is too
// slow, or the stream closes. When snapshot is not nil, the alerts it
// returns are sent first as "active" events; the client is subscribed
// before snapshot is called, so no transition falls between the two (one
// may arrive twice).
func (s *Stream) Serve(w http.ResponseWriter, r *http.Request, snapshot func() []ferry.Alert) {
	rc := http.NewResponseController(w)
	c := &client{ch: make(chan []byte, s.buf), gone: make(chan struct{})}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		http.Error(w, "alert stream closed", http.StatusServiceUnavailable)
		return
	case len(s.clients) >= s.max:
		s.mu.Unlock()
		http.Error(w, "too many alert stream clients", http.StatusServiceUnavailable)
		return
	}
	s.clients[c] = struct{}{}
	s.clientsGauge.Set(float64(len(s.clients)))
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.drop(c)
		s.mu.Unlock()
	}()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	first := []byte(": ferry alert stream\nretry: 3000\n\n")
	if snapshot != nil {
		for _, a := range snapshot() {
			first = append(first, s.event("active", 0, a)...)
		}
	}
	if !s.write(w, rc, first) {
		return
	}
	tick := time.NewTicker(s.heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-c.gone:
			return
		case ev := <-c.ch:
			if !s.write(w, rc, ev) {
				return
			}
			s.sent.Inc()
		case <-tick.C:
			if !s.write(w, rc, []byte(": ping "+s.now().UTC().Format(time.RFC3339)+"\n\n")) {
				return
			}
		}
	}
}

// write writes and flushes b within writeTimeout.
func (s *Stream) write(w http.ResponseWriter, rc *http.ResponseController, b []byte) bool {
	_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := w.Write(b); err != nil {
		s.errs.Inc()
		return false
	}
	if err := rc.Flush(); err != nil {
		s.errs.Inc()
		return false
	}
	return true
}
