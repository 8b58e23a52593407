package modbus

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/setting"
)

// FuzzBitField decodes any register through any valid bit field and byte
// order: never a panic, the value fits the field, and encoding it gives
// FC22 masks that, applied to the register, leave the other bits alone
// and decode to the same value.
func FuzzBitField(f *testing.F) {
	f.Add(byte(4), byte(7), byte(0), uint16(0xABCD))
	f.Add(byte(0), byte(14), byte(1), uint16(0xFFFF))
	f.Add(byte(15), byte(15), byte(3), uint16(0x8000))
	f.Add(byte(9), byte(3), byte(2), uint16(0))
	f.Fuzz(func(t *testing.T, lo, hi, order byte, reg uint16) {
		lo, hi = lo%16, hi%16
		if hi < lo || (lo == 0 && hi == 15) {
			return // refused by validate (tested there)
		}
		b := bitRange{lo, hi}
		p := Point{Name: "x", Table: "holding", Bits: b.String(), Order: orderNames[order%4]}
		var errs setting.Errors
		p.validate(&errs, "p", MaxRegistersPerRequest)
		if errs.Len() != 0 {
			t.Fatalf("fuzz built an invalid point %+v: %v", p, errs.Err())
		}
		d := newDecoder(&p, tableHolding)
		wire := []byte{byte(reg >> 8), byte(reg)}
		v, ok := d.decode(wire)
		if !ok || v.Kind() != ferry.KindUint || v.Uint64() > uint64(b.max()) {
			t.Fatalf("bits %s of %04X: %v %v", b, reg, v, ok)
		}
		e, err := d.encode(tableHolding, v, true)
		if err != nil {
			t.Fatalf("bits %s: encode %v: %v", b, v, err)
		}
		r := reg&e.and | e.or&^e.and
		if r != reg {
			t.Fatalf("bits %s: writing back %v changes %04X to %04X", b, v, reg, r)
		}
		// Any other value of the field changes only the field's bits.
		x := (v.Uint64() + 1) & uint64(b.max())
		e, err = d.encode(tableHolding, ferry.UintValue(x), true)
		if err != nil {
			t.Fatalf("bits %s: encode %d: %v", b, x, err)
		}
		r = reg&e.and | e.or&^e.and
		got, _ := d.decode([]byte{byte(r >> 8), byte(r)})
		if r&e.and != reg&e.and || !got.Equal(ferry.UintValue(x)) {
			t.Fatalf("bits %s: %04X ← %d gives %04X, decoded %v", b, reg, x, r, got)
		}
	})
}

// FuzzTCPFrame feeds any bytes to the Modbus TCP transport as a peer's
// answer to a read request: never a panic, and an answer it accepts is
// one frame of the length its header gives, with the request's
// transaction id, unit and function code (or its exception).
func FuzzTCPFrame(f *testing.F) {
	ok := []byte{0, 5, 0, 0, 0, 5, 1, 3, 2, 0x12, 0x34}
	f.Add(ok)
	f.Add(append(append([]byte{}, ok...), 0, 6, 0, 0, 0, 5, 1, 3, 2, 0xED, 0xCB))
	f.Add([]byte{0, 4, 0, 0, 0, 5, 1, 3, 2, 0, 0, 0, 5, 0, 0, 0, 5, 1, 3, 2, 0x12, 0x34}) // a late answer first
	f.Add([]byte{0, 5, 0, 0, 0, 3, 1, 0x83, 2})
	f.Add([]byte{0, 5, 0, 0, 0xFF, 0xFF, 1})
	f.Add([]byte{0, 5, 0, 1, 0, 5, 1, 3, 2, 0x12, 0x34})
	f.Add([]byte{0, 5, 0, 0, 0, 5, 2, 3, 2, 0x12, 0x34})
	f.Add([]byte{0, 5, 0, 0, 0, 5, 1, 4, 2, 0x12, 0x34})
	f.Fuzz(func(t *testing.T, answer []byte) {
		client, server := net.Pipe()
		defer client.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer server.Close()
			req := make([]byte, 12)
			if _, err := io.ReadFull(server, req); err != nil {
				return
			}
			_, _ = server.Write(answer)
		}()
		tr := &tcpTransport{timeout: time.Second, conn: client, fresh: false, lastOK: 3, last: time.Now()}
		req := []byte{0, 5, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1}
		resp, err := tr.send(req)
		client.Close()
		<-done
		if err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(resp[4:]))
		switch {
		case len(resp) != 6+n || len(resp) > 6+maxMBAPLen:
			t.Fatalf("accepted %d bytes with length field %d", len(resp), n)
		case resp[0] != 0 || resp[1] != 5 || resp[2] != 0 || resp[3] != 0:
			t.Fatalf("accepted transaction/protocol % X", resp[:4])
		case resp[6] != 1 || (resp[7] != 3 && resp[7] != 0x83):
			t.Fatalf("accepted unit %d function 0x%02X", resp[6], resp[7])
		}
	})
}
