package modbus

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
	ftest "github.com/ferry-edge/ferry/internal/testutil"
)

// fakeTCPPeer is a Modbus TCP peer that answers from a bank but can be told
// to break its frames in ways no real server library would.
type fakeTCPPeer struct {
	b    *bank
	mu   sync.Mutex
	mode string
}

func (p *fakeTCPPeer) setMode(m string) {
	p.mu.Lock()
	p.mode = m
	p.mu.Unlock()
}

// answer builds the response to one 12-byte request (nil: no answer).
func (p *fakeTCPPeer) answer(req []byte) []byte {
	tid, unit, fc := binary.BigEndian.Uint16(req), req[6], req[7]
	addr, qty := binary.BigEndian.Uint16(req[8:]), binary.BigEndian.Uint16(req[10:])
	table := map[byte]string{1: "coil", 2: "discrete", 3: "holding", 4: "input"}[fc]
	pdu := []byte{fc, 0}
	if regs, bits, err := p.b.read(unit, table, addr, qty); err != nil {
		pdu = []byte{fc | 0x80, exceptionCode(err)}
	} else if bits != nil {
		packed := make([]byte, (len(bits)+7)/8)
		for i, v := range bits {
			if v {
				packed[i/8] |= 1 << (i % 8)
			}
		}
		pdu = append(pdu, packed...)
		pdu[1] = byte(len(packed))
	} else {
		for _, v := range regs {
			pdu = binary.BigEndian.AppendUint16(pdu, v)
		}
		pdu[1] = byte(2 * len(regs))
	}
	p.mu.Lock()
	mode := p.mode
	p.mu.Unlock()
	proto := uint16(0)
	switch mode {
	case "silent":
		return nil
	case "wrongtid":
		tid += 7
	case "wrongproto":
		proto = 1
	case "wrongunit":
		unit++
	case "wrongfunc":
		pdu[0] = 0x2B
	case "shortdata":
		pdu = pdu[:len(pdu)-1]
		pdu[1]--
	case "bytecount":
		pdu[1] += 4
	}
	f := binary.BigEndian.AppendUint16(nil, tid)
	f = binary.BigEndian.AppendUint16(f, proto)
	f = binary.BigEndian.AppendUint16(f, uint16(len(pdu)+1))
	f = append(f, unit)
	f = append(f, pdu...)
	switch mode {
	case "len0":
		f[4], f[5] = 0, 0
	case "len300":
		binary.BigEndian.PutUint16(f[4:], 300)
	case "truncated":
		f = f[:len(f)-3]
	case "stale":
		// A whole, valid-looking frame nobody asked for, sent right
		// behind the answer: the transaction id of the next request, the
		// same unit and function, every data byte inverted.
		g := append([]byte(nil), f...)
		binary.BigEndian.PutUint16(g, tid+1)
		for i := 9; i < len(g); i++ {
			g[i] ^= 0xFF
		}
		f = append(f, g...)
	}
	return f
}

// serve answers requests read from c until it fails.
func (p *fakeTCPPeer) serve(c net.Conn) {
	req := make([]byte, 12)
	for {
		if _, err := io.ReadFull(c, req); err != nil {
			return
		}
		if f := p.answer(req); f != nil {
			if _, err := c.Write(f); err != nil {
				return
			}
		}
	}
}

// startFakeTCPPeer serves p on a loopback port; it returns the URL.
func startFakeTCPPeer(t *testing.T, p *fakeTCPPeer) string {
	t.Helper()
	return "tcp://" + ftest.ServeTCP(t, p.serve)
}

// TestGarbageTCPFrames: a peer answering with broken Modbus TCP frames
// (wrong length, transaction id, protocol, unit, function, byte count,
// truncated) yields Bad samples and counters, no panic; the link
// resynchronises when the peer is sane again.
func TestGarbageTCPFrames(t *testing.T) {
	tests := []struct {
		mode   string
		reason string
		result string
	}{
		{"len0", ReasonBadFrame, resultBadFrame},
		{"len300", ReasonBadFrame, resultBadFrame},
		{"wrongtid", ReasonBadFrame, resultBadFrame},
		{"wrongproto", ReasonBadFrame, resultBadFrame},
		{"wrongunit", ReasonBadFrame, resultBadFrame},
		{"wrongfunc", ReasonBadFrame, resultBadFrame},
		{"shortdata", ReasonBadFrame, resultBadFrame},
		{"bytecount", ReasonBadFrame, resultBadFrame},
		{"truncated", ferry.ReasonTimeout, resultTimeout},
		{"silent", ferry.ReasonTimeout, resultTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			b := newBank()
			b.fill(1, 0, 20, func(a int) uint16 { return uint16(a) })
			b.setBits(1, true, 0, true, true, false)
			p := &fakeTCPPeer{b: b}
			url := startFakeTCPPeer(t, p)
			d := dev("plc", url, 1, 20*time.Millisecond, hr("a", 0, "uint16"), hr("b", 4, "float32"), Point{Name: "c", Table: "coil", Address: 1})
			d.Config.Timeout = 150 * time.Millisecond
			m := NewMetrics(prometheus.NewRegistry())
			drv := newDriver(t, Options{Metrics: m}, d)
			col := newCollector()
			stop := run(t, drv, col)
			col.waitFor(t, "plc", "good first", allGood)
			p.setMode(tt.mode)
			col.waitFor(t, "plc", tt.reason, func(s ferry.Scan) bool {
				for _, x := range s.Samples {
					if x.Quality.Reason != tt.reason || !x.Value.IsNone() {
						return false
					}
				}
				return true
			})
			p.setMode("")
			col.waitFor(t, "plc", "good again", allGood)
			stop()
			if v := testutil.ToFloat64(m.requests.WithLabelValues(drv.links[0].name, tt.result)); v < 1 {
				t.Errorf("ferry_modbus_requests_total{result=%q} = %v", tt.result, v)
			}
			if dp := drv.Plan()[0].Devices[0]; len(dp.Bad) != 0 {
				t.Errorf("garbage taught bad ranges: %v", dp.Bad)
			}
		})
	}
}
