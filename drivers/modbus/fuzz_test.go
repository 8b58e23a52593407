package modbus

import (
	"context"
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/grid-x/modbus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/setting"
)

// encodeRaw lays the low 16×regs bits of u out in registers in order o:
// the inverse of decoder.raw.
func encodeRaw(u uint64, regs int, o byteOrder) []byte {
	words := make([]uint16, regs)
	for i := 0; i < regs; i++ {
		words[i] = uint16(u >> (16 * (regs - 1 - i))) // most significant first
	}
	if o&swapWords != 0 {
		for i, j := 0, regs-1; i < j; i, j = i+1, j-1 {
			words[i], words[j] = words[j], words[i]
		}
	}
	b := make([]byte, 0, 2*regs)
	for _, w := range words {
		if o&swapBytes != 0 {
			w = w<<8 | w>>8
		}
		b = binary.BigEndian.AppendUint16(b, w)
	}
	return b
}

// FuzzDecode decodes arbitrary bytes as every type and order: never a
// panic, short input refused, and a decoded number encodes back to the
// same bytes.
func FuzzDecode(f *testing.F) {
	f.Add(byte(7), byte(0), byte(0), []byte{0x41, 0x20, 0x00, 0x00})
	f.Add(byte(8), byte(3), byte(0), []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x7f})
	f.Add(byte(9), byte(1), byte(5), []byte("EP SR-S4"))
	f.Add(byte(0), byte(0), byte(0x83), []byte{0x00, 0x08})
	f.Add(byte(1), byte(2), byte(0x40), []byte{0xff, 0x9c})
	f.Add(byte(5), byte(2), byte(0), []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, typ, order, extra byte, data []byte) {
		tn := typeNames[int(typ)%len(typeNames)]
		p := Point{Name: "x", Table: "holding", Type: tn, Order: orderNames[order%4]}
		switch {
		case tn == "string":
			p.Length = uint16(extra%20) + 1
		case tn == "bool" && extra&0x80 != 0:
			b := extra & 15
			p.Bit = &b
		case tn != "bool" && extra&0x40 != 0:
			p.Scale, p.Offset = 0.5, -3
		}
		var errs setting.Errors
		p.validate(&errs, "p", 125)
		if errs.Len() != 0 {
			t.Fatalf("fuzz built an invalid point %+v: %v", p, errs.Err())
		}
		d := newDecoder(&p, tableHolding)
		v, ok := d.decode(data)
		if len(data) < 2*d.regs {
			if ok {
				t.Fatalf("%s decoded %v from %d bytes", tn, v, len(data))
			}
			return
		}
		if _, bok := decodeBit(data, int(extra)); bok != (int(extra)/8 < len(data)) {
			t.Fatalf("decodeBit(%d bytes, %d) = %v", len(data), extra, bok)
		}
		if !ok {
			if d.kind != kindFloat32 && d.kind != kindFloat64 && !d.scaled {
				t.Fatalf("%s refused %x", tn, data)
			}
			return
		}
		if v.IsNone() {
			t.Fatal("ok with no value")
		}
		if !finite(v) {
			// Kept as it is; the device marks it Bad (reasonOutOfRange).
			if d.kind != kindFloat32 && d.kind != kindFloat64 && !d.scaled {
				t.Fatalf("%s decoded to %v", tn, v)
			}
			return
		}
		want := data[:2*d.regs]
		var raw uint64
		switch {
		case d.scaled || tn == "bool" || tn == "string":
			return
		case v.Kind() == ferry.KindInt:
			raw = uint64(v.Int64())
		case v.Kind() == ferry.KindUint:
			raw = v.Uint64()
		case d.kind == kindFloat32:
			raw = uint64(math.Float32bits(float32(v.Float64())))
		case d.kind == kindFloat64:
			raw = math.Float64bits(v.Float64())
		}
		if got := encodeRaw(raw, d.regs, d.order); string(got) != string(want) {
			t.Fatalf("%s %s: %x decoded to %v, which encodes to %x", tn, d.order, want, v, got)
		}
	})
}

// fuzzHandler feeds a fuzzed frame to the library's real packager, as the
// library's transporter would deliver it.
type fuzzHandler struct {
	modbus.Packager
	rtu   bool
	flags byte
	pdu   []byte
}

