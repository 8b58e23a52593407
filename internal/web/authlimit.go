package web

import (
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The failed-authentication backoff. A client (an IPv4 address, or an
// IPv6 /64) may send authFreeFailures wrong passwords; each further one
// shuts it out for a delay that doubles from authBackoffBase up to
// authBackoffMax. While shut out, every request it sends, with right
// credentials or not, is answered 429 with Retry-After before bcrypt runs,
// so that guessing costs the guesser time and the gateway nothing. A good
// password after the delay clears the count.
const (
	authFreeFailures = 5
	authBackoffBase  = time.Second
	authBackoffMax   = 5 * time.Minute
	// authForget is how long a client's count is kept after its last
	// failure (once its delay is over).
	authForget = 15 * time.Minute
	// authClients bounds the clients remembered; when full, the one idle
	// longest is forgotten.
	authClients = 4096
)

type authClient struct {
	fails int
	until time.Time // shut out until then
	last  time.Time // last failure
}

// authLimiter counts failed basic-auth attempts per client.
type authLimiter struct {
	now func() time.Time
	log *slog.Logger

	mu      sync.Mutex
	clients map[netip.Prefix]*authClient

	failures  prometheus.Counter // nil without a Registerer
	throttled prometheus.Counter
}

func newAuthLimiter(now func() time.Time, log *slog.Logger, reg prometheus.Registerer) (*authLimiter, error) {
	l := &authLimiter{now: now, log: log, clients: make(map[netip.Prefix]*authClient)}
	if reg != nil {
		l.failures = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_http_auth_failures_total",
			Help: "Requests to the local listener that carried wrong basic-auth credentials.",
		})
		l.throttled = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_http_auth_throttled_total",
			Help: "Requests refused with 429 because their client is backing off after repeated wrong basic-auth credentials.",
		})
		for _, c := range []prometheus.Collector{l.failures, l.throttled} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return l, nil
}

// clientKey is the client of r: its address, or its /64 for IPv6 (one
// host holds a whole /64). ok is false when the address cannot be read.
func clientKey(r *http.Request) (netip.Prefix, bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}, false
	}
	a = a.Unmap().WithZone("")
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p, true
}

// wait returns how long the client of r must still wait; 0 when it may
// try.
func (l *authLimiter) wait(r *http.Request) time.Duration {
	key, ok := clientKey(r)
	if !ok {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.clients[key]
	if c == nil {
		return 0
	}
	d := c.until.Sub(l.now())
	if d <= 0 {
		return 0
	}
	if l.throttled != nil {
		l.throttled.Inc()
	}
	return d
}

// failed counts a wrong password from the client of r.
func (l *authLimiter) failed(r *http.Request) {
	if l.failures != nil {
		l.failures.Inc()
	}
	key, ok := clientKey(r)
	if !ok {
		return
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.clients[key]
	if c == nil {
		if len(l.clients) >= authClients {
			l.evict(now)
		}
		c = &authClient{}
		l.clients[key] = c
	}
	if now.After(c.until) && now.Sub(c.last) > authForget {
		c.fails = 0
	}
	c.fails++
	c.last = now
	if over := c.fails - authFreeFailures; over > 0 {
		d := authBackoffMax
		if over <= 20 {
			d = min(authBackoffBase<<(over-1), authBackoffMax)
		}
		c.until = now.Add(d)
		if over == 1 {
			l.log.Warn("http basic auth: client backing off after repeated wrong credentials", "client", key.String(), "failures", c.fails, "retry_after", d)
		} else {
			l.log.Debug("http basic auth: wrong credentials", "client", key.String(), "failures", c.fails, "retry_after", d)
		}
	}
}

// succeeded clears the count of the client of r.
func (l *authLimiter) succeeded(r *http.Request) {
	key, ok := clientKey(r)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.clients, key)
}

// evict forgets the clients whose count has expired, or else the one
// idle longest. l.mu is held.
func (l *authLimiter) evict(now time.Time) {
	var oldest netip.Prefix
	var oldestAt time.Time
	for k, c := range l.clients {
		if now.After(c.until) && now.Sub(c.last) > authForget {
			delete(l.clients, k)
			continue
		}
		if oldestAt.IsZero() || c.last.Before(oldestAt) {
			oldest, oldestAt = k, c.last
		}
	}
	if len(l.clients) >= authClients {
		delete(l.clients, oldest)
	}
}

// refuseBackoff answers 429 with Retry-After d.
func refuseBackoff(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int((d+time.Second-1)/time.Second)))
	http.Error(w, "too many failed authentication attempts; retry later", http.StatusTooManyRequests)
}
