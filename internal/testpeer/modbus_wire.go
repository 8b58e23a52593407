package testpeer

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ferry-edge/ferry/internal/testutil"
)

// ModbusCounter is a Modbus TCP proxy that counts the function codes of
// the requests passing through it, read from the frames on the wire: the
// simonvetter server hands a single-register write (FC06) and a
// one-register multiple write (FC16) to its handler alike, and so for
// coils (FC05, FC15). Point a client at Addr; the proxy forwards to the
// server. It stops when the test ends.
type ModbusCounter struct {
	// Mute drops the server's answers (requests still reach it): a device
	// that takes a request and never answers.
	Mute atomic.Bool

	addr   string
	mu     sync.Mutex
	counts map[byte]int
	log    []ModbusRequest
	logOn  bool
}

// ModbusRequest is one request seen on the wire: its function code and,
// for the reads and writes that have them, the first address and the
// count (1 for FC05, FC06 and FC22).
type ModbusRequest struct {
	Unit     uint8
	Function byte
	Addr     uint16
	Count    uint16
}

// NewModbusCounter starts a counting proxy in front of target
// ("host:port").
func NewModbusCounter(t testing.TB, target string) *ModbusCounter {
	t.Helper()
	c := &ModbusCounter{counts: map[byte]int{}}
	c.addr = testutil.ServeTCP(t, func(conn net.Conn) {
		srv, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for {
				n, err := srv.Read(buf)
				if n > 0 && !c.Mute.Load() {
					if _, werr := conn.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			conn.Close()
		}()
		for {
			frame, err := readMBAP(conn)
			if err != nil {
				break
			}
			if len(frame) > 7 {
				c.mu.Lock()
				c.counts[frame[7]]++
				if c.logOn {
					c.log = append(c.log, parseRequest(frame))
				}
				c.mu.Unlock()
			}
			if _, err := srv.Write(frame); err != nil {
				break
			}
		}
		srv.Close()
		wg.Wait()
	})
	return c
}

// Addr is the "host:port" clients connect to.
func (c *ModbusCounter) Addr() string { return c.addr }

// URL is "tcp://" + Addr.
func (c *ModbusCounter) URL() string { return "tcp://" + c.addr }

// Count returns how many requests with function code fc passed so far.
func (c *ModbusCounter) Count(fc byte) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[fc]
}

// Counts returns the requests seen so far by function code.
func (c *ModbusCounter) Counts() map[byte]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[byte]int, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

// Record starts (or stops) keeping every request in order, for Log.
func (c *ModbusCounter) Record(on bool) {
	c.mu.Lock()
	c.logOn = on
	c.mu.Unlock()
}

// Log returns the requests recorded so far, in the order they passed.
func (c *ModbusCounter) Log() []ModbusRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]ModbusRequest(nil), c.log...)
}

// parseRequest reads the function, address and count of an MBAP frame.
func parseRequest(f []byte) ModbusRequest {
	r := ModbusRequest{Unit: f[6], Function: f[7]}
	pdu := f[8:]
	if len(pdu) >= 2 {
		r.Addr = binary.BigEndian.Uint16(pdu)
	}
	switch r.Function {
	case 0x05, 0x06, 0x16:
		r.Count = 1
	default:
		if len(pdu) >= 4 {
			r.Count = binary.BigEndian.Uint16(pdu[2:])
		}
	}
	return r
}

// Writes returns how many write requests (FC05, FC06, FC15, FC16, FC22,
// FC23) passed so far.
func (c *ModbusCounter) Writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[0x05] + c.counts[0x06] + c.counts[0x0F] + c.counts[0x10] + c.counts[0x16] + c.counts[0x17]
}

// readMBAP reads one Modbus TCP frame: the 7-byte MBAP header (its length
// field counts the unit id and the PDU) and the PDU.
func readMBAP(r io.Reader) ([]byte, error) {
	h := make([]byte, 7, 260)
	if _, err := io.ReadFull(r, h); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(h[4:6]))
	if n < 1 || n > 254 {
		return nil, io.ErrUnexpectedEOF
	}
	f := append(h, make([]byte, n-1)...)
	if _, err := io.ReadFull(r, f[7:]); err != nil {
		return nil, err
	}
	return f, nil
}

