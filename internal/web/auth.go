package web

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// bcryptConcurrency caps the bcrypt comparisons running at once, so that
// a flood of bad passwords costs at most this many cores.
const bcryptConcurrency = 2

// authCacheSize bounds the remembered good credentials.
const authCacheSize = 64

// authenticator checks HTTP basic auth against a bcrypt hash. A bcrypt
// comparison takes tens of milliseconds (more on an ARM gateway), so
// credentials that passed once are remembered, by their SHA-256, and a
// scrape every 15 s costs one hash, not one bcrypt. Failures are never
// remembered: every wrong guess pays the full bcrypt price.
type authenticator struct {
	user []byte
	hash []byte
	sem  chan struct{}
	// limit shuts out clients that keep sending wrong credentials.
	limit *authLimiter

	mu   sync.Mutex
	good map[[sha256.Size]byte]struct{}
}

func newAuthenticator(user, hash string, limit *authLimiter) *authenticator {
	return &authenticator{
		user:  []byte(user),
		hash:  []byte(hash),
		sem:   make(chan struct{}, bcryptConcurrency),
		limit: limit,
		good:  make(map[[sha256.Size]byte]struct{}),
	}
}

// check reports whether r carries good credentials; when not, it has
// written the 401 answer (or 429 to a client backing off after repeated
// wrong credentials, see authLimiter).
func (a *authenticator) check(w http.ResponseWriter, r *http.Request) bool {
	if d := a.limit.wait(r); d > 0 {
		refuseBackoff(w, d)
		return false
	}
	user, pass, ok := r.BasicAuth()
	if ok && a.verify(r, user, pass) {
		a.limit.succeeded(r)
		return true
	}
	if ok && r.Context().Err() == nil {
		a.limit.failed(r)
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="ferry", charset="UTF-8"`)
	http.Error(w, "unauthorized", http.StatusUnauthorized)
	return false
}

func (a *authenticator) verify(r *http.Request, user, pass string) bool {
	h := sha256.New()
	fmt.Fprintf(h, "%d:%s:%s", len(user), user, pass)
	var key [sha256.Size]byte
	h.Sum(key[:0])
	a.mu.Lock()
	_, known := a.good[key]
	a.mu.Unlock()
	if known {
		return true
	}
	select {
	case a.sem <- struct{}{}:
	case <-r.Context().Done():
		return false
	}
	// bcrypt runs whatever the user name, so that the time taken does not
	// tell whether the name exists.
	passOK := bcrypt.CompareHashAndPassword(a.hash, []byte(pass)) == nil
	<-a.sem
	userOK := subtle.ConstantTimeCompare([]byte(user), a.user) == 1
	if !passOK || !userOK {
		return false
	}
	a.mu.Lock()
	if len(a.good) >= authCacheSize {
		clear(a.good)
	}
	a.good[key] = struct{}{}
	a.mu.Unlock()
	return true
}

// HashPassword returns the bcrypt hash of password for
// http.basic_auth.password_hash, at bcrypt's default cost.
func HashPassword(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}
