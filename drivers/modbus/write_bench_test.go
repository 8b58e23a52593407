package modbus

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// burstDevice has five planned holding requests per poll (0, 100, 200,
// 300, and 500..503 holding the writable setpoint at 500 and another
// float at 502), so a read back (500, 2 registers) is told apart from the
// poll's read of 500 (4 registers) on the wire.
func burstDevice(interval time.Duration) Device {
	d := dev("press", "", 1, interval,
		hr("a", 0, "float32"), hr("b", 100, "float32"), hr("c", 200, "float32"), hr("d", 300, "float32"),
		writable(hr("sp", 500, "float32")), hr("e", 502, "float32"))
	d.Config.MaxGap = 0
	return d
}

// pollTimes records how long each poll of a device took, from its
// scheduled start to its scan.
type pollTimes struct {
	mu  sync.Mutex
	on  bool
	got []time.Duration
}

func (p *pollTimes) hook(s ferry.Scan) {
	d := time.Since(s.Time)
	p.mu.Lock()
	if p.on {
		p.got = append(p.got, d)
	}
	p.mu.Unlock()
}

// take returns the durations recorded since the last take and starts a
// new record.
func (p *pollTimes) take() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.got
	p.got, p.on = nil, true
	slices.Sort(out)
	return out
}

// burst writes the setpoint from n goroutines until stop is closed and
// returns how many writes were done.
func burst(t testing.TB, drv *Driver, n int, stop chan struct{}) func() int64 {
	var wg sync.WaitGroup
	var done, failed atomic.Int64
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := float64(i); ; v += float64(n) {
				select {
				case <-stop:
					return
				default:
				}
				_, err := drv.Write(context.Background(), ferry.WriteRequest{Device: "press", Point: "sp", Value: ferry.FloatValue(v)})
				if err != nil {
					failed.Add(1)
					continue
				}
				done.Add(1)
			}
		}()
	}
	return func() int64 {
		wg.Wait()
		if f := failed.Load(); f > 0 {
			t.Errorf("%d writes of the burst failed", f)
		}
		return done.Load()
	}
}

// TestWriteBurstAlternatesWithPoll: under a burst of writes from four
// goroutines, the wire shows each write followed at once by its read back,
// and inside a poll (its first request to its last) never two writes in a
// row: writes and the poll's requests alternate, so a burst delays a poll
// by at most one write per request and polls go on. Durations are logged,
// not asserted.
func TestWriteBurstAlternatesWithPoll(t *testing.T) {
	pt := &pollTimes{}
	r := startWriteRigHook(t, pt.hook, burstDevice(20*time.Millisecond))
	r.col.next(t, "press")
	pt.take()
	time.Sleep(500 * time.Millisecond) // the time over which idle polls are measured
	idle := pt.take()

	r.wire.Record(true)
	stop := make(chan struct{})
	wait := burst(t, r.drv, 4, stop)
	time.Sleep(500 * time.Millisecond) // the length of the burst under test
	close(stop)
	writes := wait()
	r.wire.Record(false)
	during := pt.take()

	log := r.wire.Log()
	inPoll, lastWrite, polls, wrote := false, false, 0, 0
	for i := 0; i < len(log); i++ {
		q := log[i]
		switch {
		case q.Function == fcWriteMultipleRegisters:
			if q.Addr != 500 || q.Count != 2 {
				t.Fatalf("request %d: write %+v", i, q)
			}
			if i+1 < len(log) && (log[i+1].Function != 0x03 || log[i+1].Addr != 500 || log[i+1].Count != 2) {
				t.Fatalf("request %d: write not followed by its read back but by %+v", i, log[i+1])
			}
			if inPoll && lastWrite {
				t.Fatalf("request %d: two writes in a row inside a poll: %+v", i, log[max(0, i-6):min(len(log), i+4)])
			}
			i++ // the read back
			lastWrite = true
			wrote++
		case q.Function == 0x03:
			lastWrite = false
			if q.Addr == 0 {
				inPoll = true
			}
			if q.Addr == 500 && q.Count == 4 {
				inPoll = false
				polls++
			}
		default:
			t.Fatalf("request %d: %+v", i, q)
		}
	}
	if polls < 3 || wrote == 0 {
		t.Fatalf("%d polls and %d writes during the burst", polls, wrote)
	}
	t.Logf("idle: %d polls, duration p50 %v max %v", len(idle), pctl(idle, 0.5), pctl(idle, 1))
	t.Logf("burst of %d writes in 0.5s (4 writers): %d polls, duration p50 %v p99 %v max %v", writes, len(during), pctl(during, 0.5), pctl(during, 0.99), pctl(during, 1))
}

func pctl(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(p*float64(len(d))))].Round(time.Microsecond)
}

// startWriteRigHook is startWriteRig with a hook on every scan.
func startWriteRigHook(t testing.TB, hook func(ferry.Scan), devs ...Device) *writeRig {
	t.Helper()
	b := newBank()
	b.writable, b.quiet = true, true
	b.fill(1, 0, 1000, func(int) uint16 { return 0 })
	srv := testpeer.ModbusServer(t, b)
	wire := testpeer.NewModbusCounter(t, srv.Addr())
	for i := range devs {
		devs[i].Config.URL = wire.URL()
	}
	r := &writeRig{bank: b, wire: wire, drv: newDriver(t, Options{}, devs...), col: newCollector()}
	r.col.hook = hook
	t.Cleanup(run(t, r.drv, r.col))
	waitRunning(t, r.drv)
	return r
}

// BenchmarkWrite writes a float32 setpoint and reads it back (FC16 then
// FC03) through the link's scheduler, against the in-process simonvetter
// server (through the counting proxy, as the tests), while the device is
// polled every second.
func BenchmarkWrite(b *testing.B) {
	r := startWriteRigHook(b, nil, burstDevice(time.Second))
	ctx := context.Background()
	v := 0.0
	b.ReportAllocs()
	for b.Loop() {
		v++
		if _, err := r.drv.Write(ctx, ferry.WriteRequest{Device: "press", Point: "sp", Value: ferry.FloatValue(v)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}

// BenchmarkPollUnderWrites reports the poll duration (scheduled start to
// scan, five requests) of a device polled every 20ms, idle and under a
// burst of writes from four goroutines: the metric is the effect of
// writes on the link's polls.
func BenchmarkPollUnderWrites(b *testing.B) {
	for _, writers := range []int{0, 1, 4} {
		b.Run("writers="+itoa(writers), func(b *testing.B) {
			pt := &pollTimes{}
			r := startWriteRigHook(b, pt.hook, burstDevice(20*time.Millisecond))
			r.col.next(b, "press")
			stop := make(chan struct{})
			wait := burst(b, r.drv, writers, stop)
			pt.take()
			for b.Loop() {
				r.col.next(b, "press")
			}
			got := pt.take()
			close(stop)
			writes := wait()
			b.ReportMetric(float64(pctl(got, 0.5).Microseconds())/1000, "poll-p50-ms")
			b.ReportMetric(float64(pctl(got, 0.99).Microseconds())/1000, "poll-p99-ms")
			b.ReportMetric(float64(writes)/b.Elapsed().Seconds(), "writes/s")
		})
	}
}
