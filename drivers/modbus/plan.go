package modbus

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// pointDef is a validated point, ready to read.
type pointDef struct {
	name  string
	table table
	addr  int // first register or bit
	n     int // registers or bits spanned
	dec   *decoder
}

// span is the address range [start, end) of a table.
type span struct{ start, end int }

func (s span) count() int { return s.end - s.start }

func (s span) overlaps(o span) bool { return s.start < o.end && o.start < s.end }

func (s span) String() string {
	if s.count() == 1 {
		return fmt.Sprint(s.start)
	}
	return fmt.Sprintf("%d..%d", s.start, s.end-1)
}

// atom is a cluster of points whose address ranges overlap: they are read
// together, and are isolated together when a device refuses them.
type atom struct {
	span
	points []int // indices into the device's points
}

// request is one planned read.
type request struct {
	table table
	span
	atoms []*atom
}

func (r *request) numPoints() int {
	n := 0
	for _, a := range r.atoms {
		n += len(a.points)
	}
	return n
}

// badRange is what fault isolation learned: a range of a table the device
// refuses. A point range makes its points Bad without asking again; a gap
// range is never bridged to merge requests.
type badRange struct {
	table table
	span
	gap    bool
	reason string // why the points are Bad (points ranges)
}

// knowledge is what a device taught the planner.
type knowledge struct {
	bad   []badRange
	limit [numTables]int // learned largest request that works; 0: none
}

func (k *knowledge) empty() bool {
	return len(k.bad) == 0 && k.limit == [numTables]int{}
}

func (k *knowledge) add(b badRange) bool {
	for _, x := range k.bad {
		if x.table == b.table && x.span == b.span && x.gap == b.gap {
			return false
		}
	}
	k.bad = append(k.bad, b)
	return true
}

// badPoint is a point not requested because it lies in a bad range.
type badPoint struct {
	idx    int
	reason string
}

// limits are a device's request limits and gap bridging from its config.
type limits struct {
	maxRegs, maxBits int
	maxGap           int // registers; bit tables bridge 16×
}

func (l limits) max(t table, k *knowledge) int {
	m := l.maxRegs
	if t.bits() {
		m = l.maxBits
	}
	if k != nil && k.limit[t] > 0 && k.limit[t] < m {
		m = k.limit[t]
	}
	return m
}

func (l limits) gap(t table) int {
	if t.bits() {
		return 16 * l.maxGap
	}
	return l.maxGap
}

// planRequests groups points into the fewest requests: per table, points
// sorted by address are merged while a request stays within the size
// limit and the gap between neighbours is at most max_gap, never bridging
// or including a range in k. Points inside a bad point range are returned
// as bad instead of being requested.
func planRequests(points []pointDef, lim limits, k *knowledge) ([]*request, []badPoint) {
	var reqs []*request
	var bad []badPoint
	// A plan lives as long as its device (until the next replan): its
	// atoms are one slice per table, their points sub-slices of one index
	// slice and each request's atoms a sub-slice of one slice of pointers,
	// instead of an allocation per atom and per request (issue 20: about
	// 150 bytes a point before, 56 now).
	var count [numTables]int
	for i := range points {
		count[points[i].table]++
	}
	for t := table(0); t < numTables; t++ {
		if count[t] == 0 {
			continue
		}
		idx := make([]int, 0, count[t])
		for i := range points {
			if points[i].table == t {
				idx = append(idx, i)
			}
		}
		slices.SortStableFunc(idx, func(a, b int) int {
			if c := points[a].addr - points[b].addr; c != 0 {
				return c
			}
			return points[a].n - points[b].n
		})
		maxN := lim.max(t, k)
		var atoms []atom
		for j, i := range idx {
			p := &points[i]
			end := p.addr + p.n
			if n := len(atoms); n > 0 {
				cur := &atoms[n-1]
				if p.addr < cur.end && max(cur.end, end)-cur.start <= maxN {
					cur.end = max(cur.end, end)
					cur.points = cur.points[:len(cur.points)+1] // idx[j]: the atom's points are consecutive in idx
					continue
				}
			}
			atoms = append(atoms, atom{span: span{p.addr, end}, points: idx[j : j+1]})
		}
		// The atoms' points were grown within idx: give each its full length
		// again as a capped slice, so that no append runs into a neighbour.
		for i := range atoms {
			atoms[i].points = slices.Clip(atoms[i].points)
		}
		good := make([]*atom, 0, len(atoms))
		var r *request
		first := 0 // of r's atoms in good
		for i := range atoms {
			a := &atoms[i]
			if b, ok := k.badFor(t, a.span); ok {
				for _, i := range a.points {
					bad = append(bad, badPoint{i, b.reason})
				}
				continue
			}
			if r != nil && max(r.end, a.end)-r.start <= maxN && a.start-r.end <= lim.gap(t) &&
				!k.blocks(t, span{min(r.end, a.start), max(r.end, a.start)}) {
				r.end = max(r.end, a.end)
				good = append(good, a)
				r.atoms = good[first:len(good):len(good)]
				continue
			}
			first = len(good)
			good = append(good, a)
			r = &request{table: t, span: a.span, atoms: good[first:len(good):len(good)]}
			reqs = append(reqs, r)
		}
	}
	return reqs, bad
}

