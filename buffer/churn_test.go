package buffer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

// TestFileStaysWithinBoundUnderChurn writes many times max_size through a
// buffer whose consumer acks only some records (out of order, like an
// uplink with several publishes in flight), so that the bound drops the
// rest, and checks that the file never grows past max_size plus the
// documented slack.
func TestFileStaysWithinBoundUnderChurn(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSize = 2 << 20
	volume := 8 * int64(cfg.MaxSize)
	if testing.Short() {
		volume = 4 * int64(cfg.MaxSize)
	}
	b := openT(t, t.TempDir(), cfg, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Like an uplink with many publishes in flight, slower than the
		// drivers: up to 512 records in flight, acked out of order, some
		// released (failed publishes). Acks leave pages part full, and the
		// bound has to drop.
		rng := rand.New(rand.NewPCG(1, 2))
		var window []ferry.Record
		for ctx.Err() == nil {
			recs, err := b.Next(ctx, 8, 1<<20)
			if err != nil {
				return
			}
			window = append(window, recs...)
			for len(window) > 512 {
				rng.Shuffle(len(window), func(i, j int) { window[i], window[j] = window[j], window[i] })
				done := window[len(window)-8:]
				window = window[:len(window)-8]
				b.Ack(done[:5]...)
				b.Release(done[5:]...)
			}
			time.Sleep(5 * time.Millisecond) // paces the slow consumer: not a wait
		}
	}()
	rng := rand.New(rand.NewPCG(3, 4))
	var written int64
	var maxFile int64
	for i := 0; written < volume; i++ {
		var scans []ferry.Scan
		for j := 0; j < 400; j++ {
			n := 1
			if rng.IntN(2) == 0 {
				n = 50
			}
			scans = append(scans, scan(fmt.Sprintf("dev%d", rng.IntN(20)), t0.Add(time.Duration(i)*time.Second), n))
			written += int64(n * 6)
		}
		appendBatch(t, b, scans)
		maxFile = max(maxFile, b.fileSize())
	}
	cancel()
	wg.Wait()
	st := b.Stats()
	slack := fileSlack(cfg)
	t.Logf("wrote %d MiB of samples; file max %d bytes (%.2f of max_size), now %d; stored %d+%d bytes; free %d; dropped %d",
		written>>20, maxFile, float64(maxFile)/float64(cfg.MaxSize), st.FileBytes, st.Lanes[0].Bytes, st.Lanes[1].Bytes, st.FreeBytes,
		dropped(b, ferry.LaneTelemetry, reasonSize))
	if dropped(b, ferry.LaneTelemetry, reasonSize) == 0 {
		t.Fatal("the bound never dropped: the test did not reach it")
	}
	if maxFile > int64(cfg.MaxSize)+slack {
		t.Fatalf("file reached %d bytes, over max_size %d + slack %d", maxFile, cfg.MaxSize, slack)
	}
}