// MaskWriteServer is a minimal Modbus TCP server of 65536 holding
// registers that speaks FC22 (mask write register), which the simonvetter
// server does not (it answers illegal function): FC03, FC06, FC16 and
// FC22; any other function is answered with exception 01. Every unit id
// shares the registers. It counts requests by function code and stops
// when the test ends.
type MaskWriteServer struct {
	addr   string
	mu     sync.Mutex
	regs   [65536]uint16
	counts map[byte]int
}

// NewMaskWriteServer starts the server on loopback.
func NewMaskWriteServer(t testing.TB) *MaskWriteServer {
	t.Helper()
	s := &MaskWriteServer{counts: map[byte]int{}}
	s.addr = testutil.ServeTCP(t, func(conn net.Conn) {
		for {
			f, err := readMBAP(conn)
			if err != nil || len(f) < 8 {
				return
			}
			pdu := s.serve(f[7:])
			out := make([]byte, 7, 7+len(pdu))
			copy(out, f[:4])
			binary.BigEndian.PutUint16(out[4:], uint16(1+len(pdu)))
			out[6] = f[6]
			if _, err := conn.Write(append(out, pdu...)); err != nil {
				return
			}
		}
	})
	return s
}

// Addr is the server's "host:port".
func (s *MaskWriteServer) Addr() string { return s.addr }

// URL is "tcp://" + Addr.
func (s *MaskWriteServer) URL() string { return "tcp://" + s.addr }

// Set stores holding register a.
func (s *MaskWriteServer) Set(a uint16, v uint16) {
	s.mu.Lock()
	s.regs[a] = v
	s.mu.Unlock()
}

// Get returns holding register a.
func (s *MaskWriteServer) Get(a uint16) uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.regs[a]
}

// Count returns how many requests with function code fc were served.
func (s *MaskWriteServer) Count(fc byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[fc]
}

// serve answers one request PDU.
func (s *MaskWriteServer) serve(req []byte) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	fc := req[0]
	s.counts[fc]++
	ex := func(code byte) []byte { return []byte{fc | 0x80, code} }
	u16 := func(i int) (uint16, bool) {
		if len(req) < i+2 {
			return 0, false
		}
		return binary.BigEndian.Uint16(req[i:]), true
	}
	addr, ok := u16(1)
	if !ok {
		return ex(0x03)
	}
	switch fc {
	case 0x03:
		n, ok := u16(3)
		if !ok || n < 1 || n > 125 || int(addr)+int(n) > 65536 {
			return ex(0x03)
		}
		out := []byte{fc, byte(2 * n)}
		for i := 0; i < int(n); i++ {
			out = binary.BigEndian.AppendUint16(out, s.regs[int(addr)+i])
		}
		return out
	case 0x06:
		v, ok := u16(3)
		if !ok {
			return ex(0x03)
		}
		s.regs[addr] = v
		return append([]byte(nil), req[:5]...)
	case 0x10:
		n, ok := u16(3)
		if !ok || n < 1 || n > 123 || len(req) < 6+2*int(n) || int(addr)+int(n) > 65536 {
			return ex(0x03)
		}
		for i := 0; i < int(n); i++ {
			s.regs[int(addr)+i] = binary.BigEndian.Uint16(req[6+2*i:])
		}
		return append([]byte(nil), req[:5]...)
	case 0x16:
		and, ok1 := u16(3)
		or, ok2 := u16(5)
		if !ok1 || !ok2 {
			return ex(0x03)
		}
		// The specification's result: (current AND and) OR (or AND NOT and).
		s.regs[addr] = s.regs[addr]&and | or&^and
		return append([]byte(nil), req[:7]...)
	}
	return ex(0x01)
}
