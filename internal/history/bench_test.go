package history

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

// cpuTime is the process's user+system CPU time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// plantScans returns one second of traffic: 1,000 points (10 devices of
// 100) read every 100 ms, as 100 scans of 100 samples: 10,000 samples.
func plantScans(sec time.Time) []*ferry.Scan {
	var out []*ferry.Scan
	for tick := range 10 {
		at := sec.Add(time.Duration(tick) * 100 * time.Millisecond)
		for d := range 10 {
			dev := "press" + strconv.Itoa(d)
			sc := &ferry.Scan{Device: dev, Time: at, Samples: make([]ferry.Sample, 100)}
			for p := range 100 {
				sc.Samples[p] = ferry.Sample{Device: dev, Point: "p" + strconv.Itoa(p), Value: ferry.FloatValue(float64(tick*p) / 7), Time: at}
			}
			out = append(out, sc)
		}
	}
	return out
}

// BenchmarkWrite10k is the history's cost at 10,000 samples/s: one op is
// one second of traffic (10,000 samples over 1,000 points, 100 scans)
// added as the pipeline adds it, then committed once, as Run does every
// commit_interval (1s). It reports the CPU (user+system, this process)
// per sample and as a share of one core at 10k samples/s, to set against
// ferry's ingest cost (docs/operations.md: 2.1 s per million samples).
func BenchmarkWrite10k(b *testing.B) {
	for _, every := range []int{1, 5, 10} {
		b.Run(fmt.Sprintf("commit=%ds", every), func(b *testing.B) { benchWrite10k(b, every) })
	}
}

func benchWrite10k(b *testing.B, every int) {
	cfg := testConfig()
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	c := &clock{start}
	s, err := Open(b.TempDir(), cfg, Options{Now: c.now})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	scans := plantScans(start)
	offs := make([][]time.Duration, len(scans))
	for i, sc := range scans {
		offs[i] = make([]time.Duration, len(sc.Samples))
		for k := range sc.Samples {
			offs[i][k] = sc.Samples[k].Time.Sub(start)
		}
	}
	// stamp gives the scans the times of second i, as a driver would;
	// its cost is measured apart and taken out.
	stamp := func(i int) {
		sec := start.Add(time.Duration(i) * time.Second)
		for j, sc := range scans {
			for k := range sc.Samples {
				sc.Samples[k].Time = sec.Add(offs[j][k])
			}
		}
	}
	// Warm up: the series exist, the file has grown.
	for _, sc := range scans {
		s.Add(sc)
	}
	if err := s.Commit(); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	base0 := cpuTime(b)
	for i := range 50 {
		stamp(i)
	}
	baseline := (cpuTime(b) - base0) / 50
	cpu0 := cpuTime(b)
	i := 0
	for b.Loop() {
		i++
		stamp(i)
		c.t = start.Add(time.Duration(i+1) * time.Second)
		for _, sc := range scans {
			s.Add(sc)
		}
		if i%every == 0 {
			if err := s.Commit(); err != nil {
				b.Fatal(err)
			}
		}
	}
	cpu := cpuTime(b) - cpu0 - time.Duration(b.N)*baseline
	perSample := float64(cpu.Nanoseconds()) / float64(b.N*10_000)
	b.ReportMetric(perSample, "cpu-ns/sample")
	b.ReportMetric(perSample*10_000/1e9*100, "%core@10k/s")
	b.ReportMetric(perSample/2100*100, "%of-ingest")
}

