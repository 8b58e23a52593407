package opcua

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// writeRig is a gopcua server with writable nodes (and, with methods, the
// kit's Call service) and a running driver of one device "plc" connected
// to it in poll mode.
type writeRig struct {
	srv *testpeer.UAServer
	d   *Driver
	m   *Metrics
}

// newWriteRig starts the server (opts added to security None and the test
// namespace), lets add create its nodes, and runs a driver with points
// (node "ns=…;s=<name>" each, from names) and methods. The poll interval is
// long: the reads a test counts are its own.
func newWriteRig(t *testing.T, add func(*testpeer.UAServer), points []Point, methods []Method, opts ...testpeer.UAOption) *writeRig {
	t.Helper()
	return newWriteRigEvery(t, time.Minute, add, points, methods, opts...)
}

// newWriteRigEvery is newWriteRig with another poll interval.
func newWriteRigEvery(t *testing.T, interval time.Duration, add func(*testpeer.UAServer), points []Point, methods []Method, opts ...testpeer.UAOption) *writeRig {
	t.Helper()
	srv := testpeer.OPCUAServer(t, append([]testpeer.UAOption{testpeer.UANamespace(testNS), testpeer.UANone()}, opts...)...)
	add(srv)
	for i := range points {
		if points[i].Node == "" {
			points[i].Node = srv.Node(points[i].Name)
		}
	}
	dev := testDevice("plc", srv.Endpoint(), func(c *Config) {
		insecure(c)
		c.Mode = "poll"
		c.Interval = interval
		c.Methods = methods
	}, points...)
	m := NewMetrics(nil)
	d, err := New([]Device{dev}, Options{DataDir: t.TempDir(), Gateway: "gw-test", Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	runDriver(t, d, newCollector())
	testutil.WaitFor(t, 30*time.Second, "device connected", func() bool { return d.DeviceStatus()[0].Connected })
	return &writeRig{srv: srv, d: d, m: m}
}

// serverValue is what the server holds for node name, read by a client of
// its own.
func (r *writeRig) serverValue(t *testing.T, name string) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dv, err := r.srv.Read(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if dv.Status != ua.StatusOK || dv.Value == nil {
		t.Fatalf("server read of %s: status %s", name, StatusName(dv.Status))
	}
	return dv.Value.Value()
}

func (r *writeRig) writesSent() float64 { return promtest.ToFloat64(r.m.writes.WithLabelValues("plc")) }

func (r *writeRig) write(point string, v ferry.Value) (ferry.WriteResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return r.d.Write(ctx, ferry.WriteRequest{Device: "plc", Point: point, Value: v})
}

var anyWrite = &ferry.WriteSpec{}

// writeCase is one built-in type written and read back.
type writeCase struct {
	name  string
	first any         // the node's value before the write (its type is the node's DataType)
	write ferry.Value // the command's value
	want  ferry.Value // the read back
	wire  any         // what the server holds after the write
}

func writeCases() []writeCase {
	dt := time.Date(2023, 1, 2, 3, 4, 5, 600000000, time.UTC)
	return []writeCase{
		{"Boolean", false, ferry.BoolValue(true), ferry.BoolValue(true), true},
		{"SByte", int8(0), ferry.IntValue(-5), ferry.IntValue(-5), int8(-5)},
		{"Byte", uint8(0), ferry.FloatValue(200), ferry.UintValue(200), uint8(200)},
		{"Int16", int16(0), ferry.IntValue(-300), ferry.IntValue(-300), int16(-300)},
		{"UInt16", uint16(0), ferry.UintValue(60000), ferry.UintValue(60000), uint16(60000)},
		{"Int32", int32(0), ferry.FloatValue(3.0), ferry.IntValue(3), int32(3)},
		{"UInt32", uint32(0), ferry.IntValue(4000000000), ferry.UintValue(4000000000), uint32(4000000000)},
		{"Int64", int64(0), ferry.IntValue(math.MinInt64), ferry.IntValue(math.MinInt64), int64(math.MinInt64)},
		{"UInt64", uint64(0), ferry.UintValue(math.MaxUint64), ferry.UintValue(math.MaxUint64), uint64(math.MaxUint64)},
		{"Float", float32(0), ferry.FloatValue(0.1), ferry.FloatValue(0.1), float32(0.1)},
		{"FloatFromInt", float32(0), ferry.IntValue(-16777216), ferry.FloatValue(-16777216), float32(-16777216)},
		{"Double", 0.0, ferry.FloatValue(2.5e-3), ferry.FloatValue(2.5e-3), 2.5e-3},
		{"DoubleFromUint", 0.0, ferry.UintValue(1 << 53), ferry.FloatValue(1 << 53), float64(1 << 53)},
		{"String", "", ferry.StringValue("Kessel 1 — läuft"), ferry.StringValue("Kessel 1 — läuft"), "Kessel 1 — läuft"},
		{"DateTime", time.Unix(0, 0).UTC(), ferry.StringValue("2023-01-02T03:04:05.6Z"), ferry.StringValue("2023-01-02T03:04:05.6Z"), dt},
		{"LocalizedText", ua.NewLocalizedText("Stopp"), ferry.StringValue("Betrieb"), ferry.StringValue("Betrieb"), "Betrieb"},
	}
}

// TestWriteTypes writes every supported built-in type to a writable node
// of the gopcua server and checks the read back and what the server holds
// (value and wire type), also for a node whose DataType is not a built-in
// type (gopcua's default variable): written as the type of its value.
func TestWriteTypes(t *testing.T) {
	cases := writeCases()
	var points []Point
	for _, tc := range cases {
		points = append(points, Point{Name: tc.name, Write: anyWrite})
	}
	points = append(points, Point{Name: "Untyped", Write: anyWrite})
	r := newWriteRig(t, func(srv *testpeer.UAServer) {
		for _, tc := range cases {
			srv.AddWritable(tc.name, tc.first)
		}
		srv.Add(time.Now(), "Untyped", int16(1))
	}, points, nil)

	for _, tc := range cases {
		res, err := r.write(tc.name, tc.write)
		if err != nil {
			t.Errorf("%s: write %v: %v", tc.name, tc.write, err)
			continue
		}
		if !res.ReadBack.Equal(tc.want) || res.Time.IsZero() {
			t.Errorf("%s: read back %v (%v) at %v, want %v (%v)", tc.name, res.ReadBack, res.ReadBack.Kind(), res.Time, tc.want, tc.want.Kind())
		}
		got := r.serverValue(t, tc.name)
		if lt, ok := got.(*ua.LocalizedText); ok {
			got = lt.Text
		}
		if tm, ok := got.(time.Time); ok {
			if !tm.Equal(tc.wire.(time.Time)) {
				t.Errorf("%s: server holds %v, want %v", tc.name, tm, tc.wire)
			}
			continue
		}
		if got != tc.wire {
			t.Errorf("%s: server holds %#v (%T), want %#v (%T)", tc.name, got, got, tc.wire, tc.wire)
		}
	}
	res, err := r.write("Untyped", ferry.FloatValue(-7))
	if err != nil || !res.ReadBack.Equal(ferry.IntValue(-7)) {
		t.Errorf("untyped node: %v, %v; want read back -7", res.ReadBack, err)
	}
	if got := r.serverValue(t, "Untyped"); got != int16(-7) {
		t.Errorf("untyped node: server holds %#v (%T), want int16(-7)", got, got)
	}
	if n := r.writesSent(); n != float64(len(cases)+1) {
		t.Errorf("ferry_opcua_writes_total = %v, want %d", n, len(cases)+1)
	}
}

// TestWriteRefused writes values that do not fit the node's type, and to
// points that are not writable: each is refused with ErrWriteRefused and a
// reason, no Write request is sent, and the server's value is unchanged.
func TestWriteRefused(t *testing.T) {
	nodes := map[string]any{
		"i32": int32(11), "i16": int16(12), "u32": uint32(13), "i64": int64(14), "u8": uint8(15),
		"f32": float32(1.5), "f64": 2.5, "flag": true, "text": "abc", "when": time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		"bytes": []byte{1, 2}, "arr": []int32{1, 2, 3}, "readonly_decl": int32(16),
	}
	var points []Point
	for name := range nodes {
		w := anyWrite
		if name == "readonly_decl" {
			w = nil
		}
		points = append(points, Point{Name: name, Write: w})
	}
	points = append(points, Point{Name: "ghost", Write: anyWrite}) // a node the server does not have
	points = append(points, Point{Name: "unknown_ns", Node: "nsu=urn:not-there;s=X", Write: anyWrite})
	r := newWriteRig(t, func(srv *testpeer.UAServer) {
		for name, v := range nodes {
			srv.AddWritable(name, v)
		}
	}, points, nil)

	tests := []struct {
		point  string
		v      ferry.Value
		reason string
	}{
		{"i32", ferry.FloatValue(3.5), "3.5 does not fit Int32 (not a whole number)"},
		{"i16", ferry.IntValue(70000), "70000 is out of range of Int16 (-32768..32767)"},
		{"i16", ferry.FloatValue(-32769), "out of range of Int16"},
		{"u32", ferry.IntValue(-1), "-1 is out of range of UInt32"},
		{"u8", ferry.FloatValue(256), "256 is out of range of Byte (0..255)"},
		{"i64", ferry.UintValue(1 << 63), "out of range of Int64"},
		{"i64", ferry.FloatValue(1e300), "does not fit Int64 (out of range)"},
		{"i32", ferry.FloatValue(math.NaN()), "not a finite number"},
		{"i32", ferry.BoolValue(true), "true does not fit Int32 (not a number)"},
		{"i32", ferry.StringValue("7"), "does not fit Int32 (not a number)"},
		{"f32", ferry.FloatValue(0.123456789), "0.123456789 does not fit Float (a Float would hold 0.12345679)"},
		{"f32", ferry.IntValue(16777217), "a Float cannot hold this integer exactly"},
		{"f32", ferry.FloatValue(1e39), "beyond the range of a Float"},
		{"f64", ferry.IntValue(1<<53 + 1), "a Double cannot hold this integer exactly"},
		{"f64", ferry.FloatValue(math.Inf(1)), "not a finite number"},
		{"f64", ferry.StringValue("2.5"), "not a number"},
		{"flag", ferry.IntValue(1), "1 (int) cannot be written to a Boolean node"},
		{"text", ferry.IntValue(1), "cannot be written to a String node"},
		{"when", ferry.StringValue("yesterday"), `"yesterday" is not an RFC 3339 time`},
		{"when", ferry.StringValue("2023-01-02T03:04:05.123456789Z"), "finer than a DateTime holds"},
		{"bytes", ferry.StringValue("AQI="), "data type ByteString cannot be written by ferry"},
		{"arr", ferry.IntValue(1), "array value"},
		{"readonly_decl", ferry.IntValue(1), "not declared writable"},
		{"ghost", ferry.IntValue(1), "BadNodeIdUnknown"},
		{"unknown_ns", ferry.IntValue(1), "unknown namespace"},
	}
	for _, tt := range tests {
		_, err := r.write(tt.point, tt.v)
		switch {
		case !errors.Is(err, ferry.ErrWriteRefused):
			t.Errorf("%s ← %v: error %v, want ErrWriteRefused", tt.point, tt.v, err)
		case !strings.Contains(err.Error(), tt.reason):
			t.Errorf("%s ← %v: error %q does not say %q", tt.point, tt.v, err, tt.reason)
		}
	}
	if n := r.writesSent(); n != 0 {
		t.Errorf("%v Write requests sent, want none", n)
	}
	for name, v := range nodes {
		if name == "bytes" || name == "arr" {
			continue
		}
		got := r.serverValue(t, name)
		if tm, ok := v.(time.Time); ok {
			if !got.(time.Time).Equal(tm) {
				t.Errorf("%s: server holds %v, want it unchanged %v", name, got, v)
			}
			continue
		}
		if got != v {
			t.Errorf("%s: server holds %#v, want it unchanged %#v", name, got, v)
		}
	}

	ctx := context.Background()
	if _, err := r.d.Write(ctx, ferry.WriteRequest{Device: "plc", Point: "nope", Value: ferry.IntValue(1)}); !errors.Is(err, ferry.ErrUnknownPoint) {
		t.Errorf("unknown point: %v, want ErrUnknownPoint", err)
	}
	if _, err := r.d.Write(ctx, ferry.WriteRequest{Device: "press", Point: "i32", Value: ferry.IntValue(1)}); !errors.Is(err, ferry.ErrUnknownDevice) {
		t.Errorf("unknown device: %v, want ErrUnknownDevice", err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := r.d.Write(done, ferry.WriteRequest{Device: "plc", Point: "i32", Value: ferry.IntValue(1)}); !errors.Is(err, ferry.ErrWriteRefused) {
		t.Errorf("ended context: %v, want ErrWriteRefused", err)
	}
}

// TestWriteBadStatus writes a node the server does not let ferry write:
// the status the server answers is the reason (not a refusal: the request
// went out; not unknown: the server answered), and the value is unchanged.
func TestWriteBadStatus(t *testing.T) {
	r := newWriteRig(t, func(srv *testpeer.UAServer) {
		srv.AddReadOnly("ro", int32(5))
	}, []Point{{Name: "ro", Write: anyWrite}}, nil)
	_, err := r.write("ro", ferry.IntValue(6))
	if err == nil || errors.Is(err, ferry.ErrWriteRefused) || errors.Is(err, ferry.ErrWriteUnknown) || errors.Is(err, ferry.ErrReadBackMismatch) {
		t.Fatalf("write of a read-only node: %v, want the server's status", err)
	}
	// gopcua v0.9.1 answers BadUserAccessDenied for a node whose access
	// level lacks CurrentWrite (a server following Part 4 may say
	// BadNotWritable); the driver passes on whichever it gets.
	if !strings.Contains(err.Error(), "BadUserAccessDenied") {
		t.Fatalf("error %q does not name the status BadUserAccessDenied", err)
	}
	if got := r.serverValue(t, "ro"); got != int32(5) {
		t.Fatalf("server holds %v, want 5", got)
	}
	if n := promtest.ToFloat64(r.m.writeErrs.WithLabelValues("plc", "bad_user_access_denied")); n != 1 {
		t.Fatalf("write errors BadUserAccessDenied = %v, want 1", n)
	}
}

// TestWriteNotConnected writes to a device whose server is down: refused
// at once (not queued, not after a timeout), with the reason.
func TestWriteNotConnected(t *testing.T) {
	addr := testpeer.Reserve(t)
	dev := testDevice("plc", "opc.tcp://"+addr.Addr(), insecure, Point{Name: "sp", Node: "ns=2;s=Setpoint", Write: anyWrite})
	d := newDriver(t, dev)
	runDriver(t, d, newCollector())
	start := time.Now()
	_, err := d.Write(context.Background(), ferry.WriteRequest{Device: "plc", Point: "sp", Value: ferry.IntValue(1)})
	if !errors.Is(err, ferry.ErrWriteRefused) || !strings.Contains(err.Error(), "device plc is not connected") {
		t.Fatalf("write to a device that is down: %v, want refused: not connected", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("refusal took %v; it must not wait for the connection", took)
	}
}

// TestWriteAfterReconnect checks that writes use the session of the day:
// after the server restarts (a new session, node types learned again),
// a write works again.
func TestWriteAfterReconnect(t *testing.T) {
	r := newWriteRigEvery(t, 200*time.Millisecond, func(srv *testpeer.UAServer) { srv.AddWritable("sp", 1.5) }, []Point{{Name: "sp", Write: anyWrite}}, nil)
	if _, err := r.write("sp", ferry.FloatValue(2.5)); err != nil {
		t.Fatal(err)
	}
	r.srv.Stop()
	// Refused at once while the session is gone: the client knows before
	// the driver's next poll does.
	testutil.Eventually(t, 30*time.Second, "writes refused while the server is down", func() error {
		_, err := r.write("sp", ferry.FloatValue(9))
		if !errors.Is(err, ferry.ErrWriteRefused) || !strings.Contains(err.Error(), "not connected") {
			return fmt.Errorf("write: %v, want refused: not connected", err)
		}
		return nil
	})
	r.srv.Restart(t, 0)
	testutil.Eventually(t, 30*time.Second, "a write in the new session", func() error {
		_, err := r.write("sp", ferry.FloatValue(3.5))
		return err
	})
	if got := r.serverValue(t, "sp"); got != 3.5 {
		t.Fatalf("server holds %v after the restart, want 3.5", got)
	}
}

// TestWriteTimeoutUnknown makes the server busy (a method call blocks its
// one request loop) while a write is sent: the write times out and is
// reported ErrWriteUnknown, not failed — and rightly so: once the server
// is free, it applies the write the client gave up on.
func TestWriteTimeoutUnknown(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	r := newWriteRig(t, func(srv *testpeer.UAServer) {
		srv.AddWritable("sp", int32(1))
		srv.AddMethod("ns=0;i=85", srv.Node("Hold"), func([]*ua.Variant) *ua.CallMethodResult {
			entered <- struct{}{}
			<-release
			return &ua.CallMethodResult{StatusCode: ua.StatusOK}
		})
	}, []Point{{Name: "sp", Write: anyWrite}}, []Method{{Name: "hold", Object: "i=85", Method: "nsu=" + testNS + ";s=Hold"}},
		testpeer.UAMethods())
	var once bool
	defer func() {
		if !once {
			close(release)
		}
	}()
	// Learn the node's type first, so that the write below is one Write.
	if _, err := r.write("sp", ferry.IntValue(2)); err != nil {
		t.Fatal(err)
	}
	holdErr := make(chan error, 1)
	go func() {
		_, err := r.d.Write(context.Background(), ferry.WriteRequest{Device: "plc", Point: "hold"})
		holdErr <- err
	}()
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the blocking method was not called")
	}
	_, err := r.write("sp", ferry.IntValue(3))
	if !errors.Is(err, ferry.ErrWriteUnknown) {
		t.Fatalf("write to a server that does not answer: %v, want ErrWriteUnknown", err)
	}
	if err := <-holdErr; !errors.Is(err, ferry.ErrWriteUnknown) {
		t.Fatalf("call that got no answer: %v, want ErrWriteUnknown", err)
	}
	once = true
	close(release)
	testutil.Eventually(t, 30*time.Second, "the unanswered write applied", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		dv, err := r.srv.Read(ctx, "sp")
		if err != nil {
			return err
		}
		if v := dv.Value.Value(); v != int32(3) {
			return errors.New("server holds " + ferry.IntValue(int64(v.(int32))).String())
		}
		return nil
	})
}

// TestToVariantEdges checks the conversions at the edges of each range.
func TestToVariantEdges(t *testing.T) {
	tests := []struct {
		v    ferry.Value
		t    ua.TypeID
		want any // nil: refused
	}{
		{ferry.IntValue(-128), ua.TypeIDSByte, int8(-128)},
		{ferry.IntValue(-129), ua.TypeIDSByte, nil},
		{ferry.IntValue(127), ua.TypeIDSByte, int8(127)},
		{ferry.FloatValue(math.Copysign(0, -1)), ua.TypeIDByte, uint8(0)},
		{ferry.IntValue(math.MinInt32), ua.TypeIDInt32, int32(math.MinInt32)},
		{ferry.IntValue(math.MaxInt32 + 1), ua.TypeIDInt32, nil},
		{ferry.FloatValue(math.MaxUint32), ua.TypeIDUint32, uint32(math.MaxUint32)},
		{ferry.FloatValue(-9.223372036854775808e18), ua.TypeIDInt64, int64(math.MinInt64)},
		{ferry.FloatValue(9.223372036854775808e18), ua.TypeIDInt64, nil},
		{ferry.FloatValue(1.8446744073709552e19), ua.TypeIDUint64, nil},
		{ferry.UintValue(math.MaxUint64), ua.TypeIDDouble, nil},
		{ferry.IntValue(-1 << 53), ua.TypeIDDouble, float64(-1 << 53)},
		{ferry.FloatValue(3.4028235e38), ua.TypeIDFloat, float32(math.MaxFloat32)}, // shortest decimal form, not exact
		{ferry.FloatValue(3.4028234663852886e38), ua.TypeIDFloat, float32(math.MaxFloat32)},
		{ferry.FloatValue(0.1000000001), ua.TypeIDFloat, nil},
		{ferry.FloatValue(1e-45), ua.TypeIDFloat, float32(1e-45)},
		{ferry.StringValue("2023-01-02T03:04:05.1234567+02:00"), ua.TypeIDDateTime, time.Date(2023, 1, 2, 1, 4, 5, 123456700, time.UTC)},
		{ferry.StringValue("1600-12-31T00:00:00Z"), ua.TypeIDDateTime, nil},
		{ferry.StringValue("x"), ua.TypeIDGUID, nil},
	}
	for _, tt := range tests {
		got, reason := toVariant(tt.v, tt.t)
		switch {
		case tt.want == nil && reason == "":
			t.Errorf("%v to %s: %v, want refused", tt.v, typeName(tt.t), got.Value())
		case tt.want != nil && reason != "":
			t.Errorf("%v to %s: refused (%s), want %v", tt.v, typeName(tt.t), reason, tt.want)
		case tt.want != nil:
			if tm, ok := tt.want.(time.Time); ok {
				if !got.Value().(time.Time).Equal(tm) {
					t.Errorf("%v to DateTime: %v, want %v", tt.v, got.Value(), tm)
				}
			} else if got.Value() != tt.want {
				t.Errorf("%v to %s: %#v, want %#v", tt.v, typeName(tt.t), got.Value(), tt.want)
			}
		}
	}
}

// TestWriteReadBackMismatch writes to a server that keeps another value
// than the one written (it clamps the setpoint at 50, as a PLC may): the
// write is Good, the read back differs, and the command fails with
// ErrReadBackMismatch and the value seen.
func TestWriteReadBackMismatch(t *testing.T) {
	clamp := testpeer.UAWriteFilter(func(node string, v *ua.DataValue) *ua.DataValue {
		if f, ok := v.Value.Value().(float64); ok && strings.HasSuffix(node, ";s=sp") && f > 50 {
			return &ua.DataValue{EncodingMask: ua.DataValueValue, Value: ua.MustVariant(50.0)}
		}
		return v
	})
	r := newWriteRig(t, func(srv *testpeer.UAServer) { srv.AddWritable("sp", 10.0) }, []Point{{Name: "sp", Write: anyWrite}}, nil, clamp)
	if res, err := r.write("sp", ferry.FloatValue(40)); err != nil || !res.ReadBack.Equal(ferry.FloatValue(40)) {
		t.Fatalf("write 40: %v, %v", res.ReadBack, err)
	}
	res, err := r.write("sp", ferry.FloatValue(80))
	if !errors.Is(err, ferry.ErrReadBackMismatch) || !res.ReadBack.Equal(ferry.FloatValue(50)) {
		t.Fatalf("write 80 to a server that keeps 50: %v, read back %v; want ErrReadBackMismatch, 50", err, res.ReadBack)
	}
	if !strings.Contains(err.Error(), "wrote 80, read back 50") {
		t.Fatalf("error %q does not say what was written and seen", err)
	}
}

// TestWriteSubscribed writes a point of a device in subscribe mode: the
// write uses the subscription's session, and the change it makes comes
// back as a notification like any other.
//
// gopcua v0.9.1's server reads a monitored node's first value in a
// goroutine of its own (server/monitored_item_service.go:232) while its
// Write stores values unsynchronised (server/node.go:212): a write racing
// that first read is a data race inside the server. So the test writes
// only after the first value arrived, and the other write tests poll.
func TestWriteSubscribed(t *testing.T) {
	srv := testpeer.OPCUAServer(t, testpeer.UANamespace(testNS), testpeer.UANone())
	srv.AddWritable("sp", int16(1))
	d := newDriver(t, testDevice("plc", srv.Endpoint(), func(c *Config) { insecure(c); c.Interval = 50 * time.Millisecond },
		Point{Name: "sp", Node: srv.Node("sp"), Write: anyWrite}))
	c := newCollector()
	runDriver(t, d, c)
	c.waitFor(t, 0, "first value", func(m map[string]ferry.Sample) bool { return m["sp"].Value.Equal(ferry.IntValue(1)) })
	n := c.count()
	res, err := d.Write(context.Background(), ferry.WriteRequest{Device: "plc", Point: "sp", Value: ferry.FloatValue(-12)})
	if err != nil || !res.ReadBack.Equal(ferry.IntValue(-12)) {
		t.Fatalf("write: %v, %v", res.ReadBack, err)
	}
	c.waitFor(t, n, "the written value notified", func(m map[string]ferry.Sample) bool {
		return m["sp"].Value.Equal(ferry.IntValue(-12)) && m["sp"].Quality.IsGood()
	})
}

// TestWriteSecure writes over a signed and encrypted session with a user
// name login: the write takes the session's security as reads do.
func TestWriteSecure(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t, true)
	srv.AddWritable("WriteSecure.sp", 1.0)
	dataDir := t.TempDir()
	trustServer(t, dataDir, srv)
	dev := testDevice("plc", srv.Endpoint(), func(c *Config) {
		c.Auth = Auth{Username: "operator", Password: "s3cret"}
		c.Mode = "poll" // see TestWriteSubscribed
	}, Point{Name: "sp", Node: srv.Node("WriteSecure.sp"), Write: anyWrite})
	d, err := New([]Device{dev}, Options{DataDir: dataDir, Gateway: "gw1"})
	if err != nil {
		t.Fatal(err)
	}
	runDriver(t, d, newCollector())
	testutil.WaitFor(t, 30*time.Second, "device connected", func() bool { return d.DeviceStatus()[0].Connected })
	if s := d.devs[0].liveSession(); s == nil || s.mode != ua.MessageSecurityModeSignAndEncrypt {
		t.Fatalf("session %+v, want SignAndEncrypt", s)
	}
	res, err := d.Write(context.Background(), ferry.WriteRequest{Device: "plc", Point: "sp", Value: ferry.FloatValue(2.25)})
	if err != nil || !res.ReadBack.Equal(ferry.FloatValue(2.25)) {
		t.Fatalf("secure write: %v, %v", res.ReadBack, err)
	}
}
