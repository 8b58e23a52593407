package buffer

import (
	"context"
	"fmt"
	"testing"
	"unsafe"

	"github.com/ferry-edge/ferry"
)

// The cursors' masks fit in the index entry's padding: a record costs the
// index 24 bytes, with one consumer or eight.
func TestIndexEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(entry{}); n != 24 {
		t.Fatalf("index entry is %d bytes, want 24", n)
	}
}

// BenchmarkCursorsDrain drains a backlog of b.N scans (50 samples each)
// through 1, 2 and 4 consumers, each taking and acking every record
// (alternating, as upstreams at the same pace would), acks committed: the
// cost of the cursors' marks per record.
func BenchmarkCursorsDrain(b *testing.B) {
	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("consumers=%d", n), func(b *testing.B) {
			var names []string
			for i := range n {
				names = append(names, fmt.Sprintf("c%d", i))
			}
			if n == 1 {
				names = nil
			}
			buf := openT(b, b.TempDir(), testConfig(), Options{Consumers: names})
			ingest(buf, b.N, 50, 20, nil)
			flush(b, buf)
			backlog := buf.Stats().Lanes[ferry.LaneTelemetry].Records
			b.ResetTimer()
			ctx := context.Background()
			drained := make([]int, len(buf.cursors))
			for more := true; more; {
				more = false
				for i, cur := range buf.cursors {
					if drained[i] >= backlog {
						continue
					}
					more = true
					recs, err := cur.Next(ctx, 512, 4<<20)
					if err != nil {
						b.Fatal(err)
					}
					if err := cur.Ack(recs...); err != nil {
						b.Fatal(err)
					}
					drained[i] += len(recs)
				}
			}
			flush(b, buf)
			b.StopTimer()
			if st := buf.Stats(); st.Lanes[ferry.LaneTelemetry].Records != 0 {
				b.Fatalf("%d records left", st.Lanes[ferry.LaneTelemetry].Records)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(backlog), "ns/record")
			b.ReportMetric(float64(backlog), "records")
		})
	}
}
