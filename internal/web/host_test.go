package web

import (
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ferry-edge/ferry"
)

// countingAlerts records every acknowledge that reaches it.
type countingAlerts struct{ acks atomic.Int32 }

func (a *countingAlerts) Active() []ferry.Alert { return nil }
func (a *countingAlerts) Ack(id, by string) (ferry.Alert, error) {
	a.acks.Add(1)
	return ferry.Alert{}, ferry.ErrAlertNotFound
}

// TestHostAllowList plays a DNS-rebinding page: its requests reach the
// loopback listener with the attacker's name as Host and a matching
// Origin. Every route answers 421 without running its handler; the
// loopback names, any IP address, the listen host and http.allowed_hosts
// are served.
func TestHostAllowList(t *testing.T) {
	alerts := &countingAlerts{}
	cfg := local()
	cfg.Pprof = true
	cfg.AllowedHosts = []string{"Gateway.Plant.Local."}
	s, _ := start(t, cfg, Options{Alerts: alerts, Checks: []Check{{"x", func() error { return nil }}}})
	base := "http://" + s.Addr()
	_, port, _ := strings.Cut(s.Addr(), ":")

	do := func(method, path, host string) int {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(`{"by":"mallory"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		if h, _, ok := strings.Cut(host, ":"); ok || host != "" {
			// What the browser of a rebinding page sends: the page's
			// own origin, which matches the forged Host.
			req.Header.Set("Origin", "http://"+h+":"+port)
			req.Header.Set("Sec-Fetch-Site", "same-origin")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	paths := []struct{ method, path string }{
		{"GET", "/healthz"}, {"GET", "/readyz"}, {"GET", "/metrics"}, {"GET", "/"},
		{"GET", "/api/devices"}, {"GET", "/api/status"}, {"GET", "/api/alerts"},
		{"POST", "/api/alerts/a1/ack"}, {"GET", "/debug/pprof/"}, {"GET", "/debug/pprof/heap"},
		{"GET", "/no/such/route"},
	}
	for _, host := range []string{"evil.example:" + port, "evil.example", "127.0.0.1.evil.example:" + port,
		"localhost.evil.example", "gateway.plant.local.evil.example", "0x7f.1:" + port, "a:b:c", "evil.example.:" + port} {
		for _, p := range paths {
			if code := do(p.method, p.path, host); code != http.StatusMisdirectedRequest {
				t.Errorf("%s %s with Host %q: %d, want 421", p.method, p.path, host, code)
			}
		}
	}
	if n := alerts.acks.Load(); n != 0 {
		t.Fatalf("a forged Host reached the acknowledge handler %d times", n)
	}

	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST.:" + port, "[::1]:" + port,
		"10.1.2.3:" + port, "gateway.plant.local:" + port, "GATEWAY.plant.local", "console.localhost:" + port} {
		if code := do("GET", "/api/status", host); code != http.StatusOK {
			t.Errorf("GET /api/status with Host %q: %d, want 200", host, code)
		}
	}
	if code := do("POST", "/api/alerts/a1/ack", "localhost:"+port); code != http.StatusNotFound || alerts.acks.Load() != 1 {
		t.Errorf("ack from an allowed Host: %d (acks %d), want 404 from the handler", code, alerts.acks.Load())
	}
}

// TestHostAllowListListenName serves the configured listen host by name.
func TestHostAllowListListenName(t *testing.T) {
	a := newHostAllowList("ferry-gw.example:9440", nil)
	for host, want := range map[string]bool{
		"ferry-gw.example:9440": true, "FERRY-GW.example": true, "ferry-gw.example.": true,
		"other.example:9440": false, "": true, "[::1]": true, "[fe80::1%25eth0]:1": false, "ferry-gw.example:": true,
	} {
		if got := a.allowed(host); got != want {
			t.Errorf("allowed(%q) = %v, want %v", host, got, want)
		}
	}
}

// TestPprofOptIn: the profiles are not served unless http.pprof is set,
// and then ?seconds is capped.
func TestPprofOptIn(t *testing.T) {
	off, _ := start(t, local(), Options{})
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1", "/debug/pprof/trace?seconds=1", "/debug/pprof/cmdline"} {
		if code, _, _ := get(t, nil, "http://"+off.Addr()+path); code != http.StatusNotFound {
			t.Errorf("pprof off: GET %s: %d, want 404", path, code)
		}
	}

	cfg := local()
	cfg.Pprof = true
	on, _ := start(t, cfg, Options{})
	base := "http://" + on.Addr()
	for _, path := range []string{"/debug/pprof/profile?seconds=3600", "/debug/pprof/trace?seconds=61", "/debug/pprof/heap?seconds=100000",
		"/debug/pprof/profile?seconds=-1", "/debug/pprof/profile?seconds=NaN", "/debug/pprof/profile?seconds=1e9"} {
		if code, _, body := get(t, nil, base+path); code != http.StatusBadRequest || !strings.Contains(body, "must be a number in (0, 60]") {
			t.Errorf("GET %s: %d %q, want 400", path, code, body)
		}
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/trace?seconds=0.1"} {
		if code, _, _ := get(t, nil, base+path); code != http.StatusOK {
			t.Errorf("GET %s: %d, want 200", path, code)
		}
	}
}

// FuzzHostAllowList: allowed never panics, and what it lets through is an
// address, a configured name or a loopback name.
func FuzzHostAllowList(f *testing.F) {
	for _, s := range []string{"evil.example:80", "127.0.0.1:9440", "[::1]:1", "localhost.", "a:b:c", "[fe80::1%eth0]:1",
		"gateway.plant.local", "x.localhost", "", ":", "[]", "0x7f.1", "LOCALHOST:80", "evil.example.:80"} {
		f.Add(s)
	}
	a := newHostAllowList("127.0.0.1:9440", []string{"gateway.plant.local"})
	f.Fuzz(func(t *testing.T, host string) {
		if !a.allowed(host) || host == "" {
			return
		}
		h := host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			h = hh
		}
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		if net.ParseIP(h) != nil {
			return
		}
		n := strings.ToLower(strings.TrimSuffix(h, "."))
		if n != "localhost" && n != "gateway.plant.local" && !strings.HasSuffix(n, ".localhost") && n != "127.0.0.1" {
			t.Fatalf("allowed Host %q", host)
		}
	})
}
