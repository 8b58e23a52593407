package uplink

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/codec"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// benchScan is a realistic scan: mostly floats (some from 32-bit
// registers), a counter, a flag, occasionally a bad point.
func benchScan(device string, t time.Time, n, i int) ferry.Scan {
	sc := ferry.Scan{Device: device, Time: t, Samples: make([]ferry.Sample, n)}
	for j := range sc.Samples {
		s := &sc.Samples[j]
		s.Device, s.Point, s.Time = device, pointNames[j%len(pointNames)]+fmt.Sprint(j/len(pointNames)), t
		switch j % 8 {
		case 0:
			s.Value = ferry.IntValue(int64(i * 7))
		case 1:
			s.Value = ferry.BoolValue(i%2 == 0)
		case 2:
			s.Value = ferry.FloatValue(float64(float32(20 + float64(i%1000)/10)))
		case 7:
			if i%50 == 0 {
				s.Quality = ferry.BadQuality(ferry.ReasonTimeout)
				continue
			}
			fallthrough
		default:
			s.Value = ferry.FloatValue(1000*float64(j) + float64(i)/3)
		}
	}
	return sc
}

var pointNames = []string{"oil_temp", "running", "pressure", "strokes", "vibration_rms", "motor_current", "die_temp", "cycle_time"}

// BenchmarkEncode measures the JSON encoder alone (codec decode included):
// samples/s and bytes on the wire per sample.
func BenchmarkEncode(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("samples_per_record=%d", n), func(b *testing.B) {
			u, err := New(DefaultNATSConfig("nats://127.0.0.1:4222"), newMemSource("gw"), Options{Gateway: "press-line-3", Site: "lyon"})
			if err != nil {
				b.Fatal(err)
			}
			mb := newMsgBuilder(u, 1<<20)
			t0 := time.Now()
			var recs []ferry.Record
			for i := range 64 {
				data := codec.AppendTelemetry(nil, "0123456789ab", "press3", []ferry.Scan{benchScan("press3", t0.Add(time.Duration(i)*time.Second), n, i)})
				recs = append(recs, ferry.Record{Lane: ferry.LaneTelemetry, Seq: uint64(i), ID: ferry.RecordID("press-line-3", ferry.LaneTelemetry, uint64(1e9+i)), Data: data})
			}
			b.ReportAllocs()
			b.ResetTimer()
			wire := 0
			for i := 0; i < b.N; i++ {
				msgs, err := mb.build(recs[i%len(recs)])
				if err != nil {
					b.Fatal(err)
				}
				wire += msgs[0].size
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(float64(wire)/float64(b.N*n), "wire-bytes/sample")
		})
	}
}

// ackTimes records when each record was acknowledged to the Source.
type ackTimes struct {
	*memSource
	mu sync.Mutex
	at map[string]time.Time
}

func (a *ackTimes) Ack(recs ...ferry.Record) error {
	now := time.Now()
	a.mu.Lock()
	for _, r := range recs {
		a.at[r.ID] = now
	}
	a.mu.Unlock()
	return a.memSource.Ack(recs...)
}

// latencies returns the sorted add→ack latencies of recs.
func (a *ackTimes) latencies(recs []ferry.Record) []time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []time.Duration
	for _, r := range recs {
		if at, ok := a.at[r.ID]; ok {
			out = append(out, at.Sub(r.Time))
		}
	}
	slices.Sort(out)
	return out
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// BenchmarkDrain drains a backlog of 1M samples into an in-process
// JetStream server while live data arrives at 10k samples/s, and reports
// the drain rate, the bytes on the wire per sample and the latency of the
// live records (which queue behind the backlog: the Source serves oldest
// first). Run with -benchtime 1x.
func BenchmarkDrain(b *testing.B) {
	for _, n := range []int{10, 20, 50, 100} {
		b.Run(fmt.Sprintf("samples_per_record=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				benchDrain(b, n, 1_000_000)
			}
		})
	}
}

// benchServer returns the URL of the server to benchmark against: the one
// in FERRY_BENCH_NATS_URL (a separate nats-server process, so that the
// process's CPU time is the uplink's alone; its FERRY streams are deleted
// first), else an in-process one.
func benchServer(b *testing.B) string {
	url := os.Getenv("FERRY_BENCH_NATS_URL")
	if url == "" {
		return testpeer.NATS(b).URL()
	}
	_, js := testpeer.Connect(b, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range []string{"FERRY", "FERRY_CATALOG"} {
		if err := js.DeleteStream(ctx, s); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			b.Fatal(err)
		}
	}
	return url
}

