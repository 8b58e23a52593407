//go:build !unix

package modbus

import (
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// drain reads and discards what is waiting on c; it returns the bytes
// discarded. Without a non-blocking read it waits a millisecond for data.
func drain(c net.Conn, buf []byte) (int, error) {
	total := 0
	for {
		if err := c.SetReadDeadline(time.Now().Add(time.Millisecond)); err != nil {
			return total, err
		}
		n, err := c.Read(buf)
		total += n
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return total, nil
		case errors.Is(err, io.EOF):
			return total, errPeerClosed
		case err != nil:
			return total, err
		case total > drainLimit:
			return total, errFlood
		}
	}
}
