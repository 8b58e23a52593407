package web

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

// FuzzStore feeds the store any sequence of samples (every kind, quality,
// NaN and infinities, clocks that jump back and forth) and reloads, and
// checks what the API would serve: it encodes, every sparkline has its
// length, and every bucket is empty in all three series or has finite
// min <= last <= max.
func FuzzStore(f *testing.F) {
	op := func(point, kind, quality byte, dt int16, bits uint64) []byte {
		b := []byte{point, kind, quality, 0, 0, 0, 0, 0, 0, 0, 0, 0}
		binary.LittleEndian.PutUint16(b[3:], uint16(dt))
		binary.LittleEndian.PutUint64(b[4:], bits)
		return b
	}
	cat := func(ops ...[]byte) []byte {
		var out []byte
		for _, o := range ops {
			out = append(out, o...)
		}
		return out
	}
	f.Add(cat(op(0, 1, 0, 1, math.Float64bits(61.5)), op(0, 1, 0, 3, math.Float64bits(70)), op(1, 4, 0, 0, 1)))
	f.Add(cat(op(0, 1, 0, 1, math.Float64bits(math.NaN())), op(0, 1, 1, -30, math.Float64bits(math.Inf(1))), op(3, 2, 2, 5, 7)))
	f.Add(cat(op(0, 1, 0, 10, 1), op(255, 0, 0, 0, 0), op(0, 1, 0, -32768, 2), op(0, 1, 0, 32767, 3), op(2, 5, 0, 1, 0)))
	f.Add(cat(op(4, 3, 0, 1, math.MaxUint64), op(1, 2, 0, 1, 1<<63), op(0, 0, 2, 1, 0)))

	alt := Catalog{
		Devices: []DeviceInfo{{Name: "env", Protocol: "mqtt"}},
		Points: []ferry.PointInfo{
			{Device: "env", Point: "humidity"},
			{Device: "press1", Point: "oil_temp"},
		},
	}
	devs := []string{"press1", "press1", "press1", "env", "ghost"}
	pts := []string{"oil_temp", "running", "label", "humidity", "x"}
	f.Fuzz(func(t *testing.T, data []byte) {
		clk := &testClock{t0}
		s := NewStore(testCatalog(), time.Second, 8, clk.Now)
		for len(data) >= 12 {
			o := data[:12]
			data = data[12:]
			if o[0] == 255 {
				if o[1]%2 == 0 {
					s.SetCatalog(alt)
				} else {
					s.SetCatalog(testCatalog())
				}
				continue
			}
			i := int(o[0]) % len(devs)
			dt := time.Duration(int16(binary.LittleEndian.Uint16(o[3:]))) * 100 * time.Millisecond
			bits := binary.LittleEndian.Uint64(o[4:])
			var v ferry.Value
			switch o[1] % 6 {
			case 1:
				v = ferry.FloatValue(math.Float64frombits(bits))
			case 2:
				v = ferry.IntValue(int64(bits))
			case 3:
				v = ferry.UintValue(bits)
			case 4:
				v = ferry.BoolValue(bits&1 == 1)
			case 5:
				v = ferry.StringValue(string(o[4:]))
			}
			q := ferry.Quality{Status: ferry.Status(o[2] % 4), Reason: "r"}
			clk.t = clk.t.Add(dt)
			s.Observe(&ferry.Scan{Device: devs[i], Time: clk.t, Samples: []ferry.Sample{{Device: devs[i], Point: pts[i], Value: v, Quality: q, Time: clk.t}}})
		}
		got, ok := s.Points("", true)
		if !ok {
			t.Fatal("Points(all) not ok")
		}
		if _, err := json.Marshal(got); err != nil {
			t.Fatalf("points do not encode: %v", err)
		}
		for _, p := range got {
			sp := p.Spark
			if sp == nil {
				continue
			}
			if len(sp.Min) != 8 || len(sp.Max) != 8 || len(sp.Last) != 8 {
				t.Fatalf("%s.%s: sparkline lengths %d %d %d", p.Device, p.Point, len(sp.Min), len(sp.Max), len(sp.Last))
			}
			for k := range sp.Last {
				mn, mx, l := sp.Min[k], sp.Max[k], sp.Last[k]
				empty := l != l
				if (mn != mn) != empty || (mx != mx) != empty {
					t.Fatalf("%s.%s bucket %d: min %v max %v last %v: partly empty", p.Device, p.Point, k, mn, mx, l)
				}
				if math.IsInf(float64(mn), 0) || math.IsInf(float64(mx), 0) || math.IsInf(float64(l), 0) {
					t.Fatalf("%s.%s bucket %d: min %v max %v last %v: infinite (JSON null in one series only)", p.Device, p.Point, k, mn, mx, l)
				}
				if !empty && (mn > l || l > mx) {
					t.Fatalf("%s.%s bucket %d: min %v max %v last %v", p.Device, p.Point, k, mn, mx, l)
				}
			}
		}
	})
}
