package mqtt

import (
	"bytes"
	"fmt"
	"net"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// countingConn serves a fixed byte stream and counts the reads that reach
// it (each would be a syscall on a socket).
type countingConn struct {
	net.Conn
	data  *bytes.Reader
	reads int
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads++
	return c.data.Read(p)
}

// TestBufferedConnReads reads a burst of PUBLISH packets the way paho does
// (packets.ReadPacket): through bufferedConn every packet comes out whole
// and in order, with one read of the connection for the burst instead of
// four a packet.
func TestBufferedConnReads(t *testing.T) {
	var stream bytes.Buffer
	const n = 10
	for i := range n {
		p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
		p.Qos, p.MessageID, p.TopicName = 1, uint16(i+1), "bench/env"
		p.Payload = costLikePayload(i)
		if err := p.Write(&stream); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name     string
		buffered bool
		maxReads int
	}{{"bare", false, 4 * n}, {"buffered", true, 2}} {
		t.Run(c.name, func(t *testing.T) {
			cc := &countingConn{data: bytes.NewReader(stream.Bytes())}
			var conn net.Conn = cc
			if c.buffered {
				conn = newBufferedConn(cc)
			}
			for i := range n {
				cp, err := packets.ReadPacket(conn)
				if err != nil {
					t.Fatalf("packet %d: %v", i, err)
				}
				p, ok := cp.(*packets.PublishPacket)
				if !ok || p.MessageID != uint16(i+1) || !bytes.Equal(p.Payload, costLikePayload(i)) {
					t.Fatalf("packet %d: got %v", i, cp)
				}
			}
			if cc.reads > c.maxReads {
				t.Errorf("%d reads of the connection for %d packets, want at most %d", cc.reads, n, c.maxReads)
			}
			t.Logf("%s: %d reads for %d packets", c.name, cc.reads, n)
		})
	}
}

// costLikePayload is a JSON message of 50 numeric fields, as in the cost
// bench.
func costLikePayload(seq int) []byte {
	b := fmt.Appendf(nil, `{"seq":%d`, seq)
	for i := range 50 {
		b = fmt.Appendf(b, `,"f%02d":%.3f`, i, 100*float64(i+1)+float64(seq)/7)
	}
	return append(b, '}')
}
