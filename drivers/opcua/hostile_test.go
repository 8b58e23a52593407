package opcua

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"
	"testing"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// readResponseBody is an encoded ReadResponse service body (type id
// included) with a hand-made response header whose ServiceDiagnostics
// are diag, and results as raw encoded DataValues.
func readResponseBody(diag []byte, results ...[]byte) []byte {
	var b bytes.Buffer
	typeID, _ := ua.NewFourByteExpandedNodeID(0, id.ReadResponse_Encoding_DefaultBinary).Encode()
	b.Write(typeID)
	b.Write(make([]byte, 8+4+4)) // Timestamp, RequestHandle, ServiceResult Good
	b.Write(diag)
	b.Write([]byte{0xff, 0xff, 0xff, 0xff}) // StringTable: null
	b.Write([]byte{0, 0, 0})                // AdditionalHeader: empty
	binary.Write(&b, binary.LittleEndian, uint32(len(results)))
	for _, r := range results {
		b.Write(r)
	}
	b.Write([]byte{0xff, 0xff, 0xff, 0xff}) // DiagnosticInfos: null
	return b.Bytes()
}

func le32(v int32) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(v)) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// hostileCase is a crafted ReadResponse body gopcua v0.9.1 could not
// survive, and what it did.
type hostileCase struct {
	name, before string
	body         []byte
}

func hostileCases() []hostileCase {
	noDiag := []byte{0}
	nested := func(n int, b byte, end []byte) []byte { return append(bytes.Repeat([]byte{b}, n), end...) }
	return []hostileCase{
		// DataValue{Value} holding an Int32 array of length -2.
		{"variant array length -2", "reflect.MakeSlice panic in the receive goroutine: the process dies",
			readResponseBody(noDiag, cat([]byte{0x01, 0x86}, le32(-2)))},
		// An Int32 array of length 0 with 2^31-1 dimensions.
		{"variant dimension count 2^31-1", "make([]int32, 2^31-1): an 8 GiB allocation",
			readResponseBody(noDiag, cat([]byte{0x01, 0xc6}, le32(0), le32(0x7fffffff)))},
		// Dimensions 65536 x 65536 x 1 whose int32 product wraps to the
		// length 0.
		{"variant dimensions product wraps", "4 billion empty slices built: the receive goroutine spins for hours",
			readResponseBody(noDiag, cat([]byte{0x01, 0xc6}, le32(0), le32(3), le32(65536), le32(65536), le32(1)))},
		// A Variant of a Variant of ... 200000 deep, one byte a level.
		{"variants nested 200000 deep", "decoded recursively without a bound (a bigger message overflows the stack, which is fatal)",
			readResponseBody(noDiag, cat([]byte{0x01}, nested(200000, 0x18, []byte{0})))},
		// ServiceDiagnostics nesting InnerDiagnosticInfo 200000 deep.
		{"diagnostic info nested 200000 deep", "decoded recursively without a bound (a bigger message overflows the stack, which is fatal)",
			readResponseBody(nested(200000, 0x40, []byte{0}))},
	}
}

// hostileProxy sits between the driver and a real server (policy None)
// and, while armed, replaces the body of every ReadResponse with body.
// It is a fake by necessity: no real server sends these messages.
type hostileProxy struct {
	addr     string
	body     atomic.Pointer[[]byte]
	replaced atomic.Int64
}

func newHostileProxy(t *testing.T, backend string) *hostileProxy {
	p := &hostileProxy{}
	p.addr = testutil.ServeTCP(t, func(c net.Conn) {
		s, err := net.Dial("tcp", backend)
		if err != nil {
			return
		}
		defer s.Close()
		go func() {
			p.clientToServer(s, c, backend)
			s.Close()
		}()
		p.serverToClient(c, s)
	})
	if len(p.addr) != len(backend) {
		t.Fatalf("proxy address %s and server address %s differ in length: the URL rewrite needs them equal", p.addr, backend)
	}
	return p
}

