//go:build unix

package modbus

import (
	"errors"
	"net"
	"syscall"
)

// drain reads and discards what is waiting on c without blocking; it
// returns the bytes discarded. A connection closed by the peer gives
// errPeerClosed.
func drain(c net.Conn, buf []byte) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	total := 0
	var rerr error
	for {
		var n int
		err := rc.Read(func(fd uintptr) bool {
			// The socket is non-blocking: EAGAIN when nothing waits.
			// Returning true does not wait for readiness.
			n, rerr = syscall.Read(int(fd), buf)
			return true
		})
		switch {
		case err != nil:
			return total, err
		case errors.Is(rerr, syscall.EINTR):
			continue
		case errors.Is(rerr, syscall.EAGAIN):
			return total, nil
		case rerr != nil:
			return total, rerr
		case n == 0:
			return total, errPeerClosed
		}
		total += n
		if total > drainLimit {
			return total, errFlood
		}
	}
}
