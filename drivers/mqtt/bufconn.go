package mqtt

import (
	"bufio"
	"net"
	"runtime"
	"sync"
	"time"
)

// bufferedConn reads the broker's connection through a buffer and
// coalesces what paho writes.
//
// Reads: paho reads each packet straight from the connection: its type
// byte, then its remaining length a byte at a time, then its body, each an
// io.ReadFull; on a bare TCP connection that is four read syscalls for a
// 1 KiB PUBLISH, the largest item of the driver's CPU after the JSON
// decode in the cost bench (issue 20). Through a buffer, one read takes
// every packet that has arrived. Deadlines go to the connection itself; a
// deadline bounds a Read that has to go to the connection, and a Read
// served from the buffer needs none.
//
// Writes: paho writes every packet with a write of its own, and the
// PUBACKs of a group commit come as a burst (16 at the default
// commit_max_waiting): a tenth of ferry's CPU at 200 msg/s was those
// writes. Write appends to a buffer and returns; a flusher goroutine
// sends what has gathered by the time it runs, in order, so a burst
// leaves in one or two writes. A write error is returned by the next
// Write and closes the connection, which paho's reader sees at once (a
// lost connection, reconnected as any other). More than connWriteBuffer
// waiting is written by the caller itself, after what is in flight: the
// buffer stays bounded and a broker that stops reading blocks paho as a
// bare connection would. Close sends what is left first (DISCONNECT).
type bufferedConn struct {
	net.Conn
	r *bufio.Reader

	send sync.Mutex // held while bytes go to the connection: keeps them in order

	mu      sync.Mutex
	pending []byte // written by paho, not yet sent
	spare   []byte // the flusher's other buffer
	err     error  // the first failed write
	kicked  bool   // the flusher has been told about pending
	closed  bool

	kick chan struct{}
	done chan struct{}
}

// connReadBuffer is the read buffer of a broker connection: a burst of
// several messages of the cost bench's size in one read.
const connReadBuffer = 32 << 10

// connWriteBuffer bounds the bytes waiting for the flusher; beyond it a
// Write sends them itself.
const connWriteBuffer = 64 << 10

// closeFlushTimeout bounds Close's last write.
const closeFlushTimeout = time.Second

func newBufferedConn(c net.Conn) *bufferedConn {
	bc := &bufferedConn{
		Conn: c,
		r:    bufio.NewReaderSize(c, connReadBuffer),
		kick: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	go bc.flusher()
	return bc
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *bufferedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.err != nil || c.closed {
		err := c.err
		c.mu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return 0, err
	}
	c.pending = append(c.pending, p...)
	if len(c.pending) >= connWriteBuffer {
		c.mu.Unlock()
		if err := c.flush(); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	kick := !c.kicked
	c.kicked = true
	c.mu.Unlock()
	if kick {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// flusher sends what gathered, each time it is told there is some.
func (c *bufferedConn) flusher() {
	for {
		select {
		case <-c.kick:
		case <-c.done:
			return
		}
		// Let the goroutine that kicked finish its burst first.
		runtime.Gosched()
		_ = c.flush()
	}
}

// flush sends everything pending, after what is already being sent.
func (c *bufferedConn) flush() error {
	c.send.Lock()
	defer c.send.Unlock()
	c.mu.Lock()
	buf := c.pending
	c.pending = c.spare[:0]
	c.spare = nil
	c.kicked = false
	err := c.err
	c.mu.Unlock()
	if err == nil && len(buf) > 0 {
		_, err = c.Conn.Write(buf)
	}
	c.mu.Lock()
	if c.spare == nil && cap(buf) <= connWriteBuffer {
		c.spare = buf[:0]
	}
	if err != nil && c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	if err != nil {
		_ = c.Conn.Close() // paho's reader sees the connection lost
	}
	return err
}

// Close sends what paho wrote last (its DISCONNECT), within
// closeFlushTimeout, then closes the connection and stops the flusher.
func (c *bufferedConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.Conn.Close()
	}
	c.closed = true
	c.mu.Unlock()
	close(c.done)
	_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
	_ = c.flush()
	return c.Conn.Close()
}