func benchDrain(b *testing.B, perRecord, total int) {
	b.StopTimer()
	url := benchServer(b)
	src := &ackTimes{memSource: newMemSource("press-line-3"), at: map[string]time.Time{}}
	t0 := time.Now()
	var last ferry.Record
	for i := range total / perRecord {
		dev := fmt.Sprintf("press%d", i%20)
		last = src.addScans("0123456789ab", dev, benchScan(dev, t0.Add(time.Duration(i)*time.Millisecond), perRecord, i))
	}
	reg := prometheus.NewRegistry()
	cfg := testConfig(url)
	cfg.AckTimeout = 10 * time.Second
	cfg.DuplicateWindow = time.Minute
	u, err := New(cfg, src, Options{Gateway: "press-line-3", Site: "lyon", Version: "bench", Registerer: reg})
	if err != nil {
		b.Fatal(err)
	}
	// Connect first, so that the figure is the drain, not the handshake.
	gate := &gatedSource{Source: src, open: make(chan struct{})}
	u.src = gate
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	waitFor(b, 10*time.Second, "uplink connected", func() bool { return u.Err() == nil })
	// Live ingest: 10k samples/s as 10-sample records every millisecond.
	liveCtx, stopLive := context.WithCancel(context.Background())
	var live []ferry.Record
	var liveMu sync.Mutex
	liveDone := make(chan struct{})
	b.StartTimer()
	start := time.Now()
	cpu0 := cpuTime()
	close(gate.open)
	go func() {
		defer close(liveDone)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-liveCtx.Done():
				return
			case now := <-tick.C:
				r := src.addScans("0123456789ab", "live", benchScan("live", now, 10, i))
				liveMu.Lock()
				live = append(live, r)
				liveMu.Unlock()
			}
		}
	}()
	// The backlog is drained when its last record is acknowledged. A
	// 1 ms poll, not WaitFor's coarser one: the figure is the drain time.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if _, ok := src.latenciesOne(last); ok {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("backlog not drained within 5 minutes")
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	// Live data after the backlog: 200 more live records (200 ms of ingest).
	liveMu.Lock()
	liveAt := len(live)
	liveMu.Unlock()
	waitFor(b, 10*time.Second, "live records after the backlog", func() bool {
		liveMu.Lock()
		defer liveMu.Unlock()
		return len(live) >= liveAt+200
	})
	stopLive()
	<-liveDone
	src.waitEmpty(b, 30*time.Second)
	cancel()
	<-done
	liveMu.Lock()
	lat := src.latencies(live)
	liveMu.Unlock()
	b.ReportMetric(float64(total)/elapsed.Seconds(), "samples/s")
	// CPU time of the whole process (uplink, in-process server, the
	// test's Source and live producer) per sample: independent of what
	// else runs on the machine. Two idle cores drain 2s/cpu samples a
	// second at most.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(total), "cpu-ns/sample")
	b.ReportMetric(metric(b, reg, "ferry_uplink_bytes_total")/metric(b, reg, "ferry_uplink_samples_total"), "wire-bytes/sample")
	b.ReportMetric(float64(pct(lat, 0.5).Milliseconds()), "live-p50-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Milliseconds()), "live-max-ms")
	b.ReportMetric(metric(b, reg, "ferry_uplink_duplicates_total"), "duplicates")
}

func (a *ackTimes) latenciesOne(r ferry.Record) (time.Duration, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	at, ok := a.at[r.ID]
	return at.Sub(r.Time), ok
}

// cpuTime returns the user and system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// gatedSource holds Next until open is closed.
type gatedSource struct {
	Source
	open chan struct{}
}