// badFor returns the bad point range that s overlaps, if any.
func (k *knowledge) badFor(t table, s span) (badRange, bool) {
	if k == nil {
		return badRange{}, false
	}
	for _, b := range k.bad {
		if b.table == t && !b.gap && b.overlaps(s) {
			return b, true
		}
	}
	return badRange{}, false
}

// blocks reports whether bridging s would read a known bad range.
func (k *knowledge) blocks(t table, s span) bool {
	if k == nil || s.count() <= 0 {
		return false
	}
	for _, b := range k.bad {
		if b.table == t && b.overlaps(s) {
			return true
		}
	}
	return false
}

// LinkPlan is what one link puts on the wire in one poll of each of its
// devices.
type LinkPlan struct {
	// Link is the normalized URL (the GroupKey).
	Link string
	// Serial is the line setting of an rtu:// link ("9600 8N1"), Baud its
	// rate.
	Serial  string
	Baud    int
	Devices []DevicePlan
}

// DevicePlan is the requests of one poll of one device.
type DevicePlan struct {
	Device   string
	Unit     uint8
	Interval time.Duration
	Timeout  time.Duration
	Points   int
	Requests []RequestPlan
	// Bad lists what fault isolation learned (empty before Run).
	Bad []BadRange
}

// RequestPlan is one read request.
type RequestPlan struct {
	Unit   uint8
	Table  string
	Start  uint16
	Count  uint16
	Points []string
}

// String formats the request as
// "unit 1 holding 100..124 (25 registers) → 6 points: a, b, …".
func (r RequestPlan) String() string {
	what := "register"
	if r.Table == "coil" || r.Table == "discrete" {
		what = "bit"
	}
	s := span{int(r.Start), int(r.Start) + int(r.Count)}
	return fmt.Sprintf("unit %d %s %s (%s) → %s: %s", r.Unit, r.Table, s, plural(int(r.Count), what), plural(len(r.Points), "point"), nameList(r.Points, 8))
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// BadRange is a range of a table that a device refused.
type BadRange struct {
	Table string
	Start uint16
	Count uint16
	// Gap is true for a range between points that is not bridged; else
	// the points inside are Bad with Reason and are not requested.
	Gap    bool
	Reason string
	Points []string
}

func (b BadRange) String() string {
	s := span{int(b.Start), int(b.Start) + int(b.Count)}
	if b.Gap {
		return fmt.Sprintf("%s %s: gap not bridged", b.Table, s)
	}
	return fmt.Sprintf("%s %s: %s → Bad: %s", b.Table, s, b.Reason, nameList(b.Points, 8))
}

func nameList(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:n], ", ") + fmt.Sprintf(", … (%d more)", len(names)-n)
}

// WireTime estimates how long the requests of one poll of p occupy a serial
// line at baud (11 bits a character; frame gaps not counted).
func (p DevicePlan) WireTime(baud int) time.Duration {
	if baud <= 0 {
		return 0
	}
	chars := 0
	for _, r := range p.Requests {
		chars += 8 // request: unit, function, address, count, CRC
		n := int(r.Count)
		if r.Table == "coil" || r.Table == "discrete" {
			chars += 5 + (n+7)/8
		} else {
			chars += 5 + 2*n
		}
	}
	return time.Duration(float64(chars*11) / float64(baud) * float64(time.Second))
}
