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
// different bits of one register do not overlap.
func checkOverlaps(errs *setting.Errors, points []Point) {
	type extent struct {
		i          int
		t          table
		start, end int // [start, end)
		bit        int // -1: the whole registers
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
		bit := -1
		if p.Bit != nil && !t.bits() {
			bit = int(*p.Bit)
		}
		ext = append(ext, extent{i, t, int(addr), int(addr) + n, bit})
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
			if x.bit >= 0 && y.bit >= 0 && x.bit != y.bit {
				continue // two bits of one register
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
				se.t, spanText(se.start, se.end, se.bit), points[first].Name, fe.t, spanText(fe.start, fe.end, fe.bit), unitWord(se.t))
		}
	}
}

func spanText(start, end, bit int) string {
	s := fmt.Sprint(start)
	if end-start > 1 {
		s = fmt.Sprintf("%d..%d", start, end-1)
	}
	if bit >= 0 {
		s += fmt.Sprintf(" bit %d", bit)
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
