package modbus

import (
	"context"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

// BenchmarkDecode decodes full 125-register responses into samples (the
// driver's hot path after the network): ns per point, no allocations.
func BenchmarkDecode(b *testing.B) {
	cases := []struct {
		name   string
		points func() []Point
	}{
		{"float32", func() []Point {
			var ps []Point
			for a := 0; a+1 < 125; a += 2 {
				ps = append(ps, hr("f"+itoa(a), uint16(a), "float32"))
			}
			return ps
		}},
		{"mixed", func() []Point {
			var ps []Point
			types := []string{"uint16", "int16", "int32", "uint32", "float32", "int64", "float64"}
			for a, i := 0, 0; a < 120; i++ {
				p := hr("p"+itoa(i), uint16(a), types[i%len(types)])
				if i%7 == 4 {
					p.Order = "CDAB"
				}
				if i%5 == 0 {
					p.Scale = 0.1
				}
				ps = append(ps, p)
				a += typeInfo[p.Type].regs
			}
			return ps
		}},
		{"string", func() []Point {
			p := hr("name", 0, "string")
			p.Length = 16
			return []Point{p}
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			points := c.points()
			drv, err := New([]Device{dev("plc", "tcp://plc", 1, time.Second, points...)}, Options{})
			if err != nil {
				b.Fatal(err)
			}
			d := drv.devices[0]
			if len(d.plan) != 1 {
				b.Fatalf("%d requests", len(d.plan))
			}
			r := d.plan[0]
			data := make([]byte, 2*r.count())
			for i := range data {
				data[i] = byte(i*7 + 0x40)
			}
			d.begin(time.Now())
			now := time.Now()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				d.fill(r, data, now)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(points)), "ns/point")
			for _, s := range d.poll.samples {
				if !s.Quality.IsGood() {
					b.Fatalf("%s: %v", s.Point, s.Quality)
				}
			}
		})
	}
}

// BenchmarkScan1000 polls 1000 float32 points (2000 registers: 16
// requests) from the in-process Modbus TCP server, back to back.
func BenchmarkScan1000(b *testing.B) {
	bk := newBank()
	bk.quiet = true
	bk.fill(1, 0, 2000, func(a int) uint16 { return uint16(a) })
	srv := startServer(b, bk)
	var points []Point
	for a := 0; a < 2000; a += 2 {
		points = append(points, hr("p"+itoa(a), uint16(a), "float32"))
	}
	drv, err := New([]Device{dev("plc", srv.URL(), 1, time.Second, points...)}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	l, d := drv.links[0], drv.devices[0]
	l.newHandler()
	defer l.closeConn()
	var last ferry.Scan
	emit := func(s ferry.Scan) { last = s }
	ctx := context.Background()
	poll := func() {
		d.begin(time.Now())
		for d.poll != nil {
			l.step(ctx, d, emit)
		}
	}
	poll() // connect
	if !allGood(last) {
		b.Fatalf("scan not good: %v", last.Samples[0].Quality)
	}
	reqs := len(d.plan)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		poll()
	}
	s := b.Elapsed().Seconds()
	b.ReportMetric(float64(reqs*b.N)/s, "requests/s")
	b.ReportMetric(float64(len(points)*b.N)/s, "points/s")
	if !allGood(last) {
		b.Fatalf("scan not good: %v", last.Samples[0].Quality)
	}
}
