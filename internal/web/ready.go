package web

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

// CheckResult is one check's outcome as /readyz?format=json shows it.
type CheckResult struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Readiness is the /readyz?format=json body.
type Readiness struct {
	Ready  bool          `json:"ready"`
	Checks []CheckResult `json:"checks"`
}

// ready runs every check.
func (s *Server) ready() Readiness {
	r := Readiness{Ready: true, Checks: make([]CheckResult, 0, len(s.checks))}
	for _, c := range s.checks {
		res := CheckResult{Name: c.Name, OK: true}
		if err := runCheck(c.Err); err != nil {
			res.OK, res.Error = false, err.Error()
			r.Ready = false
		}
		r.Checks = append(r.Checks, res)
	}
	return r
}

func runCheck(check func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("check panicked: %v", p)
		}
	}()
	if check == nil {
		return nil
	}
	return check()
}

// serveReadyz answers 200 when every check passes, else 503 naming each
// failing check and its error. ?format=json gives the Readiness document;
// ?verbose lists passing checks in the text form too.
func (s *Server) serveReadyz(w http.ResponseWriter, r *http.Request) {
	res := s.ready()
	code := http.StatusOK
	if !res.Ready {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Cache-Control", "no-store")
	if r.URL.Query().Get("format") == "json" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(res)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, verbose := r.URL.Query()["verbose"]
	if res.Ready && !verbose {
		fmt.Fprintln(w, "ok")
		return
	}
	failing := 0
	for _, c := range res.Checks {
		if !c.OK {
			failing++
		}
	}
	if res.Ready {
		fmt.Fprintln(w, "ok")
	} else {
		fmt.Fprintf(w, "not ready: %d of %d checks failing\n", failing, len(res.Checks))
	}
	for _, c := range res.Checks {
		switch {
		case !c.OK:
			fmt.Fprintf(w, "[-] %s: %s\n", c.Name, c.Error)
		case verbose:
			fmt.Fprintf(w, "[+] %s: ok\n", c.Name)
		}
	}
}

var readyDesc = prometheus.NewDesc("ferry_ready",
	"1 when the readiness check passes, 0 when it fails (its reason is on /readyz).", []string{"check"}, nil)

// readyCollector exports each readiness check as ferry_ready{check}, run
// at scrape time, so that Prometheus can alert on the part that is down.
type readyCollector struct{ s *Server }

func (r readyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- readyDesc }

func (r readyCollector) Collect(ch chan<- prometheus.Metric) {
	for _, res := range r.s.ready().Checks {
		v := 0.0
		if res.OK {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, v, res.Name)
	}
}
