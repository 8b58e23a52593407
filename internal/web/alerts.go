package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/ferry-edge/ferry"
)

// maxAckBody bounds an acknowledge request body.
const maxAckBody = 4 << 10

// alertsHandler serves the alert API (mounted on "/api/alerts" and
// "/api/alerts/"):
//
//	GET  /api/alerts            the active alerts, oldest first (JSON array of ferry.AlertJSON)
//	GET  /api/alerts/stream     Server-Sent Events: the active alerts ("active" events), then every transition ("alert")
//	POST /api/alerts/{id}/ack   acknowledge; body (optional) {"by": "name"}; answers the acknowledged alert
//
// Errors are JSON {"error": "..."}: 404 for an unknown or cleared id, 400
// for a bad body, 503 when the stream is unavailable.
func (s *Server) alertsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/alerts", s.listAlerts)
	mux.HandleFunc("GET /api/alerts/stream", s.streamAlerts)
	mux.HandleFunc("POST /api/alerts/{id}/ack", s.ackAlert)
	return mux
}

func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request) {
	active := s.opts.Alerts.Active()
	out := make([]ferry.AlertJSON, len(active))
	for i, a := range active {
		out[i] = ferry.NewAlertJSON(a, s.opts.Gateway)
	}
	writeJSONIndent(w, http.StatusOK, out)
}

func (s *Server) streamAlerts(w http.ResponseWriter, r *http.Request) {
	var st AlertStream
	if s.opts.Stream != nil {
		st = s.opts.Stream()
	}
	if st == nil {
		writeJSONIndent(w, http.StatusServiceUnavailable, errorBody{"alert stream not configured"})
		return
	}
	st.Serve(w, r, s.opts.Alerts.Active)
}

func (s *Server) ackAlert(w http.ResponseWriter, r *http.Request) {
	var body struct {
		By string `json:"by"`
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAckBody))
	if err != nil {
		writeJSONIndent(w, http.StatusBadRequest, errorBody{"request body: " + err.Error()})
		return
	}
	if len(strings.TrimSpace(string(b))) > 0 {
		if err := json.Unmarshal(b, &body); err != nil {
			writeJSONIndent(w, http.StatusBadRequest, errorBody{`body must be JSON like {"by": "name"}: ` + err.Error()})
			return
		}
	}
	if body.By == "" {
		body.By = r.URL.Query().Get("by")
	}
	if len(body.By) > 256 {
		writeJSONIndent(w, http.StatusBadRequest, errorBody{"by is longer than 256 bytes"})
		return
	}
	a, err := s.opts.Alerts.Ack(r.PathValue("id"), body.By)
	switch {
	case errors.Is(err, ferry.ErrAlertNotFound):
		writeJSONIndent(w, http.StatusNotFound, errorBody{err.Error()})
	case err != nil:
		writeJSONIndent(w, http.StatusInternalServerError, errorBody{err.Error()})
	default:
		writeJSONIndent(w, http.StatusOK, ferry.NewAlertJSON(a, s.opts.Gateway))
	}
}

// noAlerts is the Alerts of a server given none.
type noAlerts struct{}

func (noAlerts) Active() []ferry.Alert { return nil }

func (noAlerts) Ack(id, by string) (ferry.Alert, error) {
	return ferry.Alert{}, fmt.Errorf("ack %q: %w", id, ferry.ErrAlertNotFound)
}

// writeJSONIndent writes v indented, as the alert API always has.
func writeJSONIndent(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
