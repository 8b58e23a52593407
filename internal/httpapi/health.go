package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// checks holds the readiness checks in the order they were added.
type checks struct {
	mu   sync.Mutex
	list []namedCheck
}

type namedCheck struct {
	name  string
	check func() error
}

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

func (c *checks) add(name string, check func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.list {
		if c.list[i].name == name {
			c.list[i].check = check
			return
		}
	}
	c.list = append(c.list, namedCheck{name, check})
}

func (c *checks) remove(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.list {
		if c.list[i].name == name {
			c.list = append(c.list[:i], c.list[i+1:]...)
			return
		}
	}
}

// run runs every check, outside the lock.
func (c *checks) run() Readiness {
	c.mu.Lock()
	list := append([]namedCheck(nil), c.list...)
	c.mu.Unlock()
	r := Readiness{Ready: true, Checks: make([]CheckResult, 0, len(list))}
	for _, nc := range list {
		res := CheckResult{Name: nc.name, OK: true}
		if err := runCheck(nc.check); err != nil {
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
	res := s.checks.run()
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
type readyCollector struct{ c *checks }

func (r readyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- readyDesc }

func (r readyCollector) Collect(ch chan<- prometheus.Metric) {
	for _, res := range r.c.run().Checks {
		v := 0.0
		if res.OK {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, v, res.Name)
	}
}
