package modbus

import (
	"fmt"
	"strings"
	"testing"
)

func pts(spec ...string) []pointDef {
	// spec: "holding 10 2" = table, address, registers (or bits)
	var out []pointDef
	for i, s := range spec {
		var tn string
		var a, n int
		if _, err := fmt.Sscanf(s, "%s %d %d", &tn, &a, &n); err != nil {
			panic(err)
		}
		t, _ := parseTable(tn)
		out = append(out, pointDef{name: fmt.Sprintf("p%d", i), table: t, addr: a, n: n})
	}
	return out
}

// everyN returns one-wide points of table t at from, from+step, … and at
// last.
func everyN(t string, from, last, step int) []pointDef {
	var spec []string
	for a := from; a < last; a += step {
		spec = append(spec, fmt.Sprintf("%s %d 1", t, a))
	}
	return pts(append(spec, fmt.Sprintf("%s %d 1", t, last))...)
}

func planString(reqs []*request) string {
	var b []string
	for _, r := range reqs {
		b = append(b, fmt.Sprintf("%s %s/%d", r.table, r.span, r.numPoints()))
	}
	return strings.Join(b, "; ")
}

func TestPlanRequests(t *testing.T) {
	def := limits{maxRegs: 125, maxBits: 2000, maxGap: 8}
	tests := []struct {
		name   string
		points []pointDef
		lim    limits
		know   knowledge
		want   string
		bad    int
	}{
		{"one point", pts("holding 100 2"), def, knowledge{}, "holding 100..101/1", 0},
		{"contiguous", pts("holding 0 2", "holding 2 2", "holding 4 1"), def, knowledge{}, "holding 0..4/3", 0},
		{"gap bridged", pts("holding 0 1", "holding 9 1"), def, knowledge{}, "holding 0..9/2", 0},
		{"gap too wide", pts("holding 0 1", "holding 10 1"), def, knowledge{}, "holding 0/1; holding 10/1", 0},
		{"max_gap 0", pts("holding 0 1", "holding 2 1", "holding 3 1"), limits{125, 2000, 0}, knowledge{}, "holding 0/1; holding 2..3/2", 0},
		{"unsorted and overlapping", pts("holding 10 2", "holding 0 4", "holding 2 1", "holding 11 1"), def, knowledge{}, "holding 0..11/4", 0},
		{"125 limit", pts("holding 0 60", "holding 60 60", "holding 120 5", "holding 125 1"), def, knowledge{}, "holding 0..124/3; holding 125/1", 0},
		{"device limit", pts("holding 0 10", "holding 10 10", "holding 20 10"), limits{20, 2000, 8}, knowledge{}, "holding 0..19/2; holding 20..29/1", 0},
		{"tables apart", pts("input 0 1", "holding 0 1", "coil 0 1", "discrete 0 1"), def, knowledge{}, "coil 0/1; discrete 0/1; holding 0/1; input 0/1", 0},
		{"bits bridge 16x", pts("coil 0 1", "coil 128 1", "coil 300 1"), def, knowledge{}, "coil 0..128/2; coil 300/1", 0},
		{"2000 bits", everyN("coil", 0, 2000, 120), def, knowledge{}, "coil 0..1920/17; coil 2000/1", 0},
		{"string spans", pts("holding 0 8", "holding 8 1"), def, knowledge{}, "holding 0..8/2", 0},
		{"bad point skipped", pts("holding 0 1", "holding 5 1", "holding 7 1"), def,
			knowledge{bad: []badRange{{table: tableHolding, span: span{5, 6}, reason: "illegal data address"}}}, "holding 0/1; holding 7/1", 1},
		{"bad gap not bridged", pts("holding 0 1", "holding 5 1"), def,
			knowledge{bad: []badRange{{table: tableHolding, span: span{1, 5}, gap: true}}}, "holding 0/1; holding 5/1", 0},
		{"bad gap elsewhere", pts("holding 0 1", "holding 5 1"), def,
			knowledge{bad: []badRange{{table: tableHolding, span: span{10, 12}, gap: true}}}, "holding 0..5/2", 0},
		{"bad range of another table", pts("holding 0 1", "holding 5 1"), def,
			knowledge{bad: []badRange{{table: tableInput, span: span{1, 5}, gap: true}}}, "holding 0..5/2", 0},
		{"learned limit", pts("holding 0 10", "holding 10 10", "holding 20 10"), def,
			knowledge{limit: [numTables]int{tableHolding: 15}}, "holding 0..9/1; holding 10..19/1; holding 20..29/1", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reqs, bad := planRequests(tt.points, tt.lim, &tt.know)
			if got := planString(reqs); got != tt.want {
				t.Errorf("plan %q, want %q", got, tt.want)
			}
			if len(bad) != tt.bad {
				t.Errorf("%d bad points, want %d", len(bad), tt.bad)
			}
			for _, r := range reqs {
				if (!r.table.bits() && r.count() > 125) || r.count() > 2000 || r.count() < 1 {
					t.Errorf("request %v out of protocol limits", r.span)
				}
			}
		})
	}
}

// TestPlanRequestsLayout: each point is in exactly one atom of one request
// (or bad), inside its atom's and request's span, and an atom's points do
// not run into the next one's when appended to (they share one index
// slice). Planning a device allocates per table and per request, not per
// point (issue 20).
func TestPlanRequestsLayout(t *testing.T) {
	def := limits{maxRegs: 125, maxBits: 2000, maxGap: 8}
	var spec []string
	for a := 0; a < 1000; a += 2 {
		spec = append(spec, fmt.Sprintf("holding %d 2", a))
	}
	for a := 0; a < 300; a += 3 {
		spec = append(spec, fmt.Sprintf("input %d 1", a), fmt.Sprintf("input %d 2", a)) // overlapping pairs: one atom each
	}
	spec = append(spec, "coil 0 1", "coil 5 1", "coil 700 1")
	points := pts(spec...)
	know := knowledge{bad: []badRange{{table: tableHolding, span: span{500, 502}, reason: "illegal data address"}}}
	reqs, bad := planRequests(points, def, &know)
	seen := make([]int, len(points))
	for _, b := range bad {
		seen[b.idx]++
	}
	for _, r := range reqs {
		for _, a := range r.atoms {
			if a.start < r.start || a.end > r.end {
				t.Errorf("atom %v outside its request %v", a.span, r.span)
			}
			for _, i := range a.points {
				seen[i]++
				p := points[i]
				if p.table != r.table || p.addr < a.start || p.addr+p.n > a.end {
					t.Errorf("point %s (%s %d+%d) in atom %s %v", p.name, p.table, p.addr, p.n, r.table, a.span)
				}
			}
		}
		// An append to the first atom's points must not change the next
		// atom's (link.go splits requests by their atoms).
		if len(r.atoms) > 1 {
			next := r.atoms[1].points[0]
			_ = append(r.atoms[0].points, -1)
			if r.atoms[1].points[0] != next {
				t.Fatalf("appending to an atom's points overwrote the next atom's")
			}
		}
	}
	for i, n := range seen {
		if n != 1 {
			t.Errorf("point %s is planned %d times, want once", points[i].name, n)
		}
	}
	if len(bad) != 1 {
		t.Errorf("%d bad points, want 1", len(bad))
	}
	allocs := testing.AllocsPerRun(20, func() { planRequests(points, def, &know) })
	if allocs > 60 {
		t.Errorf("planning %d points takes %v allocations, want at most 60 (not one per point)", len(points), allocs)
	}
}
