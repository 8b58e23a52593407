package web

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"strconv"
)

// MaxProfileSeconds caps ?seconds of the CPU profile and the execution
// trace: an unbounded value would keep a profiler running (and a
// connection open) for as long as the client asks.
const MaxProfileSeconds = 60

// mountPprof mounts Go's profiles under /debug/pprof/.
func (s *Server) mountPprof() {
	s.handle("/debug/pprof/", capSeconds(http.HandlerFunc(pprof.Index)))
	s.handle("/debug/pprof/cmdline", http.HandlerFunc(pprof.Cmdline))
	s.handle("/debug/pprof/profile", capSeconds(http.HandlerFunc(pprof.Profile)))
	s.handle("/debug/pprof/symbol", http.HandlerFunc(pprof.Symbol))
	s.handle("/debug/pprof/trace", capSeconds(http.HandlerFunc(pprof.Trace)))
}

// capSeconds refuses with 400 a ?seconds that is not a number in
// (0, MaxProfileSeconds]. It wraps the CPU profile, the trace and the
// named profiles of pprof.Index (/debug/pprof/heap?seconds=N is a delta
// profile that also waits that long).
func capSeconds(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !checkSeconds(w, r) {
			return
		}
		h.ServeHTTP(w, r)
	})
}

// checkSeconds answers 400 and returns false when r has a ?seconds out of
// range.
func checkSeconds(w http.ResponseWriter, r *http.Request) bool {
	v := r.URL.Query().Get("seconds")
	if v == "" {
		return true
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || !(n > 0 && n <= MaxProfileSeconds) {
		http.Error(w, fmt.Sprintf("seconds=%q: must be a number in (0, %d]", v, MaxProfileSeconds), http.StatusBadRequest)
		return false
	}
	return true
}
