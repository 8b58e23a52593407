package uplink

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
)

// proxy is a TCP proxy that can lose the server's replies (PubAcks) and
// cut or refuse connections: the network faults a gateway sees.
type proxy struct {
	ln       net.Listener
	target   string
	dropDown atomic.Bool // discard what the server sends
	refuse   atomic.Bool // close new connections at once
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) URL() string { return "nats://" + p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.refuse.Load() {
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			io.Copy(s, c)
			s.Close()
		}()
		go func() {
			defer p.wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := s.Read(buf)
				if n > 0 && !p.dropDown.Load() {
					if _, werr := c.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
		}()
	}
}

// cut closes every proxied connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestReconcileAfterLongOutage loses the PubAcks of records the stream
// stored, then keeps the link down longer than the stream's duplicate
// window. Sent again, the records would be stored twice; the uplink finds
// them in the stream instead and sends only what is missing.
func TestReconcileAfterLongOutage(t *testing.T) {
	srv := startServer(t, nil)
	_, js := jsClient(t, srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const window = time.Second
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FERRY", Subjects: []string{"ferry.>"}, Duplicates: window}); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, srv.URL[len("nats://"):])
	src := newMemSource("gw1")
	reg := prometheus.NewRegistry()
	cfg := testConfig(p.URL())
	cfg.CreateStream = false
	cfg.AckTimeout = 300 * time.Millisecond
	cfg.ConnectTimeout = 500 * time.Millisecond
	cfg.DuplicateWindow = window
	u := newTestUplink(t, cfg, src, reg)
	runUplink(t, u, src)
	for i := range 5 {
		src.addScans("v", "press3", scan("press3", time.Now(), 3, float64(i)))
	}
	src.waitEmpty(t, 10*time.Second)

	// The server keeps storing; its answers are lost.
	p.dropDown.Store(true)
	var lost []ferry.Record
	for i := range 20 {
		lost = append(lost, src.addScans("v", "press3", scan("press3", time.Now(), 3, float64(i))))
	}
	lost = append(lost, src.addAlert("v", alert(1)))
	waitFor(t, 10*time.Second, "publishes timed out", func() bool {
		return metric(t, reg, "ferry_uplink_errors_total", "reason", "timeout") >= float64(len(lost))
	})
	// The link goes down for longer than the duplicate window.
	p.refuse.Store(true)
	p.cut()
	time.Sleep(2 * window)
	p.dropDown.Store(false)
	p.refuse.Store(false)
	after := src.addScans("v", "env", scan("env", time.Now(), 2, 1))
	src.waitEmpty(t, 15*time.Second)

	checkExactlyOnce(t, streamMsgs(t, js, "FERRY"), src.records())
	if got := metric(t, reg, "ferry_uplink_reconciled_total"); got != float64(len(lost)) {
		t.Errorf("reconciled_total = %v, want %d", got, len(lost))
	}
	_ = after
}
