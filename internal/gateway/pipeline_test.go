package gateway

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
)

func TestPipelineOrderAndDrain(t *testing.T) {
	var mu sync.Mutex
	var evaluated, stored []string
	p := newPipeline(16,
		func(s *ferry.Scan) { mu.Lock(); evaluated = append(evaluated, s.Device); mu.Unlock() },
		func(s ferry.Scan) { mu.Lock(); stored = append(stored, s.Device); mu.Unlock() },
		prometheus.NewRegistry())
	for _, d := range []string{"a", "b", "c"} {
		p.Emit(ferry.Scan{Device: d, Samples: make([]ferry.Sample, 2)})
	}
	done := make(chan struct{})
	go func() { p.Run(); close(done) }()
	p.Close()
	<-done
	if len(stored) != 3 || stored[0] != "a" || stored[2] != "c" || len(evaluated) != 3 {
		t.Fatalf("evaluated %v, stored %v", evaluated, stored)
	}
	if got := testutil.ToFloat64(p.samples); got != 6 {
		t.Fatalf("samples counter %v", got)
	}
}

func TestPipelineDropsNewestWhenFull(t *testing.T) {
	p := newPipeline(2, nil, func(ferry.Scan) {}, nil)
	var dropped []error
	for i := 0; i < 5; i++ {
		p.Emit(ferry.Scan{Done: func(err error) { dropped = append(dropped, err) }})
	}
	if len(dropped) != 3 {
		t.Fatalf("%d scans finished early, want 3", len(dropped))
	}
	for _, err := range dropped {
		if !errors.Is(err, ferry.ErrDropped) {
			t.Fatalf("finished with %v, want ErrDropped", err)
		}
	}
	if got := testutil.ToFloat64(p.dropped); got != 3 {
		t.Fatalf("dropped counter %v", got)
	}
}

func TestPipelineStuck(t *testing.T) {
	now := time.Unix(1000, 0)
	p := newPipeline(4, nil, func(ferry.Scan) {}, nil)
	p.now = func() time.Time { return now }
	p.progress.Store(now.UnixNano())
	if err := p.Err(); err != nil {
		t.Fatalf("idle pipeline: %v", err)
	}
	now = now.Add(time.Hour)
	if err := p.Err(); err != nil {
		t.Fatalf("idle for an hour with nothing queued: %v", err)
	}
	p.Emit(ferry.Scan{})
	if err := p.Err(); err == nil {
		t.Fatal("a scan waiting with no progress for an hour is not reported")
	}
	done := make(chan struct{})
	go func() { p.Run(); close(done) }()
	p.Close()
	<-done
	if err := p.Err(); err != nil {
		t.Fatalf("drained: %v", err)
	}
}

// TestPipelineEmitAfterClose: a driver that outlived the shutdown's wait
// emits into a closed pipeline; its scan is finished with ErrClosed
// instead of a panic (send on a closed channel), also when Close races
// with Emit.
func TestPipelineEmitAfterClose(t *testing.T) {
	p := newPipeline(1024, nil, func(s ferry.Scan) { s.Finish(nil) }, nil)
	done := make(chan struct{})
	go func() { p.Run(); close(done) }()
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := map[error]int{}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				p.Emit(ferry.Scan{Done: func(err error) { mu.Lock(); results[err]++; mu.Unlock() }})
			}
		}()
	}
	// Close while the emitters are under way: some scans through already.
	waitFor(t, 10*time.Second, "scans through the pipeline", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return results[nil] > 0
	})
	p.Close()
	wg.Wait()
	<-done
	var closed error
	p.Emit(ferry.Scan{Done: func(err error) { closed = err }})
	if !errors.Is(closed, ferry.ErrClosed) {
		t.Fatalf("emit after Close finished with %v, want ErrClosed", closed)
	}
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for err, n := range results {
		if err != nil && !errors.Is(err, ferry.ErrClosed) && !errors.Is(err, ferry.ErrDropped) {
			t.Errorf("%d scans finished with %v", n, err)
		}
		total += n
	}
	if total != 2000 {
		t.Errorf("%d of 2000 scans finished", total)
	}
}
