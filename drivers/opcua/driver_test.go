package opcua

import (
	"math"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
)

// device returns a device with default settings; mod changes its config.
func testDevice(name, endpoint string, mod func(*Config), points ...Point) Device {
	var c Config
	c.SetDefaults()
	c.Endpoint = endpoint
	c.Interval = 100 * time.Millisecond
	c.Timeouts.Connect = 5 * time.Second
	// The in-process server's Close does not close its TCP connections,
	// so a client notices a stopped server by a request timeout.
	c.Timeouts.Request = time.Second
	c.Timeouts.Keepalive = time.Second
	if mod != nil {
		mod(&c)
	}
	return Device{Name: name, Config: c, Points: points}
}

func insecure(c *Config) { c.SecurityPolicy, c.AllowInsecure = "None", true }

func newDriver(t *testing.T, devs ...Device) *Driver {
	t.Helper()
	d, err := New(devs, Options{DataDir: t.TempDir(), Gateway: "gw-test"})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// typeCase is one value type the driver must carry.
type typeCase struct {
	name string
	in   any
	want ferry.Value
}

var sourceTime = time.Date(2024, 5, 6, 7, 8, 9, 123456700, time.UTC)

func typeCases() []typeCase {
	dt := time.Date(2023, 1, 2, 3, 4, 5, 600000000, time.UTC)
	return []typeCase{
		{"Boolean", true, ferry.BoolValue(true)},
		{"SByte", int8(-5), ferry.IntValue(-5)},
		{"Byte", uint8(200), ferry.UintValue(200)},
		{"Int16", int16(-300), ferry.IntValue(-300)},
		{"UInt16", uint16(60000), ferry.UintValue(60000)},
		{"Int32", int32(-70000), ferry.IntValue(-70000)},
		{"UInt32", uint32(4000000000), ferry.UintValue(4000000000)},
		{"Int64", int64(-1 << 40), ferry.IntValue(-1 << 40)},
		{"UInt64", uint64(math.MaxUint64 - 1), ferry.UintValue(math.MaxUint64 - 1)},
		{"Float", float32(0.1), ferry.FloatValue(0.1)},
		{"Double", 2.5e-3, ferry.FloatValue(2.5e-3)},
		{"String", "Kessel 1 — läuft", ferry.StringValue("Kessel 1 — läuft")},
		{"DateTime", dt, ferry.StringValue("2023-01-02T03:04:05.6Z")},
		{"LocalizedText", ua.NewLocalizedTextWithLocale("Betrieb", "de"), ferry.StringValue("Betrieb")},
		{"StatusCode", ua.StatusBadSensorFailure, ferry.StringValue("BadSensorFailure")},
	}
}

// TestTypes reads and subscribes every supported type and checks value,
// quality and source timestamp.
func TestTypes(t *testing.T) {
	for _, mode := range []string{"poll", "subscribe"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			srv := sharedServer(t, false)
			prefix := "Types" + mode + "."
			var points []Point
			for _, tc := range typeCases() {
				srv.add(sourceTime, prefix+tc.name, tc.in)
				points = append(points, Point{Name: tc.name, Node: srv.Node(prefix + tc.name)})
			}
			d := newDriver(t, testDevice("plc", srv.Endpoint(), func(c *Config) { insecure(c); c.Mode = mode }, points...))
			c := newCollector()
			runDriver(t, d, c)
			got := c.waitFor(t, 0, "every type", func(m map[string]ferry.Sample) bool { return len(m) == len(points) })
			for _, tc := range typeCases() {
				s := got[tc.name]
				if !s.Quality.IsGood() {
					t.Errorf("%s: quality %v, want good", tc.name, s.Quality)
				}
				if !s.Value.Equal(tc.want) {
					t.Errorf("%s: value %v (%v), want %v (%v)", tc.name, s.Value, s.Value.Kind(), tc.want, tc.want.Kind())
				}
				if !s.Time.Equal(sourceTime) {
					t.Errorf("%s: time %v, want the source timestamp %v", tc.name, s.Time, sourceTime)
				}
				if s.Device != "plc" {
					t.Errorf("%s: device %q", tc.name, s.Device)
				}
			}
			// A change arrives with its new source time.
			t2 := sourceTime.Add(time.Second)
			n := c.count()
			srv.Set(prefix+"Double", 7.25, t2)
			c.waitFor(t, n, "changed value", func(m map[string]ferry.Sample) bool {
				s, ok := m["Double"]
				return ok && s.Value.Equal(ferry.FloatValue(7.25)) && s.Time.Equal(t2)
			})
		})
	}
}
