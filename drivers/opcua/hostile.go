package opcua

import (
	"context"
	"fmt"

	"github.com/ferry-edge/ferry"
)

// ErrMalformed is returned when handling a server's message panicked: the
// session is dropped and the device goes Bad, the gateway goes on.
var ErrMalformed = fmt.Errorf("malformed message from server")

// guardedSession runs one session, turning a panic on this device's
// goroutine (a decoded value ferry or gopcua could not handle) into an
// error for this device alone. The session's deferred cleanup has run by
// the time recover returns. Panics in gopcua's own receive goroutine are
// recovered by the patched copy in internal/third_party/gopcua.
func (dv *device) guardedSession(ctx context.Context, emit ferry.EmitFunc) (up bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrMalformed, r)
		}
	}()
	return dv.session(ctx, emit)
}
