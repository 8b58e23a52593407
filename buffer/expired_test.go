package buffer

import (
	"testing"

	"github.com/ferry-edge/ferry"
)

// TestExpiredListRuns: the list of records that left the retention keeps
// the last expiredMax records, oldest first, each with its mark, however
// they arrive; records of one message (consecutive sequences, one mark)
// take one entry, so 100,000 records in messages of 17 take about
// 65,536/17 entries, while records that cannot be merged (lanes taking
// turns, one message each) take one entry each, as before.
func TestExpiredListRuns(t *testing.T) {
	type rec struct {
		lane      ferry.Lane
		seq, mark uint64
	}
	for _, c := range []struct {
		name    string
		gen     func(i int) rec
		n       int
		maxRuns int
	}{
		{"messages of 17", func(i int) rec {
			return rec{ferry.LaneTelemetry, uint64(1000 + i), uint64(i/17+1)<<8 | 1}
		}, 100_000, expiredMax/17 + 2},
		{"one record a message, lanes taking turns", func(i int) rec {
			return rec{ferry.Lane(i % 2), uint64(1000 + i/2), uint64(i+1) << 8}
		}, 70_000, expiredMax},
		{"fewer than the bound", func(i int) rec {
			return rec{ferry.LaneTelemetry, uint64(5 + i), 7 << 8}
		}, 300, 1},
		{"a gap in the sequences splits a run", func(i int) rec {
			return rec{ferry.LaneTelemetry, uint64(5 + i + i/10), 7 << 8}
		}, 100, 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			var x expiredList
			for i := range c.n {
				r := c.gen(i)
				x.add(r.lane, r.seq, r.mark)
			}
			first := max(0, c.n-expiredMax)
			i := first
			x.each(func(lane ferry.Lane, seq, mark uint64) {
				if i < c.n {
					if want := c.gen(i); (rec{lane, seq, mark}) != want {
						t.Fatalf("record %d: %+v, want %+v", i-first, rec{lane, seq, mark}, want)
					}
				}
				i++
			})
			if i != c.n {
				t.Errorf("%d records listed, want %d (the last %d of %d)", i-first, c.n-first, c.n-first, c.n)
			}
			if x.records != c.n-first {
				t.Errorf("records = %d, want %d", x.records, c.n-first)
			}
			if runs := len(x.runs) - x.head; runs > c.maxRuns {
				t.Errorf("%d runs, want at most %d", runs, c.maxRuns)
			}
			if cap(x.runs) > c.maxRuns*4/3+512 {
				t.Errorf("capacity %d for %d runs: forgotten runs not given back", cap(x.runs), len(x.runs)-x.head)
			}
		})
	}
}
