package sparkplug

import (
	"context"
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
	"github.com/ferry-edge/ferry/buffer/buffertest"
	"github.com/ferry-edge/ferry/internal/codec"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink/sparkplug/sphost"
)

const benchPoints = 50

// benchRecord is a telemetry record of one 50-point scan of device dev;
// every value differs from those of record i-1.
func benchRecord(dev string, i int) ferry.Record {
	at := time.Unix(1_700_000_000, int64(i)*1e6)
	sc := ferry.Scan{Device: dev, Time: at}
	for p := range benchPoints {
		sc.Samples = append(sc.Samples, ferry.Sample{Device: dev, Point: "p" + strconv.Itoa(p), Value: ferry.FloatValue(float64(i*benchPoints + p)), Time: at})
	}
	return ferry.Record{Lane: ferry.LaneTelemetry, Seq: uint64(i + 1), Time: at, Data: codec.AppendTelemetry(nil, "v1", dev, []ferry.Scan{sc})}
}

// idleSource never has records: the benchmark calls build directly.
type idleSource struct{}

func (idleSource) Next(ctx context.Context, _, _ int) ([]ferry.Record, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (idleSource) Ack(...ferry.Record) error { return nil }
func (idleSource) Release(...ferry.Record)   {}

// BenchmarkBuildDDATA: the CPU cost of turning a 50-point telemetry record
// into its DDATA payload (decode, report by exception, protobuf encode),
// per sample; no network.
func BenchmarkBuildDDATA(b *testing.B) {
	n, err := New(DefaultConfig("g", "tcp://127.0.0.1:1"), idleSource{}, Options{Gateway: "gw"})
	if err != nil {
		b.Fatal(err)
	}
	recs := []ferry.Record{benchRecord("press", 0), benchRecord("press", 1)}
	var out []outMsg
	out, _ = n.build(out[:0], 0, recs[0], false) // the DBIRTH
	bytes := 0
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := range b.N {
		out, _ = n.build(out[:0], 0, recs[i%2], false)
		for _, o := range out {
			p, err := marshal(o)
			if err != nil {
				b.Fatal(err)
			}
			bytes += len(p)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchPoints), "ns/sample")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N*benchPoints), "cpu-ns/sample")
	b.ReportMetric(float64(bytes)/float64(b.N*benchPoints), "bytes/sample")
}

// BenchmarkPublish: records of 50-point scans from a real buffer, through
// the node, a mochi broker (QoS 1, PUBACK) and a host that decodes every
// payload, all in this process: the end-to-end cost per sample.
func BenchmarkPublish(b *testing.B) {
	bk := testpeer.Broker(b)
	host := sphost.New(b, bk.URL(), testHost)
	buf := buffertest.Open(b, b.TempDir(), buffer.Options{Gateway: testNode}, func(c *buffer.Config) { c.RetainAcked = 0 })
	for i := range b.N {
		rec := benchRecord("press", i)
		tel, _ := codec.DecodeTelemetry(rec.Data)
		for _, sc := range tel.Scans {
			done := make(chan error, 1)
			sc.Done = func(err error) { done <- err }
			buf.AppendScanWait(sc)
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
	}
	cfg := DefaultConfig(testGroup, bk.URL())
	n, err := New(cfg, buf, Options{Gateway: testNode, Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	stop := testutil.Run(b, "node", 10*time.Second, n.Run)
	want := b.N * benchPoints
	testutil.WaitFor(b, 10*time.Minute, fmt.Sprintf("%d samples at the host", want), func() bool { return host.Count() >= want })
	b.StopTimer()
	cpu := cpuTime() - cpu0
	stop()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(want), "ns/sample")
	b.ReportMetric(float64(cpu)/float64(want), "cpu-ns/sample")
	b.ReportMetric(float64(want)/b.Elapsed().Seconds(), "samples/s")
}

// cpuTime is the CPU time (user and system) this process has used, in
// ns: on a shared machine it says what the work cost when the wall
// clock says mostly how long it waited for a core.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
