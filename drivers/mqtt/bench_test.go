package mqtt

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// A JSON payload of 10 points and a timestamp, like a sensor gateway's.
const benchPayload = `{"ts":"2024-05-06T07:08:09.123Z","temp":21.5,"hum":40.25,"pressure":1013.2,` +
	`"env":{"co2":412,"voc":0.31},"line":{"speed":12.5,"count":123456},"state":"RUN",` +
	`"alarm":false,"readings":[{"value":3.14}]}`

func benchDevice(broker string, qos uint8) Device {
	d := jsonDevice("bench", broker, "bench/t",
		Point{Name: "temp", Path: "temp"}, Point{Name: "hum", Path: "hum"},
		Point{Name: "pressure", Path: "pressure"}, Point{Name: "co2", Path: "env.co2"},
		Point{Name: "voc", Path: "env.voc"}, Point{Name: "speed", Path: "line.speed"},
		Point{Name: "count", Path: "line.count"}, Point{Name: "state", Path: "state"},
		Point{Name: "alarm", Path: "alarm"}, Point{Name: "r0", Path: "readings[0].value"})
	d.Config.QoS = qos
	d.Config.Time = Time{Path: "ts", Layout: LayoutRFC3339}
	return d
}

// BenchmarkBrokerJSON10 measures messages through an in-process broker,
// paho and the driver, with every scan committed at once: QoS 0, and QoS 1
// with its acknowledgement after the commit. allocs/op counts every
// goroutine of the process (broker, paho, driver) per message.
func BenchmarkBrokerJSON10(b *testing.B) {
	for _, qos := range []uint8{0, 1} {
		b.Run(fmt.Sprintf("qos%d", qos), func(b *testing.B) {
			br := testpeer.Broker(b)
			var got atomic.Int64
			emit := func(s ferry.Scan) {
				if len(s.Samples) != 10 || !s.Samples[0].Quality.IsGood() {
					b.Errorf("scan %+v", s)
				}
				got.Add(1)
				s.Finish(nil)
			}
			opts := testOptions(nil)
			opts.Backoff.Min = 100 * time.Millisecond
			r := start(b, []Device{benchDevice(br.URL(), qos)}, opts, emit)
			r.waitSubscribed(b, br, 1)
			payload := []byte(benchPayload)
			const window = 512 // keep the broker's queue for the client short
			b.ReportAllocs()
			b.ResetTimer()
			t0 := time.Now()
			for i := 0; i < b.N; i++ {
				for int64(i)-got.Load() > window {
					time.Sleep(50 * time.Microsecond)
				}
				if err := br.Server().Publish("bench/t", payload, false, qos); err != nil {
					b.Fatal(err)
				}
			}
			deadline := time.Now().Add(30 * time.Second)
			for got.Load() < int64(b.N) {
				if time.Now().After(deadline) {
					b.Fatalf("received %d of %d", got.Load(), b.N)
				}
				time.Sleep(50 * time.Microsecond)
			}
			el := time.Since(t0)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
			if qos == 1 {
				waitFor(b, "every QoS 1 message acknowledged", time.Until(deadline), func() bool { return br.Inflight(r.d.ClientID()) == 0 })
			}
			r.stop(b)
		})
	}
}

// benchMsg is a paho.Message for the decode benchmark.
type benchMsg struct {
	topic   string
	payload []byte
	qos     byte
}

func (m *benchMsg) Duplicate() bool   { return false }
func (m *benchMsg) Qos() byte         { return m.qos }
func (m *benchMsg) Retained() bool    { return false }
func (m *benchMsg) Topic() string     { return m.topic }
func (m *benchMsg) MessageID() uint16 { return 1 }
func (m *benchMsg) Payload() []byte   { return m.payload }
func (m *benchMsg) Ack()              {}

// BenchmarkHandleJSON10 measures the driver's own work per message (route,
// decode 10 points, key, ack bookkeeping), without broker and network.
func BenchmarkHandleJSON10(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos%d", qos), func(b *testing.B) {
			d, err := New([]Device{benchDevice("tcp://127.0.0.1:1883", qos)}, testOptions(nil))
			if err != nil {
				b.Fatal(err)
			}
			s := &session{d: d, emit: func(sc ferry.Scan) { sc.Finish(nil) }, acks: newAckQueue(d.cm)}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				var acked atomic.Bool
				s.acks.run(stop, func() {}, &acked)
			}()
			m := &benchMsg{topic: "bench/t", payload: []byte(benchPayload), qos: qos}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.onMessage(nil, m)
			}
			b.StopTimer()
			close(stop)
			wg.Wait()
		})
	}
}
