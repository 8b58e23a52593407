package buffer

// Benchmarks of the durable path (fsync on, the default options, a real
// file under the test's temp dir). Run:
//
//	go test ./buffer -run '^$' -bench . -benchtime 3s
//
// Figures for this project's reference machine are in buffer/README.md.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	ftest "github.com/ferry-edge/ferry/internal/testutil"
)

// benchScan is a scan of device with n float samples of realistic values
// (a few decimals, so half of them are not float32-exact).
func benchScan(device string, at time.Time, n int, seq int) ferry.Scan {
	s := ferry.Scan{Device: device, Time: at, Samples: make([]ferry.Sample, n)}
	for i := range s.Samples {
		s.Samples[i] = ferry.Sample{Point: pointNames[i%len(pointNames)], Value: ferry.FloatValue(float64(seq%1000) + float64(i)*0.25), Time: at}
	}
	return s
}

var pointNames = func() []string {
	var out []string
	for i := 0; i < 64; i++ {
		out = append(out, fmt.Sprintf("point_%02d", i))
	}
	return out
}()

// ingest appends scans of points samples each from one goroutine (like
// the pipeline) as fast as the buffer accepts them: the producer keeps at
// most the queue's worth of samples waiting for their Done, so nothing is
// dropped, and the figure is the sustained rate of durable commits.
func ingest(b *Buffer, scans, points, devices int, stop <-chan struct{}) (accepted int64) {
	return ingestKeyed(b, scans, points, devices, false, stop)
}

// ingestKeyed is ingest; with keyed, every scan carries a dedupe key like
// an MQTT message's.
func ingestKeyed(b *Buffer, scans, points, devices int, keyed bool, stop <-chan struct{}) (accepted int64) {
	var done atomic.Int64
	var failed atomic.Int64
	window := make(chan struct{}, b.opts.QueueSize/max(points, 1))
	at := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < scans; i++ {
		select {
		case <-stop:
			scans = i
		case window <- struct{}{}:
		}
		if i == scans {
			break
		}
		s := benchScan("dev"+strconv.Itoa(i%devices), at.Add(time.Duration(i)*time.Millisecond), points, i)
		if keyed {
			s.Key = "sensors/hall1/env:" + strconv.Itoa(i)
		}
		wg.Add(1)
		s.Done = func(err error) {
			if err != nil {
				failed.Add(1)
			} else {
				done.Add(1)
			}
			<-window
			wg.Done()
		}
		b.AppendScan(s)
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		panic(fmt.Sprintf("%d scans failed", n))
	}
	return done.Load()
}

func BenchmarkIngest(b *testing.B) {
	for _, tc := range []struct {
		points int
		keyed  bool
	}{{50, false}, {1, false}, {1, true}} {
		points := tc.points
		name := fmt.Sprintf("points=%d", points)
		if tc.keyed {
			name += ",dedupe-key"
		}
		b.Run(name, func(b *testing.B) {
			buf := openT(b, b.TempDir(), testConfig(), Options{})
			b.ResetTimer()
			start := time.Now()
			n := ingestKeyed(buf, b.N, points, 20, tc.keyed, nil)
			el := time.Since(start)
			b.StopTimer()
			st := buf.Stats()
			b.ReportMetric(float64(n*int64(points))/el.Seconds(), "samples/s")
			b.ReportMetric(float64(st.Lanes[ferry.LaneTelemetry].Bytes)/float64(n*int64(points)), "stored-B/sample")
			b.ReportMetric(float64(n*int64(points))/float64(testutilCommits(buf)), "samples/commit")
		})
	}
}

func testutilCommits(b *Buffer) float64 {
	return max(1, counterValue(b.m.commits))
}

