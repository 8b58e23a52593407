package modbus

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	mbserver "github.com/simonvetter/modbus"

	"github.com/ferry-edge/ferry"
	ftest "github.com/ferry-edge/ferry/internal/testutil"
)

// crc16 is the Modbus RTU CRC (reflected 0x8005, initial 0xFFFF),
// written independently of the library's.
func crc16(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, x := range b {
		crc ^= uint16(x)
		for i := 0; i < 8; i++ {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

func appendCRC(f []byte) []byte {
	c := crc16(f)
	return append(f, byte(c), byte(c>>8))
}

// rtuResponder is a small Modbus RTU slave over any byte stream (a TCP
// connection for RTU over TCP, a pty for a serial line). It answers read
// requests from a bank, and can be told to answer with broken frames.
type rtuResponder struct {
	b    *bank
	mu   sync.Mutex
	mode string // "", "badcrc", "wrongunit", "truncated", "extra", "silent", "wrongfunc"
}

func (r *rtuResponder) setMode(m string) {
	r.mu.Lock()
	r.mode = m
	r.mu.Unlock()
}

func exceptionCode(err error) byte {
	switch {
	case errors.Is(err, mbserver.ErrIllegalFunction):
		return 1
	case errors.Is(err, mbserver.ErrIllegalDataAddress):
		return 2
	case errors.Is(err, mbserver.ErrIllegalDataValue):
		return 3
	case errors.Is(err, mbserver.ErrServerDeviceBusy):
		return 6
	case errors.Is(err, mbserver.ErrGWTargetFailedToRespond):
		return 0x0B
	}
	return 4
}

// answer builds the response frame to one request frame (nil: no answer).
func (r *rtuResponder) answer(req []byte) []byte {
	if crc16(req[:6]) != binary.LittleEndian.Uint16(req[6:]) {
		return nil // a slave ignores a frame with a bad CRC
	}
	unit, fc := req[0], req[1]
	addr, qty := binary.BigEndian.Uint16(req[2:]), binary.BigEndian.Uint16(req[4:])
	switch fc {
	case 5, 6: // write single coil / register: 8 bytes too; the answer echoes the request
		var err error
		if fc == 5 {
			err = r.b.write(unit, true, addr, nil, []bool{qty == 0xFF00})
		} else {
			err = r.b.write(unit, false, addr, []uint16{qty}, nil)
		}
		if err != nil {
			return appendCRC([]byte{unit, fc | 0x80, exceptionCode(err)})
		}
		return append([]byte(nil), req...)
	}
	table := map[byte]string{1: "coil", 2: "discrete", 3: "holding", 4: "input"}[fc]
	if table == "" {
		return appendCRC([]byte{unit, fc | 0x80, 1})
	}
	regs, bits, err := r.b.read(unit, table, addr, qty)
	if err != nil {
		return appendCRC([]byte{unit, fc | 0x80, exceptionCode(err)})
	}
	resp := []byte{unit, fc, 0}
	if table == "coil" || table == "discrete" {
		packed := make([]byte, (len(bits)+7)/8)
		for i, v := range bits {
			if v {
				packed[i/8] |= 1 << (i % 8)
			}
		}
		resp = append(resp, packed...)
	} else {
		for _, v := range regs {
			resp = binary.BigEndian.AppendUint16(resp, v)
		}
	}
	resp[2] = byte(len(resp) - 3)
	r.mu.Lock()
	mode := r.mode
	r.mu.Unlock()
	switch mode {
	case "silent":
		return nil
	case "badcrc":
		f := appendCRC(resp)
		f[len(f)-1] ^= 0xFF
		return f
	case "wrongunit":
		resp[0]++
	case "wrongfunc":
		resp[1] = 0x11
	case "truncated":
		f := appendCRC(resp)
		return f[:len(f)-3]
	case "extra":
		return append(appendCRC(resp), 0xDE, 0xAD, 0xBE)
	}
	return appendCRC(resp)
}

// serve answers requests read from rw until it fails.
func (r *rtuResponder) serve(rw io.ReadWriter) {
	req := make([]byte, 8) // every read request is 8 bytes, and so are FC05 and FC06
	for {
		if _, err := io.ReadFull(rw, req); err != nil {
			return
		}
		if f := r.answer(req); f != nil {
			if _, err := rw.Write(f); err != nil {
				return
			}
		}
	}
}

// startRTUOverTCP serves r on a loopback port; it returns the URL.
func startRTUOverTCP(t *testing.T, r *rtuResponder) string {
	t.Helper()
	return "rtuovertcp://" + ftest.ServeTCP(t, func(c net.Conn) { r.serve(c) })
}

func rtuBank() *bank {
	b := newBank()
	b.fill(7, 0, 20, func(a int) uint16 { return uint16(100 + a) })
	b.fill(7, 30, 40, func(a int) uint16 { return uint16(100 + a) })
	b.setBits(7, true, 0, true, false, true)
	return b
}

func rtuPoints() []Point {
	return []Point{
		hr("a", 0, "uint16"), hr("b", 10, "uint32"), hr("hole", 25, "uint16"), hr("c", 35, "uint16"),
		{Name: "coil", Table: "coil", Address: 2},
	}
}

func checkRTUScan(t *testing.T, s ferry.Scan) {
	t.Helper()
	for _, x := range s.Samples {
		if x.Point == "hole" {
			if x.Quality.Reason != ferry.ReasonIllegalAddress {
				t.Errorf("hole: %v", x.Quality)
			}
			continue
		}
		if !x.Quality.IsGood() {
			t.Errorf("%s: %v", x.Point, x.Quality)
		}
	}
	if v := sample(t, s, "b").Value.Uint64(); v != 110<<16|111 {
		t.Errorf("b = %d", v)
	}
	if v := sample(t, s, "c").Value.Uint64(); v != 135 {
		t.Errorf("c = %d", v)
	}
	if !sample(t, s, "coil").Value.Bool() {
		t.Error("coil false")
	}
}

// TestRTUOverTCP reads through a serial gateway speaking RTU frames over
// TCP, including an exception (the hole) that splits a merged request.
func TestRTUOverTCP(t *testing.T) {
	r := &rtuResponder{b: rtuBank()}
	url := startRTUOverTCP(t, r)
	d := dev("meter", url, 7, 20*time.Millisecond, rtuPoints()...)
	d.Config.MaxGap = 20
	drv := newDriver(t, Options{}, d)
	col := newCollector()
	stop := run(t, drv, col)
	for i := 0; i < 3; i++ {
		checkRTUScan(t, col.next(t, "meter"))
	}
	stop()
	if n := len(plannedRequests(drv)); n != 3 {
		t.Errorf("steady plan %d requests, want 3 (0..11, 35, coil 2)", n)
	}
}

// TestGarbageRTUFrames: broken RTU frames give Bad samples and counters,
// never a panic, and the link resynchronises when frames are good again.
func TestGarbageRTUFrames(t *testing.T) {
	tests := []struct {
		mode   string
		reason string
		result string
	}{
		{"badcrc", ReasonBadFrame, resultBadFrame},
		{"wrongunit", ReasonBadFrame, resultBadFrame},
		{"wrongfunc", ReasonBadFrame, resultBadFrame},
		{"extra", ReasonBadFrame, resultBadFrame},
		{"truncated", ferry.ReasonTimeout, resultTimeout},
		{"silent", ferry.ReasonTimeout, resultTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			r := &rtuResponder{b: rtuBank()}
			url := startRTUOverTCP(t, r)
			d := dev("meter", url, 7, 20*time.Millisecond, hr("a", 0, "uint16"), hr("b", 10, "uint32"))
			d.Config.Timeout = 150 * time.Millisecond
			m := NewMetrics(prometheus.NewRegistry())
			drv := newDriver(t, Options{Metrics: m}, d)
			col := newCollector()
			stop := run(t, drv, col)
			col.waitFor(t, "meter", "good first", allGood)
			r.setMode(tt.mode)
			col.waitFor(t, "meter", tt.reason, func(s ferry.Scan) bool {
				for _, x := range s.Samples {
					if x.Quality.Status != ferry.Bad || x.Quality.Reason != tt.reason || !x.Value.IsNone() {
						return false
					}
				}
				return true
			})
			r.setMode("")
			col.waitFor(t, "meter", "good again", allGood)
			stop()
			lk := drv.links[0].name
			if v := testutil.ToFloat64(m.requests.WithLabelValues(lk, tt.result)); v < 1 {
				t.Errorf("ferry_modbus_requests_total{result=%q} = %v", tt.result, v)
			}
			if st := drv.DeviceStatus()[0]; st.Errors[tt.reason] < 1 {
				t.Errorf("status errors %v, want %q counted", st.Errors, tt.reason)
			}
		})
	}
}