func (h *fuzzHandler) Connect() error { return nil }
func (h *fuzzHandler) Close() error   { return nil }

func (h *fuzzHandler) Send(req []byte) ([]byte, error) {
	if h.rtu {
		f := append([]byte{req[0]}, h.pdu...)
		if h.flags&1 != 0 {
			f[0]++
		}
		f = appendCRC(f)
		if h.flags&2 != 0 {
			f[len(f)-1] ^= 0x55
		}
		for len(f) < 4 { // the transporter reads at least 4 bytes
			f = append(f, 0)
		}
		return f, nil
	}
	pdu := h.pdu
	if len(pdu) > 253 {
		pdu = pdu[:253] // the transporter reads at most 260 bytes
	}
	f := append([]byte(nil), req[:7]...)
	if h.flags&1 != 0 {
		f[1]++ // transaction id
	}
	if h.flags&2 != 0 {
		f[6]++ // unit
	}
	binary.BigEndian.PutUint16(f[4:], uint16(len(pdu)+1))
	return append(f, pdu...), nil
}

// FuzzResponse runs whole polls whose every answer is a fuzzed frame,
// through the library's packager and client and the driver's checks,
// splits and decoders: never a panic, every point gets a quality.
func FuzzResponse(f *testing.F) {
	regs := func(n int) []byte {
		b := []byte{3, byte(2 * n)}
		for i := 0; i < n; i++ {
			b = append(b, 0x41, byte(i))
		}
		return b
	}
	f.Add(false, byte(0), regs(14))
	f.Add(true, byte(0), regs(14))
	f.Add(false, byte(0), []byte{0x83, 2})
	f.Add(true, byte(0), []byte{0x83, 3})
	f.Add(false, byte(0), []byte{1, 1, 5})
	f.Add(false, byte(1), regs(14))
	f.Add(true, byte(2), regs(14))
	f.Add(false, byte(0), []byte{0x2B, 2, 0, 0})
	f.Add(false, byte(0), []byte{3, 28})
	f.Add(true, byte(0), []byte{})
	points := []Point{
		hr("f", 0, "float32"), hr("u", 2, "uint16"), hr("s", 3, "string"), hr("i", 11, "int32"),
		{Name: "b", Table: "holding", Address: 13, Type: "bool", Bit: new(uint8)},
		{Name: "c", Table: "coil", Address: 3},
	}
	points[2].Length = 8
	f.Fuzz(func(t *testing.T, rtu bool, flags byte, pdu []byte) {
		url := "tcp://plc:502"
		var pk modbus.Packager = modbus.NewTCPClientHandler("plc:502")
		if rtu {
			url = "rtuovertcp://plc:4001"
			pk = modbus.NewRTUOverTCPClientHandler("plc:4001")
		}
		d := dev("plc", url, 1, time.Second, points...)
		d.Config.MaxGap = 0
		drv, err := New([]Device{d}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		l := drv.links[0]
		h := &fuzzHandler{Packager: pk, rtu: rtu, flags: flags, pdu: pdu}
		l.h, l.client, l.setTimeout = h, modbus.NewClient(h), func(time.Duration) {}
		dv := l.devs[0]
		var scans []ferry.Scan
		dv.begin(time.Now())
		for i := 0; dv.poll != nil; i++ {
			if i > 100 {
				t.Fatal("poll does not end")
			}
			l.step(context.Background(), dv, func(s ferry.Scan) { scans = append(scans, s) })
		}
		if len(scans) != 1 || len(scans[0].Samples) != len(points) {
			t.Fatalf("scans %+v", scans)
		}
		for _, s := range scans[0].Samples {
			// A float register holding NaN or an infinity is Bad "out of
			// range" with the raw value kept (issue 21 item 8; seed
			// f8ebe74fa6e7ec25, found by this fuzzer): the one Bad
			// sample with a value.
			raw := s.Quality.Reason == reasonOutOfRange && !s.Value.IsNone()
			if s.Quality.IsGood() == s.Value.IsNone() && !raw {
				t.Fatalf("%s: quality %v with value %v", s.Point, s.Quality, s.Value)
			}
			if !s.Quality.IsGood() && s.Quality.Reason == "" {
				t.Fatalf("%s: bad without a reason", s.Point)
			}
		}
	})
}
