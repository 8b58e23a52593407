package backoff

import (
	"context"
	"testing"
	"time"
)

func TestBackoffGrowsToCap(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 80 * time.Millisecond, Factor: 2, Jitter: -1}
	want := []time.Duration{10, 20, 40, 80, 80, 80}
	for i, w := range want {
		if got := b.Next(); got != w*time.Millisecond {
			t.Fatalf("attempt %d: got %v, want %v", i, got, w*time.Millisecond)
		}
	}
	if b.Attempt() != len(want) {
		t.Fatalf("Attempt() = %d", b.Attempt())
	}
	b.Reset()
	if got := b.Next(); got != 10*time.Millisecond {
		t.Fatalf("after Reset: %v", got)
	}
}

func TestBackoffJitterStaysInBounds(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: 0.5}
	seen := map[time.Duration]bool{}
	for i := 0; i < 1000; i++ {
		d := b.Next()
		if d < 50*time.Millisecond || d > 150*time.Millisecond {
			t.Fatalf("delay %v outside ±50%% of 100ms", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("jitter produced only %d distinct delays", len(seen))
	}
}

func TestBackoffDefaults(t *testing.T) {
	var b Backoff
	if got := b.Peek(); got != DefaultMin {
		t.Fatalf("Peek() = %v, want %v", got, DefaultMin)
	}
	for i := 0; i < 100; i++ {
		b.Next()
	}
	if got := b.Peek(); got != DefaultMax {
		t.Fatalf("Peek() after many = %v, want %v", got, DefaultMax)
	}
}

func TestWaitStopsOnCancel(t *testing.T) {
	b := Backoff{Min: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if b.Wait(ctx) {
		t.Fatal("Wait returned true on a cancelled context")
	}
}

func TestSleep(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	if !Sleep(ctx, 0) || !Sleep(ctx, -time.Second) {
		t.Fatal("Sleep of no time on a live context = false, want true")
	}
	if !Sleep(ctx, time.Millisecond) {
		t.Fatal("Sleep(1ms) = false, want true")
	}
	cancel()
	if Sleep(ctx, 0) {
		t.Fatal("Sleep(0) on an ended context = true, want false")
	}
	done := make(chan bool)
	go func() { done <- Sleep(ctx, time.Hour) }()
	select {
	case ok := <-done:
		if ok {
			t.Fatal("Sleep(1h) on an ended context = true, want false")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Sleep(1h) did not return when its context ended")
	}
}