// readChunk reads one UACP chunk.
func readChunk(r io.Reader) ([]byte, error) {
	hdr := make([]byte, 8)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, err
	}
	size := binary.LittleEndian.Uint32(hdr[4:])
	if size < 8 || size > 1<<24 {
		return nil, io.ErrUnexpectedEOF
	}
	chunk := append(hdr, make([]byte, size-8)...)
	_, err := io.ReadFull(r, chunk[8:])
	return chunk, err
}

// clientToServer copies the client's chunks, writing the server's address
// for the proxy's in the endpoint URLs (Hello, GetEndpoints,
// CreateSession): the gopcua server answers only for its own URLs. Both
// are loopback addresses with five-digit ports, so lengths are kept.
func (p *hostileProxy) clientToServer(s, c net.Conn, backend string) {
	for {
		chunk, err := readChunk(c)
		if err != nil {
			return
		}
		if _, err := s.Write(bytes.ReplaceAll(chunk, []byte(p.addr), []byte(backend))); err != nil {
			return
		}
	}
}

func (p *hostileProxy) arm(body []byte) { p.body.Store(&body) }
func (p *hostileProxy) disarm()         { p.body.Store(nil) }

// serverToClient copies the server's chunks, rewriting a final MSG chunk
// whose body is a ReadResponse (security None: no signature to keep).
func (p *hostileProxy) serverToClient(c, s net.Conn) {
	readResp, _ := ua.NewFourByteExpandedNodeID(0, id.ReadResponse_Encoding_DefaultBinary).Encode()
	for {
		chunk, err := readChunk(s)
		if err != nil {
			return
		}
		// 8 header, 4 channel id, 4 token id, 4 sequence number, 4 request id.
		if b := p.body.Load(); b != nil && string(chunk[:4]) == "MSGF" && len(chunk) > 28 && bytes.Equal(chunk[24:24+len(readResp)], readResp) {
			chunk = append(chunk[:24:24], *b...)
			binary.LittleEndian.PutUint32(chunk[4:], uint32(len(chunk)))
			p.replaced.Add(1)
		}
		if _, err := c.Write(chunk); err != nil {
			return
		}
	}
}

// TestHostileServer: a server sending crafted messages costs its device
// Bad quality, and the device recovers when the server behaves again; a
// second device on the same driver stays Good throughout, and the process
// lives (on gopcua v0.9.1 the first case killed the test binary).
func TestHostileServer(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t, false)
	srv.add(sourceTime, "HostileA", 1.5, "HostileB", 2.5)
	proxy := newHostileProxy(t, srv.Addr())
	poll := func(c *Config) { insecure(c); c.Mode = "poll" }
	d := newDriver(t,
		testDevice("victim", "opc.tcp://"+proxy.addr, poll, Point{Name: "a", Node: srv.Node("HostileA")}),
		testDevice("bystander", srv.Endpoint(), poll, Point{Name: "b", Node: srv.Node("HostileB")}))
	c := newCollector()
	runDriver(t, d, c)
	good := func(p string) func(map[string]ferry.Sample) bool {
		return func(m map[string]ferry.Sample) bool { s, ok := m[p]; return ok && s.Quality.IsGood() }
	}
	c.waitFor(t, 0, "both devices good", func(m map[string]ferry.Sample) bool { return good("a")(m) && good("b")(m) })

	for _, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			n := c.count()
			proxy.arm(tc.body)
			c.waitFor(t, n, "victim Bad", func(m map[string]ferry.Sample) bool {
				s, ok := m["a"]
				return ok && !s.Quality.IsGood()
			})
			if proxy.replaced.Load() == 0 {
				t.Fatal("no response was replaced")
			}
			st := d.DeviceStatus()[0]
			t.Logf("victim: %s (last error %q)", c.latest(n)["a"].Quality, st.LastError)
			n = c.count()
			c.waitFor(t, n, "bystander still good", good("b"))
			proxy.disarm()
			n = c.count()
			c.waitFor(t, n, "victim good again", good("a"))
		})
	}
}
