package opcua

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
)

const benchNodes = 10000

// benchServer starts a server with benchNodes Double variables.
func benchServer(b *testing.B) (*testServer, []Point) {
	b.Helper()
	srv := startServer(b, serverOpts{none: true})
	points := make([]Point, benchNodes)
	kv := make([]any, 0, 2*benchNodes)
	for i := range points {
		name := fmt.Sprintf("V%05d", i)
		kv = append(kv, name, 0.0)
		points[i] = Point{Name: "p" + name, Node: srv.Node(name)}
	}
	srv.add(sourceTime, kv...)
	return srv, points
}

// BenchmarkSubscribe10k measures notifications per second end to end
// (in-process gopcua server → secure channel → driver → emit) with 10,000
// monitored items, every item changing once per iteration. The allocation
// figure counts the whole process, the server included.
func BenchmarkSubscribe10k(b *testing.B) {
	srv, points := benchServer(b)
	d, err := New([]Device{testDevice("plc", srv.Endpoint(), func(c *Config) {
		insecure(c)
		c.Interval = 20 * time.Millisecond
	}, points...)}, Options{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	emit := func(s ferry.Scan) { got.Add(int64(len(s.Samples))) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx, emit); close(done) }()
	defer func() { cancel(); <-done }()
	wait := func(n int64) {
		deadline := time.Now().Add(2 * time.Minute)
		for got.Load() < n {
			if time.Now().After(deadline) {
				b.Fatalf("got %d samples, want %d", got.Load(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	wait(benchNodes) // initial values
	base := got.Load()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	for i := range b.N {
		ts := sourceTime.Add(time.Duration(i+1) * time.Millisecond)
		for j := range benchNodes {
			srv.Set(fmt.Sprintf("V%05d", j), float64(i+1), ts)
		}
		wait(base + int64((i+1)*benchNodes))
	}
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	n := float64(b.N * benchNodes)
	b.ReportMetric(n/b.Elapsed().Seconds(), "notifications/s")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/n, "process-allocs/notification")
}

// BenchmarkDataChange10k measures ferry's own handling of one data change
// notification of 10,000 items (decoded values to an emitted scan).
func BenchmarkDataChange10k(b *testing.B) {
	var points []Point
	for i := range benchNodes {
		points = append(points, Point{Name: fmt.Sprintf("p%05d", i), Node: fmt.Sprintf("ns=2;i=%d", i)})
	}
	d, err := New([]Device{testDevice("plc", "opc.tcp://127.0.0.1:4840", insecure, points...)}, Options{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	dv := d.devs[0]
	dcn := &ua.DataChangeNotification{}
	for i := range benchNodes {
		v := &ua.DataValue{Value: ua.MustVariant(float64(i)), SourceTimestamp: sourceTime, ServerTimestamp: sourceTime}
		v.UpdateMask()
		dcn.MonitoredItems = append(dcn.MonitoredItems, &ua.MonitoredItemNotification{ClientHandle: uint32(i), Value: v})
	}
	cur := make([]ferry.Sample, benchNodes)
	emit := func(ferry.Scan) {}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		dv.dataChange(dcn, cur, emit)
	}
	b.StopTimer()
	allocs := testing.AllocsPerRun(5, func() { dv.dataChange(dcn, cur, emit) })
	b.ReportMetric(allocs/benchNodes, "allocs/notification")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchNodes), "ns/notification")
}

// BenchmarkDecodeNotification10k measures gopcua's decoding of a data
// change notification of 10,000 Double items, for comparison.
func BenchmarkDecodeNotification10k(b *testing.B) {
	dcn := &ua.DataChangeNotification{DiagnosticInfos: []*ua.DiagnosticInfo{}}
	for i := range benchNodes {
		v := &ua.DataValue{Value: ua.MustVariant(float64(i)), SourceTimestamp: sourceTime, ServerTimestamp: sourceTime}
		v.UpdateMask()
		dcn.MonitoredItems = append(dcn.MonitoredItems, &ua.MonitoredItemNotification{ClientHandle: uint32(i), Value: v})
	}
	buf, err := ua.Encode(dcn)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		var out ua.DataChangeNotification
		if _, err := ua.Decode(buf, &out); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	allocs := testing.AllocsPerRun(3, func() {
		var out ua.DataChangeNotification
		ua.Decode(buf, &out)
	})
	b.ReportMetric(allocs/benchNodes, "allocs/notification")
}

// BenchmarkPoll10k measures one poll of 10,000 nodes: the scan time and
// the Read requests it takes (the gopcua server declares MaxNodesPerRead
// 32).
func BenchmarkPoll10k(b *testing.B) {
	srv, points := benchServer(b)
	m := NewMetrics(nil)
	d, err := New([]Device{testDevice("plc", srv.Endpoint(), func(c *Config) { insecure(c); c.Mode = "poll" }, points...)},
		Options{DataDir: b.TempDir(), Metrics: m})
	if err != nil {
		b.Fatal(err)
	}
	dv := d.devs[0]
	ctx := context.Background()
	cl, _, err := dial(ctx, dialOptions{cfg: &dv.cfg.Config, pki: d.pki, ident: d.identity, appURI: d.appURI, appName: "bench", session: "bench"}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close(ctx)
	s := &session{c: cl, ready: func() {}}
	if err := dv.prepare(ctx, s); err != nil {
		b.Fatal(err)
	}
	var ids []*ua.ReadValueID
	var idx []int
	for i, p := range dv.points {
		ids = append(ids, &ua.ReadValueID{NodeID: s.resolved(p), AttributeID: ua.AttributeIDValue, DataEncoding: &ua.QualifiedName{}})
		idx = append(idx, i)
	}
	var bad int
	emit := func(sc ferry.Scan) {
		for _, x := range sc.Samples {
			if !x.Quality.IsGood() {
				bad++
			}
		}
	}
	reads0 := testutil.ToFloat64(m.reads.WithLabelValues("plc"))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := dv.pollOnce(ctx, s, ids, idx, emit); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if bad > 0 {
		b.Fatalf("%d bad samples", bad)
	}
	b.ReportMetric((testutil.ToFloat64(m.reads.WithLabelValues("plc"))-reads0)/float64(b.N), "requests/scan")
	b.ReportMetric(float64(s.maxRead), "MaxNodesPerRead")
}
