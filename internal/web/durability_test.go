package web

import (
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// The health page shows what Options.Durability returns, and nothing
// without it.
func TestHealthDurability(t *testing.T) {
	loss := &Durability{Enabled: true, WindowSeconds: 300, RetainedRecords: 12, RetainedBytes: 4096, Checks: 7,
		Lost: 3, Resent: 3, LastLoss: t0, LastLossMessage: "upstream lost 3 acknowledged messages (9 records) of stream FERRY; resent 3"}
	var give atomic.Pointer[Durability]
	c := newConsole(t, Catalog{}, Options{Now: (&testClock{t0}).Now, Durability: give.Load})
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()

	var h Health
	getJSON(t, srv.URL+"/api/health", &h)
	if h.Durability != nil {
		t.Fatalf("durability = %+v, want none (nil from Options.Durability)", h.Durability)
	}
	give.Store(loss)
	getJSON(t, srv.URL+"/api/health", &h)
	if d := h.Durability; d == nil || *d != *loss {
		t.Fatalf("durability = %+v, want %+v", d, loss)
	}
	if !h.Durability.LastLoss.Equal(t0) || h.Durability.WindowSeconds != (5*time.Minute).Seconds() {
		t.Errorf("durability times: %+v", h.Durability)
	}
}
