package testpeer

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// WebhookServer is an HTTP endpoint for ferry's webhook alert sink: it
// answers 204 to every request and keeps each request's Authorization
// header.
type WebhookServer struct {
	URL  string
	mu   sync.Mutex
	auth []string
}

// Webhook starts a webhook receiver on a loopback port (httptest listens
// on port 0 and keeps the listener); it is closed when the test ends.
func Webhook(t testing.TB) *WebhookServer {
	t.Helper()
	w := &WebhookServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		w.auth = append(w.auth, r.Header.Get("Authorization"))
		w.mu.Unlock()
		_, _ = io.Copy(io.Discard, r.Body)
		rw.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	w.URL = srv.URL
	return w
}

// Auth returns the Authorization header of every request so far, in order.
func (w *WebhookServer) Auth() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.auth...)
}
