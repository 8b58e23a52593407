package opcua

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// BenchmarkWrite measures one command against the in-process gopcua server
// over security None: write (Attribute Write of a Double) + read back +
// compare, and a method call with two inputs and one output. The device's
// session also polls 100 nodes every 100ms meanwhile, as a live device
// would. It reports the latency's p50 and p99 besides ns/op.
func BenchmarkWrite(b *testing.B) {
	srv := testpeer.OPCUAServer(b, testpeer.UANamespace(testNS), testpeer.UANone(), testpeer.UAMethods())
	srv.AddWritable("Setpoint", 0.0)
	srv.AddMethod("i=85", srv.Node("Add"), func(in []*ua.Variant) *ua.CallMethodResult {
		a, _ := in[0].Value().(int32)
		c, _ := in[1].Value().(int32)
		return &ua.CallMethodResult{StatusCode: ua.StatusOK, OutputArguments: []*ua.Variant{ua.MustVariant(a + c)}}
	})
	points := []Point{{Name: "setpoint", Node: srv.Node("Setpoint"), Write: &ferry.WriteSpec{}}}
	for i := range 100 {
		name := "R" + string(rune('a'+i/26)) + string(rune('a'+i%26))
		srv.Add(sourceTime, name, float64(i))
		points = append(points, Point{Name: name, Node: srv.Node(name)})
	}
	dev := testDevice("plc", srv.Endpoint(), func(c *Config) {
		insecure(c)
		c.Mode = "poll"
		c.Interval = 100 * time.Millisecond
		c.Methods = []Method{{Name: "add", Object: "i=85", Method: srv.Node("Add"),
			Inputs:  []Argument{{Name: "a", Type: "Int32"}, {Name: "b", Type: "Int32"}},
			Outputs: []Argument{{Name: "sum", Type: "Int32"}}}}
	}, points...)
	d, err := New([]Device{dev}, Options{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx, func(ferry.Scan) {}); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(time.Minute)
	for !d.DeviceStatus()[0].Connected {
		if time.Now().After(deadline) {
			b.Fatal("device not connected")
		}
		time.Sleep(10 * time.Millisecond) // polling the driver's status: no event to wait on
	}

	run := func(b *testing.B, req func(i int) ferry.WriteRequest) {
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := range b.N {
			start := time.Now()
			if _, err := d.Write(ctx, req(i)); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
	b.Run("write+readback", func(b *testing.B) {
		run(b, func(i int) ferry.WriteRequest {
			return ferry.WriteRequest{Device: "plc", Point: "setpoint", Value: ferry.FloatValue(float64(i) + 0.5)}
		})
	})
	b.Run("call", func(b *testing.B) {
		run(b, func(i int) ferry.WriteRequest {
			return ferry.WriteRequest{Device: "plc", Point: "add", Args: []ferry.Value{ferry.IntValue(int64(i)), ferry.IntValue(1)}}
		})
	})
}
