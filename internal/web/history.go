package web

import (
	"sync"

	"github.com/ferry-edge/ferry"
)

// DefaultHistory is how many alert transitions the console keeps.
const DefaultHistory = 100

// History keeps the last alert transitions (raised, acknowledged,
// cleared) since ferry started, in memory.
type History struct {
	mu   sync.Mutex
	ring []ferry.Alert
	next int
	full bool
}

// NewHistory returns a history of the last n transitions (n <= 0:
// DefaultHistory).
func NewHistory(n int) *History {
	if n <= 0 {
		n = DefaultHistory
	}
	return &History{ring: make([]ferry.Alert, n)}
}

// Add records one transition.
func (h *History) Add(a ferry.Alert) {
	h.mu.Lock()
	h.ring[h.next] = a
	h.next++
	if h.next == len(h.ring) {
		h.next, h.full = 0, true
	}
	h.mu.Unlock()
}

// List returns the transitions, newest first.
func (h *History) List() []ferry.Alert {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.next
	if h.full {
		n = len(h.ring)
	}
	out := make([]ferry.Alert, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, h.ring[(h.next-i+len(h.ring))%len(h.ring)])
	}
	return out
}
