package mqtt

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/ferry-edge/ferry/internal/testutil"
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

// writeConn records the writes that reach it (each would be a syscall on
// a socket); fail makes them fail.
type writeConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
	data   bytes.Buffer
	fail   error
	closed bool
}

func (c *writeConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return 0, c.fail
	}
	c.writes++
	return c.data.Write(p)
}

func (c *writeConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

func (c *writeConn) SetWriteDeadline(time.Time) error { return nil }

func (c *writeConn) snapshot() (writes int, data []byte, closed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes, bytes.Clone(c.data.Bytes()), c.closed
}

// TestBufferedConnWrites: the PUBACKs of a group commit, written the way
// paho writes them (one Write a packet), reach the connection whole and
// in order, in far fewer writes; Close sends what is left (a DISCONNECT)
// and stops the flusher.
func TestBufferedConnWrites(t *testing.T) {
	wc := &writeConn{}
	before := runtime.NumGoroutine()
	c := newBufferedConn(wc)
	var want bytes.Buffer
	const rounds, burst = 50, 16
	for r := range rounds {
		for i := range burst {
			p := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
			p.MessageID = uint16(r*burst + i + 1)
			if err := p.Write(c); err != nil {
				t.Fatal(err)
			}
			if err := p.Write(&want); err != nil {
				t.Fatal(err)
			}
		}
		n := want.Len()
		testutil.WaitFor(t, 5*time.Second, "the burst sent", func() bool {
			_, data, _ := wc.snapshot()
			return len(data) == n
		})
	}
	d := packets.NewControlPacket(packets.Disconnect)
	if err := d.Write(c); err != nil {
		t.Fatal(err)
	}
	_ = d.Write(&want)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	writes, data, closed := wc.snapshot()
	if !bytes.Equal(data, want.Bytes()) {
		t.Fatalf("the connection got %d bytes that differ from the %d written", len(data), want.Len())
	}
	if !closed {
		t.Error("Close did not close the connection")
	}
	// Each burst of 16 in at most a few writes (the flusher may start
	// before the burst ends), not 16.
	if writes > rounds*burst/4 {
		t.Errorf("%d writes reached the connection for %d packets", writes, rounds*burst+1)
	}
	t.Logf("%d writes for %d packets", writes, rounds*burst+1)
	testutil.WaitFor(t, 5*time.Second, "the flusher stopped", func() bool { return runtime.NumGoroutine() <= before })
	if _, err := c.Write([]byte{1}); err == nil {
		t.Error("a Write after Close worked")
	}
}

// TestBufferedConnWriteError: a failed write closes the connection (so
// paho's reader sees it lost) and the next Write returns the error; a
// Write larger than the buffer is sent by the caller, in order.
func TestBufferedConnWriteError(t *testing.T) {
	wc := &writeConn{}
	c := newBufferedConn(wc)
	defer c.Close()
	big := bytes.Repeat([]byte{7}, connWriteBuffer+1)
	if _, err := c.Write([]byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Write(big); err != nil || n != len(big) {
		t.Fatalf("big write: %d %v", n, err)
	}
	_, data, _ := wc.snapshot()
	if len(data) != 3+len(big) || !bytes.Equal(data[:3], []byte{1, 2, 3}) {
		t.Fatalf("after the big write the connection has %d bytes starting %v", len(data), data[:min(3, len(data))])
	}
	boom := errors.New("broken pipe")
	wc.mu.Lock()
	wc.fail = boom
	wc.mu.Unlock()
	if _, err := c.Write([]byte{4}); err != nil {
		t.Fatalf("the write that is buffered: %v", err)
	}
	testutil.WaitFor(t, 5*time.Second, "the failure seen", func() bool {
		_, _, closed := wc.snapshot()
		return closed
	})
	if _, err := c.Write([]byte{5}); !errors.Is(err, boom) {
		t.Fatalf("the next Write: %v, want %v", err, boom)
	}
}
