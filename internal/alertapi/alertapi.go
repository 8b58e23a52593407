// Package alertapi serves the rule engine's alerts on the local HTTP
// listener:
//
//	GET  /api/alerts            the active alerts, oldest first (JSON array of sinks.AlertJSON)
//	GET  /api/alerts/stream     Server-Sent Events: the active alerts ("active" events), then every transition ("alert")
//	POST /api/alerts/{id}/ack   acknowledge; body (optional) {"by": "name"}; answers the acknowledged alert
//
// Errors are JSON {"error": "..."}: 404 for an unknown or cleared id, 400
// for a bad body, 503 when the stream is unavailable.
//
// The listener is meant for localhost or a plant network; it has no
// authentication of its own. Mount the handler on "/api/alerts" and
// "/api/alerts/".
package alertapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/ferry-edge/ferry/internal/sinks"
	"github.com/ferry-edge/ferry/rules"
)

// maxBody bounds an ack request body.
const maxBody = 4 << 10

// Handler returns the /api/alerts handlers for e. st may be nil: the
// stream then answers 503.
func Handler(e *rules.Engine, st *sinks.Stream) http.Handler {
	h := &handler{e: e, st: st}
	if st != nil {
		h.gateway = st.Gateway()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/alerts", h.list)
	mux.HandleFunc("GET /api/alerts/stream", h.stream)
	mux.HandleFunc("POST /api/alerts/{id}/ack", h.ack)
	return mux
}

type handler struct {
	e       *rules.Engine
	st      *sinks.Stream
	gateway string
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	active := h.e.Active()
	out := make([]sinks.AlertJSON, len(active))
	for i, a := range active {
		out[i] = sinks.NewAlertJSON(a, h.gateway)
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) stream(w http.ResponseWriter, r *http.Request) {
	if h.st == nil {
		writeJSON(w, http.StatusServiceUnavailable, errorBody{"alert stream not configured"})
		return
	}
	h.st.Serve(w, r, h.e.Active)
}

func (h *handler) ack(w http.ResponseWriter, r *http.Request) {
	var body struct {
		By string `json:"by"`
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{"request body: " + err.Error()})
		return
	}
	if len(strings.TrimSpace(string(b))) > 0 {
		if err := json.Unmarshal(b, &body); err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{`body must be JSON like {"by": "name"}: ` + err.Error()})
			return
		}
	}
	if body.By == "" {
		body.By = r.URL.Query().Get("by")
	}
	if len(body.By) > 256 {
		writeJSON(w, http.StatusBadRequest, errorBody{"by is longer than 256 bytes"})
		return
	}
	a, err := h.e.Ack(r.PathValue("id"), body.By)
	switch {
	case errors.Is(err, rules.ErrNotFound):
		writeJSON(w, http.StatusNotFound, errorBody{err.Error()})
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, errorBody{err.Error()})
	default:
		writeJSON(w, http.StatusOK, sinks.NewAlertJSON(a, h.gateway))
	}
}

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
