package web

import (
	"context"
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
//	POST /api/alerts/{id}/ack   acknowledge; body (optional) {"by": "name", "comment": "text"}; answers the acknowledged alert
//
// A machine's own alarm (an OPC UA condition, see RemoteAcker) is
// acknowledged on the machine: that needs the operator credential, and a
// failure of the machine answers 502.
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

// RemoteAcker is implemented by an Alerts some of whose alerts are a
// machine's own alarms (OPC UA conditions): acknowledging one calls the
// machine, so it needs the operator credential (http.operator), like a
// command, and the reply is the state the machine reports.
type RemoteAcker interface {
	// Remote reports whether the active alert id is acknowledged on a
	// machine.
	Remote(id string) bool
	// AckRemote acknowledges id on its machine with comment, on behalf
	// of by, and returns the alert as the machine then reports it.
	AckRemote(ctx context.Context, id, by, comment string) (ferry.Alert, error)
}

// isAckPath reports whether path is POST /api/alerts/{id}/ack's: it checks
// its credentials itself (an operator's for a machine alarm).
func isAckPath(path string) bool {
	rest, ok := strings.CutPrefix(path, "/api/alerts/")
	return ok && strings.HasSuffix(rest, "/ack") && strings.Count(rest, "/") == 1
}

// ackAuth checks the credentials of an acknowledge: the operator's for a
// machine alarm (remote), else those of basic auth, when set.
func (s *Server) ackAuth(w http.ResponseWriter, r *http.Request, remote bool) (user string, ok bool) {
	if !remote {
		if s.auth != nil && !s.auth.check(w, r) {
			return "", false
		}
		user, _, _ = r.BasicAuth()
		return user, true
	}
	if s.operator == nil {
		writeJSONIndent(w, http.StatusForbidden, errorBody{"this alert is a machine's alarm: acknowledging it calls the machine and needs an operator credential (http.operator)"})
		return "", false
	}
	user, pass, hasAuth := r.BasicAuth()
	switch {
	case hasAuth && s.operator.verify(r, user, pass):
		return user, true
	case hasAuth && s.auth != nil && s.auth.verify(r, user, pass):
		writeJSONIndent(w, http.StatusForbidden, errorBody{"this credential is read-only: acknowledging a machine's alarm needs the operator credential (http.operator)"})
	default:
		w.Header().Set("WWW-Authenticate", `Basic realm="ferry operator", charset="UTF-8"`)
		writeJSONIndent(w, http.StatusUnauthorized, errorBody{"acknowledging a machine's alarm needs the operator credential (http.operator)"})
	}
	return "", false
}

func (s *Server) ackAlert(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ra, _ := s.opts.Alerts.(RemoteAcker)
	remote := ra != nil && ra.Remote(id)
	user, ok := s.ackAuth(w, r, remote)
	if !ok {
		return
	}
	var body struct {
		By      string `json:"by"`
		Comment string `json:"comment"`
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
	if len(body.Comment) > 1024 {
		writeJSONIndent(w, http.StatusBadRequest, errorBody{"comment is longer than 1024 bytes"})
		return
	}
	var a ferry.Alert
	if remote {
		if body.By == "" {
			body.By = user
		}
		a, err = ra.AckRemote(r.Context(), id, body.By, body.Comment)
	} else {
		a, err = s.opts.Alerts.Ack(id, body.By)
	}
	switch {
	case errors.Is(err, ferry.ErrAlertNotFound):
		writeJSONIndent(w, http.StatusNotFound, errorBody{err.Error()})
	case err != nil && remote:
		writeJSONIndent(w, http.StatusBadGateway, errorBody{err.Error()})
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
