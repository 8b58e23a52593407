package modbus

import (
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/testpeer"
)

// TestTCPRequestAfterDeadline: a request that comes later than the
// previous request's timeout (a poll interval longer than the timeout, or a
// stall of the gateway) is answered: the drain before it must not trip
// over the previous request's expired deadline.
func TestTCPRequestAfterDeadline(t *testing.T) {
	srv := testpeer.ModbusServer(t, newBank())
	h := newTCPHandler(srv.Addr(), time.Minute, 100*time.Millisecond, nil)
	defer h.Close()
	req := []byte{0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1} // tid 1, unit 1, FC03 holding 0 ×1
	if _, err := h.Send(req); err != nil {
		t.Fatal(err)
	}
	// The gap is what is under test: longer than the 100 ms timeout.
	time.Sleep(250 * time.Millisecond)
	req[1] = 2
	if _, err := h.Send(req); err != nil {
		t.Fatalf("second request %v after the first: %v", 250*time.Millisecond, err)
	}
}
