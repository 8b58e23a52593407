package mqtt

import (
	"bufio"
	"net"
)

// bufferedConn reads the broker's connection through a buffer. paho reads
// each packet straight from the connection: its type byte, then its
// remaining length a byte at a time, then its body, each an io.ReadFull;
// on a bare TCP connection that is four read syscalls for a 1 KiB PUBLISH,
// the largest item of the driver's CPU after the JSON decode in the cost
// bench (issue 20). Through a buffer, one read takes every packet that has
// arrived. Writes and deadlines go to the connection itself; a deadline
// bounds a Read that has to go to the connection, and a Read served from
// the buffer needs none.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

// connReadBuffer is the read buffer of a broker connection: a burst of
// several messages of the cost bench's size in one read.
const connReadBuffer = 32 << 10

func newBufferedConn(c net.Conn) *bufferedConn {
	return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, connReadBuffer)}
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
