package web

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry/internal/testpeer"
)

// manualClock is a clock the test moves.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *manualClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestAuthBackoff: after authFreeFailures wrong passwords a client is
// answered 429 with Retry-After, even with the right password, until its
// delay is over; the delay doubles; a good password clears the count;
// the metrics count both; the log says it once.
func TestAuthBackoff(t *testing.T) {
	clock := &manualClock{t: time.Date(2026, 12, 7, 14, 0, 0, 0, time.UTC)}
	reg := prometheus.NewRegistry()
	cfg := local()
	cfg.BasicAuth = &BasicAuth{Username: "prom", PasswordHash: mustHash(t, "right")}
	s, logs := start(t, cfg, Options{Now: clock.Now, Registerer: reg, Gatherer: reg})
	url := "http://" + s.Addr() + "/metrics"
	try := func(pass string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if pass != "" {
			req.SetBasicAuth("prom", pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}

	for i := range authFreeFailures {
		if code, _ := try("guess"); code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d, want 401", i+1, code)
		}
	}
	// Requests without credentials (a browser's first try) are not failures.
	if code, _ := try(""); code != http.StatusUnauthorized {
		t.Fatalf("no credentials: %d", code)
	}
	if code, _ := try("right"); code != http.StatusOK {
		t.Fatalf("right password before the limit: %d", code)
	}
	// The good password cleared the count: five more free failures.
	for range authFreeFailures {
		try("guess")
	}
	if code, _ := try("guess"); code != http.StatusUnauthorized {
		t.Fatalf("the failure that starts the backoff: %d, want 401", code)
	}
	if code, ra := try("right"); code != http.StatusTooManyRequests || ra != "1" {
		t.Fatalf("right password while backing off: %d Retry-After %q, want 429 1", code, ra)
	}
	clock.Add(authBackoffBase)
	if code, _ := try("guess"); code != http.StatusUnauthorized {
		t.Fatalf("after the delay: %d", code)
	}
	if code, ra := try("guess"); code != http.StatusTooManyRequests || ra != "2" {
		t.Fatalf("second backoff: %d Retry-After %q, want 429 2", code, ra)
	}
	clock.Add(2 * authBackoffBase)
	if code, _ := try("right"); code != http.StatusOK {
		t.Fatalf("right password after the delay: %d", code)
	}
	if code, _ := try("guess"); code != http.StatusUnauthorized {
		t.Fatalf("after a success the count starts again: %d", code)
	}

	m := testpeer.Gather(t, reg)
	if got := m.Sum("ferry_http_auth_failures_total"); got != 2*authFreeFailures+3 {
		t.Errorf("ferry_http_auth_failures_total = %v, want %d", got, 2*authFreeFailures+3)
	}
	if got := m.Sum("ferry_http_auth_throttled_total"); got != 2 {
		t.Errorf("ferry_http_auth_throttled_total = %v, want 2", got)
	}
	if n := strings.Count(logs.String(), "level=WARN msg=\"http basic auth: client backing off"); n != 1 {
		t.Errorf("%d backoff warnings, want 1:\n%s", n, logs)
	}
}