// BenchmarkAcceptLatency appends scans at a fixed rate of 10k samples/s
// (1-point scans, the MQTT case, and 50-point scans) and reports the
// latency from AppendScan to Done(nil): the linger plus one commit.
func BenchmarkAcceptLatency(b *testing.B) {
	for _, points := range []int{1, 50} {
		b.Run(fmt.Sprintf("points=%d", points), func(b *testing.B) {
			buf := openT(b, b.TempDir(), testConfig(), Options{})
			const rate = 10000 // samples/s
			perTick := max(1, rate/1000/points)
			tick := time.Millisecond
			if points > rate/1000 {
				tick = time.Duration(points) * time.Second / rate
			}
			lat := make([]time.Duration, b.N)
			var wg sync.WaitGroup
			wg.Add(b.N)
			tk := time.NewTicker(tick)
			defer tk.Stop()
			b.ResetTimer()
			for i := 0; i < b.N; {
				<-tk.C
				for j := 0; j < perTick && i < b.N; j++ {
					s := benchScan("dev"+strconv.Itoa(i%5), time.Now(), points, i)
					start := time.Now()
					k := i
					s.Done = func(err error) {
						if err != nil {
							panic(err)
						}
						lat[k] = time.Since(start)
						wg.Done()
					}
					buf.AppendScan(s)
					i++
				}
			}
			wg.Wait()
			b.StopTimer()
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
			b.ReportMetric(q(0.5), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(q(1), "max-ms")
		})
	}
}

// writeBytes is this process's write_bytes from /proc/self/io: what it
// caused to be written to storage.
func writeBytes(tb testing.TB) int64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		tb.Skipf("no /proc/self/io: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	tb.Skip("no write_bytes in /proc/self/io")
	return 0
}

// BenchmarkWriteAmplification measures, in steady state (ingest with a
// consumer acking everything it is given), the bytes written to disk per
// byte of encoded record data, and the bytes per sample.
func BenchmarkWriteAmplification(b *testing.B) {
	for _, tc := range []struct {
		points int
		keyed  bool
	}{{50, false}, {1, false}, {1, true}} {
		points := tc.points
		name := fmt.Sprintf("points=%d", points)
		if tc.keyed {
			name += ",dedupe-key"
		}
		b.Run(name, func(b *testing.B) {
			buf := openT(b, b.TempDir(), testConfig(), Options{})
			ctx, cancel := context.WithCancel(context.Background())
			var payload atomic.Int64
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					recs, err := buf.Next(ctx, 256, 1<<20)
					if err != nil {
						return
					}
					for _, r := range recs {
						payload.Add(int64(len(r.Data)))
					}
					buf.Ack(recs...)
				}
			}()
			// Warm up to a steady state, then measure.
			ingest(buf, 200000/points, points, 20, nil)
			flush(b, buf)
			ftest.WaitFor(b, 10*time.Second, "the consumer's first payload", func() bool { return payload.Load() > 0 })
			p0, w0 := payload.Load(), writeBytes(b)
			b.ResetTimer()
			n := ingestKeyed(buf, b.N, points, 20, tc.keyed, nil)
			flush(b, buf)
			// Let the consumer take what was committed: polled every
			// millisecond, the timer runs.
			deadline := time.Now().Add(10 * time.Second)
			for buf.Stats().Lanes[ferry.LaneTelemetry].Records > 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			flush(b, buf)
			b.StopTimer()
			p1, w1 := payload.Load(), writeBytes(b)
			cancel()
			wg.Wait()
			b.ReportMetric(float64(w1-w0)/float64(p1-p0), "disk-B/payload-B")
			b.ReportMetric(float64(p1-p0)/float64(n*int64(points)), "payload-B/sample")
			b.ReportMetric(float64(w1-w0)/float64(n*int64(points)), "disk-B/sample")
		})
	}
}

// BenchmarkDrain fills a backlog, then drains it with Next and Ack while
// ingest goes on (up to 200k samples/s, as the two cores allow), and
// reports both rates.
func BenchmarkDrain(b *testing.B) {
	buf := openT(b, b.TempDir(), testConfig(), Options{})
	const points = 50
	// The backlog: b.N scans of 50 samples.
	ingest(buf, b.N, points, 20, nil)
	flush(b, buf)
	backlog := buf.Stats().Lanes[ferry.LaneTelemetry].Records
	perRecord := float64(b.N*points) / float64(backlog)

	stop := make(chan struct{})
	var ingested atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(time.Millisecond)
		defer tk.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			for j := 0; j < 4; j++ { // up to 4 × 50 samples per ms
				buf.AppendScan(benchScan("live"+strconv.Itoa(j), time.Now(), points, i))
				ingested.Add(points)
			}
		}
	}()
	// The timer runs through the fill too, so that b.N stays moderate;
	// the figures are the drain's own.
	start := time.Now()
	drained := 0
	ctx := context.Background()
	for drained < backlog {
		recs, err := buf.Next(ctx, 512, 4<<20)
		if err != nil {
			b.Fatal(err)
		}
		if err := buf.Ack(recs...); err != nil {
			b.Fatal(err)
		}
		drained += len(recs)
	}
	// The acks count once their deletion is committed.
	flush(b, buf)
	el := time.Since(start)
	close(stop)
	wg.Wait()
	b.ReportMetric(float64(drained)*perRecord/el.Seconds(), "drained-samples/s")
	b.ReportMetric(float64(ingested.Load())/el.Seconds(), "ingest-samples/s")
}

// BenchmarkDiskFsync is the floor under the accept latency: write one page
// and fsync it, as a commit does (twice: data, then meta).
func BenchmarkDiskFsync(b *testing.B) {
	f, err := os.Create(b.TempDir() + "/probe")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, 4096)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := f.WriteAt(page, int64(i%256)*4096); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}
