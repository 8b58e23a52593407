package modbus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/grid-x/modbus"
)

// Limits of a Modbus TCP frame (MBAP header: transaction id, protocol id,
// length, unit id; then the PDU of at most 253 bytes).
const (
	mbapHeader = 7
	maxMBAPLen = 254 // the length field counts the unit id and the PDU
)

// tcpHandler is the library's Modbus TCP packager (transaction ids, MBAP
// encoding) with ferry's own transport in place of the library's. The
// library's transport reads whatever is next on the connection: a frame
// that arrived unasked with the transaction id of the next request (a
// broken gateway, a duplicated answer) is taken for that request's answer,
// and its flush before a request reads with a deadline already passed,
// which never reads anything. The library has no hook for the connection,
// so the link wraps the transport here rather than fork the library.
type tcpHandler struct {
	*modbus.TCPClientHandler // the packager; its transport is unused
	tr                       *tcpTransport
}

func newTCPHandler(addr string, idle, timeout time.Duration, stale func(int)) *tcpHandler {
	return &tcpHandler{
		TCPClientHandler: modbus.NewTCPClientHandler(addr),
		tr:               &tcpTransport{addr: addr, idle: idle, timeout: timeout, stale: stale},
	}
}

func (h *tcpHandler) Send(adu []byte) ([]byte, error) { return h.tr.send(adu) }
func (h *tcpHandler) Connect() error                  { return h.tr.connect() }
func (h *tcpHandler) Close() error                    { return h.tr.close() }

// tcpTransport sends Modbus TCP requests on one connection. It is used by
// the link goroutine only. Before each request it discards the bytes that
// arrived since the last answer (counted through stale); an answer must
// carry the request's transaction id, protocol id 0, the request's unit
// id and its function code (or the exception of it). An answer with an
// earlier transaction id, after the last one answered, is a late answer to
// a request that timed out: it is skipped. Anything else is an error, and
// the link closes the connection to resynchronise.
type tcpTransport struct {
	addr    string
	idle    time.Duration // a connection unused this long is closed
	timeout time.Duration // connect, and each request's answer
	stale   func(int)

	conn    net.Conn
	last    time.Time // when the last request was sent
	fresh   bool      // no request sent on conn yet
	lastOK  uint16    // transaction id of the last answer taken
	scratch [512]byte
}

func (t *tcpTransport) connect() error {
	if t.conn != nil {
		return nil
	}
	c, err := (&net.Dialer{Timeout: t.timeout}).Dial("tcp", t.addr)
	if err != nil {
		return err
	}
	t.conn, t.fresh, t.last = c, true, time.Now()
	return nil
}

func (t *tcpTransport) close() error {
	if t.conn == nil {
		return nil
	}
	err := t.conn.Close()
	t.conn = nil
	return err
}

func (t *tcpTransport) send(req []byte) ([]byte, error) {
	if len(req) < mbapHeader+1 {
		return nil, fmt.Errorf("request of %d bytes is not a Modbus TCP frame", len(req))
	}
	if t.conn != nil && t.idle > 0 && time.Since(t.last) > t.idle {
		_ = t.close() // the device has likely dropped it: start clean
	}
	if err := t.connect(); err != nil {
		return nil, err
	}
	// The previous request's deadline has passed by now whenever the
	// poll interval (or a stall) is longer than the timeout: clear it,
	// or the non-blocking drain fails with "i/o timeout" and takes a
	// healthy link down.
	if err := t.conn.SetReadDeadline(time.Time{}); err != nil {
		return nil, err
	}
	n, err := drain(t.conn, t.scratch[:])
	if n > 0 && t.stale != nil {
		t.stale(n)
	}
	if err != nil {
		return nil, fmt.Errorf("before the request: %w", err)
	}
	tid := binary.BigEndian.Uint16(req)
	if t.fresh {
		t.lastOK, t.fresh = tid-1, false
	}
	t.last = time.Now()
	if err := t.conn.SetDeadline(t.last.Add(t.timeout)); err != nil {
		return nil, err
	}
	if _, err := t.conn.Write(req); err != nil {
		return nil, err
	}
	for {
		resp, err := t.readFrame()
		if err != nil {
			return nil, err
		}
		got := binary.BigEndian.Uint16(resp)
		if got != tid {
			if d := tid - got; d > 0 && d < tid-t.lastOK {
				continue // a late answer to an earlier request
			}
			return nil, fmt.Errorf("response transaction id %d does not match request %d", got, tid)
		}
		if err := checkAnswer(req, resp); err != nil {
			return nil, err
		}
		t.lastOK = tid
		return resp, nil
	}
}

// readFrame reads one MBAP frame.
func (t *tcpTransport) readFrame() ([]byte, error) {
	var h [mbapHeader]byte
	if _, err := io.ReadFull(t.conn, h[:]); err != nil {
		return nil, err
	}
	if p := binary.BigEndian.Uint16(h[2:]); p != 0 {
		return nil, fmt.Errorf("response protocol id %d is not 0 (Modbus)", p)
	}
	n := int(binary.BigEndian.Uint16(h[4:]))
	if n < 2 || n > maxMBAPLen {
		return nil, fmt.Errorf("response length %d is out of range 2..%d", n, maxMBAPLen)
	}
	f := make([]byte, mbapHeader-1+n)
	copy(f, h[:])
	if _, err := io.ReadFull(t.conn, f[mbapHeader:]); err != nil {
		return nil, err
	}
	return f, nil
}

// checkAnswer checks that resp, whose transaction id matches, answers req:
// the same unit id and the request's function code or its exception.
func checkAnswer(req, resp []byte) error {
	if resp[6] != req[6] {
		return fmt.Errorf("response unit id %d does not match request %d", resp[6], req[6])
	}
	if fc := req[7]; resp[7] != fc && resp[7] != fc|0x80 {
		return fmt.Errorf("response has function code 0x%02X, not 0x%02X or its exception", resp[7], fc)
	}
	return nil
}

// errPeerClosed is returned when the peer closed the connection while no
// request was out.
var errPeerClosed = fmt.Errorf("peer closed the connection: %w", io.EOF)

// drainLimit bounds the bytes discarded before one request: a peer that
// streams without end costs a bad frame, not a loop.
const drainLimit = 64 << 10

// errFlood is returned when more than drainLimit bytes were waiting.
var errFlood = errors.New("more than 64 KiB arrived unasked: the peer floods the connection")
