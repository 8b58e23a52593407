package buffer

import (
	"fmt"
	"sync"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
)

// monoClock is a monotonic clock for tests: it moves only when told.
type monoClock struct {
	mu sync.Mutex
	d  time.Duration
}

func (m *monoClock) Since() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.d
}

func (m *monoClock) Add(d time.Duration) {
	m.mu.Lock()
	m.d += d
	m.mu.Unlock()
}

// A gateway without a battery-backed clock boots in 1970, buffers while
// offline, and NTP sets the clock once the network is back. The records
// stored before the step must keep their real age — not be dropped by
// max_age as 56 years old — also after a restart; records of an earlier
// run keep their own times; real ageing still drops.
func TestClockStepKeepsBacklog(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.MaxAge = 24 * time.Hour
	boot := time.Date(1970, 1, 1, 0, 0, 30, 0, time.UTC)
	real := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

	// A first run with a sound clock: one record, 25 hours old by the end
	// (really past max_age: it must go, and not shield the others).
	wall := newClock(real.Add(-25 * time.Hour))
	b := openT(t, dir, cfg, Options{Now: wall.Now, mono: (&monoClock{}).Since})
	appendBatch(t, b, []ferry.Scan{scan("earlier", wall.Now(), 1)})
	flush(t, b)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	// The reboot: the clock reads 1970; ten records are stored offline
	// over ten minutes.
	wall = newClock(boot)
	mono := &monoClock{}
	b = openT(t, dir, cfg, Options{Now: wall.Now, mono: mono.Since})
	for i := range 10 {
		appendBatch(t, b, []ferry.Scan{scan(fmt.Sprintf("offline%d", i), wall.Now(), 1)})
		wall.Add(time.Minute)
		mono.Add(time.Minute)
	}
	flush(t, b)
	// NTP: the wall clock jumps 56 years, the monotonic clock 1 s.
	wall.Add(real.Sub(wall.Now()))
	mono.Add(time.Second)
	appendBatch(t, b, []ferry.Scan{scan("online", real, 1)})
	flush(t, b)

	// The earlier run's record is really 25 hours old: dropped. The
	// offline ones are 1–10 minutes old, not 56 years: kept.
	if n := dropped(b, ferry.LaneTelemetry, reasonAge); n != 1 {
		t.Fatalf("after the step: %d records dropped by age, want the earlier run's one", n)
	}
	st := b.Stats().Lanes[ferry.LaneTelemetry]
	if st.Records != 11 {
		t.Fatalf("after the step: %d telemetry records, want 11", st.Records)
	}
	if age := real.Sub(st.Oldest); age < 10*time.Minute || age > 11*time.Minute {
		t.Fatalf("after the step: oldest record %v old, want the first offline one's 10 minutes", age)
	}
	if got := promtest.ToFloat64(b.m.clockSteps); got != 1 {
		t.Errorf("ferry_buffer_clock_steps_total = %v, want 1", got)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	// A restart on the right clock: the stored shift applies again.
	wall = newClock(real)
	mono = &monoClock{}
	b = openT(t, dir, cfg, Options{Now: wall.Now, mono: mono.Since})
	appendBatch(t, b, []ferry.Scan{scan("after restart", real, 1)})
	flush(t, b)
	if n := dropped(b, ferry.LaneTelemetry, reasonAge); n != 0 {
		t.Fatalf("after a restart: %d records dropped by age, want none", n)
	}
	if st := b.Stats().Lanes[ferry.LaneTelemetry]; st.Records != 12 || real.Sub(st.Oldest) > 11*time.Minute {
		t.Fatalf("after a restart: %d telemetry records, the oldest %v old; want 12, 10 minutes", st.Records, real.Sub(st.Oldest))
	}

	// Real ageing still drops: a day later (both clocks move) everything
	// but the newest record is past max_age.
	wall.Add(24*time.Hour + 30*time.Second)
	mono.Add(24*time.Hour + 30*time.Second)
	appendBatch(t, b, []ferry.Scan{scan("a day later", wall.Now(), 1)})
	flush(t, b)
	if n := dropped(b, ferry.LaneTelemetry, reasonAge); n != 12 {
		t.Fatalf("a day later: %d records dropped by age, want 12", n)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// The shifts are gone with the records they covered.
	b = openT(t, dir, cfg, Options{Now: wall.Now})
	n := 0
	if err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMeta).Cursor()
		for k, _ := c.Seek([]byte(shiftPrefix)); k != nil && string(k[:len(shiftPrefix)]) == shiftPrefix; k, _ = c.Next() {
			n++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d stored shifts left, want none", n)
	}
}

// A step smaller than clockStepMin, or a clock without a monotonic
// reading (an injected Now, as every other test uses), shifts nothing.
func TestSmallClockStepIgnored(t *testing.T) {
	wall := newClock(t0)
	mono := &monoClock{}
	b := openT(t, t.TempDir(), testConfig(), Options{Now: wall.Now, mono: mono.Since})
	appendBatch(t, b, []ferry.Scan{scan("a", t0, 1)})
	flush(t, b)
	wall.Add(clockStepMin - time.Second)
	appendBatch(t, b, []ferry.Scan{scan("b", t0, 1)})
	flush(t, b)
	if got := promtest.ToFloat64(b.m.clockSteps); got != 0 {
		t.Fatalf("ferry_buffer_clock_steps_total = %v, want 0", got)
	}
	if st := b.Stats().Lanes[ferry.LaneTelemetry]; !st.Oldest.Equal(t0) {
		t.Fatalf("oldest %v, want %v", st.Oldest, t0)
	}
}