func (g *gatedSource) Next(ctx context.Context, max, maxBytes int) ([]ferry.Record, error) {
	select {
	case <-g.open:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Source.Next(ctx, max, maxBytes)
}

// BenchmarkAckLatency feeds live records at 10k samples/s (1000 records
// of 10 samples per second) and reports the time from a record becoming
// available in the Source to its Ack: the uplink's share of the sample →
// PubAck latency (the buffer's commit comes on top). Run with -benchtime 1x.
func BenchmarkAckLatency(b *testing.B) {
	for i := 0; i < b.N; i++ {
		url := benchServer(b)
		src := &ackTimes{memSource: newMemSource("press-line-3"), at: map[string]time.Time{}}
		cfg := testConfig(url)
		u, err := New(cfg, src, Options{Gateway: "press-line-3", Site: "lyon", Version: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- u.Run(ctx) }()
		waitFor(b, 10*time.Second, "uplink connected", func() bool { return u.Err() == nil })
		var recs []ferry.Record
		tick := time.NewTicker(time.Millisecond)
		for j := range 3000 {
			now := <-tick.C
			recs = append(recs, src.addScans("v", "press3", benchScan("press3", now, 10, j)))
		}
		tick.Stop()
		src.waitEmpty(b, 10*time.Second)
		cancel()
		<-done
		lat := src.latencies(recs)
		b.ReportMetric(float64(pct(lat, 0.5).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(pct(lat, 0.99).Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	}
}

// BenchmarkCompression measures what compressing each message body would
// save and cost: the input for the decision on a compact encoding.
// Reported per sample: bytes of the JSON body, plain and deflated (fastest
// level), and the time to compress.
func BenchmarkCompression(b *testing.B) {
	for _, n := range []int{10, 100} {
		u, err := New(DefaultNATSConfig("nats://127.0.0.1:4222"), newMemSource("gw"), Options{Gateway: "press-line-3", Site: "lyon"})
		if err != nil {
			b.Fatal(err)
		}
		mb := newMsgBuilder(u, 1<<20)
		var bodies [][]byte
		t0 := time.Now()
		for i := range 64 {
			data := codec.AppendTelemetry(nil, "0123456789ab", "press3", []ferry.Scan{benchScan("press3", t0.Add(time.Duration(i)*time.Second), n, i)})
			msgs, err := mb.build(ferry.Record{Lane: ferry.LaneTelemetry, ID: "x", Data: data})
			if err != nil {
				b.Fatal(err)
			}
			bodies = append(bodies, msgs[0].msg.Data)
		}
		var buf bytes.Buffer
		fw, _ := flate.NewWriter(&buf, flate.BestSpeed)
		for _, c := range []struct {
			name string
			fn   func(dst, src []byte) []byte
		}{
			{"none", func(_, src []byte) []byte { return src }},
			{"deflate", func(_, src []byte) []byte {
				buf.Reset()
				fw.Reset(&buf)
				fw.Write(src)
				fw.Close()
				return buf.Bytes()
			}},
		} {
			b.Run(fmt.Sprintf("samples_per_record=%d/%s", n, c.name), func(b *testing.B) {
				dst := make([]byte, 0, 1<<20)
				total := 0
				for i := 0; i < b.N; i++ {
					total += len(c.fn(dst, bodies[i%len(bodies)]))
				}
				b.ReportMetric(float64(total)/float64(b.N*n), "body-bytes/sample")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/sample")
			})
		}
	}
}

// BenchmarkBatchCompression measures what each compression choice costs
// and saves on a batch body of batch.max_bytes (256 KiB) of typical press
// scans: body bytes per sample after compression and the time to
// compress, per sample. The input for the compression default.
func BenchmarkBatchCompression(b *testing.B) {
	for _, n := range []int{10, 100} {
		cfg := DefaultNATSConfig("nats://127.0.0.1:4222")
		u, err := New(cfg, newMemSource("gw"), Options{Gateway: "press-line-3", Site: "lyon"})
		if err != nil {
			b.Fatal(err)
		}
		mb := newMsgBuilder(u, 1<<20)
		body := mb.batchHead(nil)
		t0 := time.Now()
		samples := 0
		for i := 0; len(body) < int(cfg.Batch.MaxBytes)-4096; i++ {
			data := codec.AppendTelemetry(nil, "0123456789ab", "press3", []ferry.Scan{benchScan("press3", t0.Add(time.Duration(i)*time.Second), n, i)})
			if i > 0 {
				body = append(body, ',')
			}
			var k int
			body, k, err = mb.element(body, ferry.Record{Lane: ferry.LaneTelemetry, ID: fmt.Sprintf("press-line-3-telemetry-%d", 1772352000000000+i), Data: data})
			if err != nil {
				b.Fatal(err)
			}
			samples += k
		}
		body = append(body, "]}"...)
		for _, algo := range []string{CompressionNone, CompressionS2, CompressionZstd} {
			b.Run(fmt.Sprintf("samples_per_record=%d/%s", n, algo), func(b *testing.B) {
				dst := make([]byte, 0, 1<<20)
				size := 0
				for i := 0; i < b.N; i++ {
					out, err := compress(algo, dst[:0], body)
					if err != nil {
						b.Fatal(err)
					}
					size = len(out)
				}
				b.ReportMetric(float64(size)/float64(samples), "body-bytes/sample")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*samples), "ns/sample")
			})
		}
	}
}
