package modbus

import (
	"fmt"
	"sort"

	"github.com/ferry-edge/ferry/internal/setting"
)

// checkOverlaps refuses two points of one device that read the same
// registers (or bits), which is almost always a typo in an address: unless
// one of them is declared a view (`view: true`: a second reading of the same
// registers on purpose, such as a status word and its bits). Bool points on
// different bits of one register, and bit fields (`bits: 4-7`) of one
// register that share no bit, do not overlap.
func checkOverlaps(errs *setting.Errors, points []Point) {
	type extent struct {
		i          int
		t          table
		start, end int    // [start, end)
		lo, hi     int    // bits lo..hi of the register; -1: the whole registers
		wire       uint16 // those bits as they travel (byte swap applied)
	}
	var ext []extent
	for i := range points {
		p := &points[i]
		t, addr, msg := p.location()
		if msg != "" {
			continue // reported by validate
		}
		typ := p.Type
		if typ == "" {
			typ = defaultType(t)
		}
		ti, ok := typeInfo[typ]
		if !ok {
			continue
		}
		if _, ok := p.fieldOf(); p.Bits != "" && !ok {
			continue // reported by validate
		}
		n := ti.regs
		if typ == "string" {
			n = int(p.Length)
		}
		if t.bits() {
			n = 1
		}
		if n < 1 {
			continue
		}
		lo, hi := -1, -1
		if p.Bit != nil && !t.bits() && *p.Bit < 16 {
			lo, hi = int(*p.Bit), int(*p.Bit)
		}
		if b, ok := p.fieldOf(); ok && !t.bits() && n == 1 {
			lo, hi = int(b.lo), int(b.hi)
		}
		var wire uint16
		if lo >= 0 {
			wire = bitRange{uint8(lo), uint8(hi)}.mask()
			if o, err := p.order(); err == nil && o&swapBytes != 0 {
				wire = swap16(wire)
			}
		}
		ext = append(ext, extent{i, t, int(addr), int(addr) + n, lo, hi, wire})
	}
	sort.SliceStable(ext, func(a, b int) bool {
		if ext[a].t != ext[b].t {
			return ext[a].t < ext[b].t
		}
		return ext[a].start < ext[b].start
	})
	for a := range ext {
		for b := a + 1; b < len(ext) && ext[b].t == ext[a].t && ext[b].start < ext[a].end; b++ {
			x, y := ext[a], ext[b]
			if x.lo >= 0 && y.lo >= 0 && x.wire&y.wire == 0 {
				continue // bits of one register that do not meet
			}
			if points[x.i].View || points[y.i].View {
				continue
			}
			first, second := min(x.i, y.i), max(x.i, y.i)
			fe, se := x, y
			if first != x.i {
				fe, se = y, x
			}
			errs.Add(setting.Index("points", second), "%s %s overlaps point %q (%s %s); if that is on purpose (a second view of the same %s), set view: true on one of them",
				se.t, spanText(se.start, se.end, se.lo, se.hi), points[first].Name, fe.t, spanText(fe.start, fe.end, fe.lo, fe.hi), unitWord(se.t))
		}
	}
}

func spanText(start, end, lo, hi int) string {
	s := fmt.Sprint(start)
	if end-start > 1 {
		s = fmt.Sprintf("%d..%d", start, end-1)
	}
	switch {
	case lo < 0:
	case lo == hi:
		s += fmt.Sprintf(" bit %d", lo)
	default:
		s += fmt.Sprintf(" bits %d-%d", lo, hi)
	}
	return s
}

func unitWord(t table) string {
	if t.bits() {
		return "bits"
	}
	return "registers"
}

// unitOwner returns the name of the device of l with unit id u, or "".
func (l *link) unitOwner(u uint8) string {
	for _, d := range l.devs {
		if d.unit == u {
			return d.name
		}
	}
	return ""
}
