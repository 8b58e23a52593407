package web

import (
	"errors"
	"io"
	"net/http"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-edge/ferry/internal/setting"
)

// commandsPath is the command endpoint (issue 19, docs/commands.md):
//
//	POST /api/commands   body: a command request {id, device, point, value, deadline}
//	                     answers 200 with the reply {id, status, reason, read_back, at}
//
// It requires the operator credential (http.operator), not the read-only
// one of http.basic_auth: 401 without a credential or with a wrong one,
// 403 with the read-only credential or when no operator is configured.
// Like acknowledge, it is refused to cross-origin browser requests
// (CSRF). Every reply, refusals included, is 200 with the reply's status:
// the reply is the command's answer, stored under its id.
const commandsPath = "/api/commands"

// maxCommandBody bounds a command request body.
const maxCommandBody = 16 << 10

func (s *Server) serveCommand(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSONIndent(w, http.StatusMethodNotAllowed, errorBody{"use POST"})
		return
	}
	if s.operator == nil {
		writeJSONIndent(w, http.StatusForbidden, errorBody{"commands over HTTP need an operator credential (http.operator)"})
		return
	}
	user, pass, ok := r.BasicAuth()
	switch {
	case ok && s.operator.verify(r, user, pass):
	case ok && s.auth != nil && s.auth.verify(r, user, pass):
		writeJSONIndent(w, http.StatusForbidden, errorBody{"this credential is read-only: commands need the operator credential (http.operator)"})
		return
	default:
		w.Header().Set("WWW-Authenticate", `Basic realm="ferry operator", charset="UTF-8"`)
		writeJSONIndent(w, http.StatusUnauthorized, errorBody{"commands need the operator credential (http.operator)"})
		return
	}
	if s.opts.Command == nil {
		writeJSONIndent(w, http.StatusServiceUnavailable, errorBody{"this server takes no commands"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxCommandBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeJSONIndent(w, http.StatusRequestEntityTooLarge, errorBody{"request body is over 16 KiB"})
			return
		}
		writeJSONIndent(w, http.StatusBadRequest, errorBody{"request body: " + err.Error()})
		return
	}
	writeJSONIndent(w, http.StatusOK, s.opts.Command(r.Context(), body, user))
}

// validateOperator checks http.operator; paths are relative to it.
func (c *Config) validateOperator() error {
	a := c.Operator
	if a == nil {
		return nil
	}
	var errs setting.Errors
	switch {
	case a.Username == "":
		errs.Add("username", "is required when operator is set")
	case strings.ContainsAny(a.Username, ":\r\n"):
		errs.Add("username", "%q may not contain ':' or line breaks", a.Username)
	case c.BasicAuth != nil && c.BasicAuth.Username == a.Username:
		errs.Add("username", "%q is also basic_auth's user: the operator must be a distinct credential", a.Username)
	}
	if a.PasswordHash == "" {
		errs.Add("password_hash", "is required when operator is set (a bcrypt hash, e.g. from htpasswd -nBC 12 %s)", a.Username)
	} else if _, err := bcrypt.Cost([]byte(a.PasswordHash.Reveal())); err != nil {
		errs.Add("password_hash", "is not a bcrypt hash ($2a$, $2b$ or $2y$…): %v", err)
	}
	return errs.Err()
}