// BenchmarkAdd is the part of the write the pipeline's goroutine pays
// (the commit runs on the history's own goroutine).
func BenchmarkAdd(b *testing.B) {
	s, err := Open(b.TempDir(), testConfig(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	scans := plantScans(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	n := 0
	for b.Loop() {
		for _, sc := range scans {
			s.Add(sc)
		}
		n++
		if n%10 == 0 {
			// Keep pending under its bound as Run would.
			b.StopTimer()
			s.mu.Lock()
			for _, id := range s.dirty {
				a := s.acc[id]
				a.raw, a.done, a.has, a.jn = a.raw[:0], nil, false, 0
			}
			s.dirty, s.pending = s.dirty[:0], 0
			s.mu.Unlock()
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*10_000), "ns/sample")
}

// fillDays writes days of history for points points at one sample every
// every, committing (and so folding) every commitMin simulated minutes,
// with the clock following. Each commit is an fsync: on a busy machine a
// week of one-minute commits takes a quarter of an hour.
func fillDays(b *testing.B, s *Store, c *clock, start time.Time, days, points int, every time.Duration, commitMin int) {
	b.Helper()
	per := int(time.Minute / every)
	sc := &ferry.Scan{Device: "line", Samples: make([]ferry.Sample, points)}
	for m := range days * 1440 {
		for k := range per {
			at := start.Add(time.Duration(m)*time.Minute + time.Duration(k)*every)
			sc.Time = at
			for p := range points {
				sc.Samples[p] = ferry.Sample{Device: "line", Point: "p" + strconv.Itoa(p), Value: ferry.FloatValue(float64(m%97) + float64(p)), Time: at}
			}
			s.Add(sc)
		}
		if (m+1)%commitMin != 0 {
			continue
		}
		c.t = start.Add(time.Duration(m+1) * time.Minute)
		if err := s.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQuery7d: 7 days of rollups for 20 points (and the last day's
// raw samples at one per 10 s); one op is the 7-day query the console's
// trend makes (auto step: 6m buckets), for one point and for 20. Reports
// p50 and p99 over the ops.
func BenchmarkQuery7d(b *testing.B) {
	for _, n := range []int{1, 20} {
		b.Run(fmt.Sprintf("points=%d", n), func(b *testing.B) {
			s, c, start := sevenDays(b)
			end := start.Add(7 * 24 * time.Hour)
			var lat []time.Duration
			for b.Loop() {
				t0 := time.Now()
				for p := range n {
					got, err := s.Query(Query{Device: "line", Point: "p" + strconv.Itoa(p), From: end.Add(-7 * 24 * time.Hour), To: end})
					if err != nil || len(got.Points) != 1680 {
						b.Fatalf("%v, %d points", err, len(got.Points))
					}
				}
				lat = append(lat, time.Since(t0))
			}
			_ = c
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds()), "p99-µs")
		})
	}
}

var sevenDaysStore struct {
	s     *Store
	c     *clock
	start time.Time
}

// sevenDays fills (once per test binary) a history of 7 days for 20
// points at one sample a minute, the last day at one per 10 s.
func sevenDays(b *testing.B) (*Store, *clock, time.Time) {
	b.Helper()
	if sevenDaysStore.s != nil {
		return sevenDaysStore.s, sevenDaysStore.c, sevenDaysStore.start
	}
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	c := &clock{start}
	cfg := testConfig()
	cfg.MaxSize = 1 << 30
	// A directory that outlives the sub-benchmark that made it.
	dir, err := tempDir()
	if err != nil {
		b.Fatal(err)
	}
	s, err := Open(dir, cfg, Options{Now: c.now})
	if err != nil {
		b.Fatal(err)
	}
	fillDays(b, s, c, start, 6, 20, time.Minute, 10)
	fillDays(b, s, c, start.Add(6*24*time.Hour), 1, 20, 10*time.Second, 10)
	sevenDaysStore.s, sevenDaysStore.c, sevenDaysStore.start = s, c, start
	return s, c, start
}

// BenchmarkDiskPerPointDay: one day of 100 points at 1 Hz (raw kept 24 h,
// rollups); reports the bytes per point per day, as stored (keys and
// values) and as the file's pages in use.
func BenchmarkDiskPerPointDay(b *testing.B) {
	for b.Loop() {
		start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
		c := &clock{start}
		cfg := testConfig()
		cfg.MaxSize = 1 << 30
		s, err := Open(b.TempDir(), cfg, Options{Now: c.now})
		if err != nil {
			b.Fatal(err)
		}
		fillDays(b, s, c, start, 1, 100, time.Second, 1)
		s.wmu.Lock()
		var raw, roll int64
		for _, n := range s.rawBytes {
			raw += n
		}
		for _, n := range s.rollBytes {
			roll += n
		}
		s.measure()
		ratio := s.ratio
		s.wmu.Unlock()
		b.ReportMetric(float64(raw)/100, "raw-B/point/day")
		b.ReportMetric(float64(roll)/100, "rollup-B/point/day")
		b.ReportMetric(float64(raw+roll)*ratio/100, "file-B/point/day")
		b.ReportMetric(float64(s.FileSize()), "file-B")
		s.Close()
	}
}

func tempDir() (string, error) { return os.MkdirTemp("", "ferry-history-bench-") }
