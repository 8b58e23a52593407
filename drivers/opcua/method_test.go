package opcua

import (
	"math"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

// TestValidateWrite checks the `write:` of a point and the `methods:` of a
// device: what is refused names its field path.
func TestValidateWrite(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	idx := func(i int) *int { return &i }
	setpoint := Method{Name: "start_recipe", Object: "ns=2;s=Line1", Method: "ns=2;s=Line1.StartRecipe",
		Inputs: []Argument{{Name: "recipe", Type: "String"}, {Name: "batch", Type: "UInt32"}}, Outputs: []Argument{{Name: "ok", Type: "Boolean"}}}
	tests := []struct {
		name    string
		mod     func(*Device)
		wantErr string // substring; "" = valid
	}{
		{"write limits", func(d *Device) { d.Points[0].Write = &ferry.WriteSpec{Min: f(0), Max: f(10), RateLimit: time.Second} }, ""},
		{"write allowed", func(d *Device) { d.Points[0].Write = &ferry.WriteSpec{Allowed: []string{"1", "2"}} }, ""},
		{"write empty", func(d *Device) { d.Points[0].Write = &ferry.WriteSpec{} }, ""},
		{"method", func(d *Device) { d.Config.Methods = []Method{setpoint} }, ""},
		{"method without arguments", func(d *Device) { d.Config.Methods = []Method{{Name: "reset", Object: "i=85", Method: "ns=2;i=7"}} }, ""},

		{"write with index", func(d *Device) { d.Points[0].Index = idx(1); d.Points[0].Write = &ferry.WriteSpec{} }, "points[0].write: a point with index cannot be written"},
		{"min above max", func(d *Device) { d.Points[0].Write = &ferry.WriteSpec{Min: f(5), Max: f(1)} }, "points[0].write.min: 5 is above max 1"},
		{"NaN max", func(d *Device) { d.Points[0].Write = &ferry.WriteSpec{Max: f(math.NaN())} }, "points[0].write.max: must be a finite number"},
		{"negative rate", func(d *Device) { d.Points[0].Write = &ferry.WriteSpec{RateLimit: -time.Second} }, "points[0].write.rate_limit: must not be negative"},
		{"method no name", func(d *Device) { m := setpoint; m.Name = ""; d.Config.Methods = []Method{m} }, "opcua.methods[0].name: is required"},
		{"method bad name", func(d *Device) { m := setpoint; m.Name = "start recipe"; d.Config.Methods = []Method{m} }, `opcua.methods[0].name: "start recipe" may hold only`},
		{"method named like a point", func(d *Device) { m := setpoint; m.Name = "p"; d.Config.Methods = []Method{m} }, `opcua.methods[0].name: "p" is already the name of points[0]`},
		{"two methods one name", func(d *Device) { d.Config.Methods = []Method{setpoint, setpoint} }, `opcua.methods[1].name: "start_recipe" is already the name of opcua.methods[0]`},
		{"method no object", func(d *Device) { m := setpoint; m.Object = ""; d.Config.Methods = []Method{m} }, "opcua.methods[0].object: is required"},
		{"method bad node", func(d *Device) { m := setpoint; m.Method = "ns=2;Line1"; d.Config.Methods = []Method{m} }, `opcua.methods[0].method: "ns=2;Line1"`},
		{"argument type", func(d *Device) {
			m := setpoint
			m.Inputs = []Argument{{Name: "recipe", Type: "string"}}
			d.Config.Methods = []Method{m}
		}, `opcua.methods[0].inputs[0].type: "string" is not one of Boolean, SByte`},
		{"argument name", func(d *Device) {
			m := setpoint
			m.Outputs = []Argument{{Name: "ok", Type: "Boolean"}, {Name: "ok", Type: "Int32"}}
			d.Config.Methods = []Method{m}
		}, `opcua.methods[0].outputs[1].name: duplicate argument name "ok"`},
		{"argument without name", func(d *Device) {
			m := setpoint
			m.Inputs = []Argument{{Type: "Int32"}}
			d.Config.Methods = []Method{m}
		}, `opcua.methods[0].inputs[0].name: is required`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := testDevice("line", "opc.tcp://10.0.0.30:4840", nil, Point{Name: "p", Node: "ns=2;s=Line1.Speed"})
			tt.mod(&d)
			wantValid(t, d.Validate(), tt.wantErr)
		})
	}
}

// TestInfoWrite checks that a point's write spec reaches the catalog.
func TestInfoWrite(t *testing.T) {
	max := 8.5
	p := Point{Name: "setpoint", Node: "ns=2;s=Boiler.Setpoint", Write: &ferry.WriteSpec{Max: &max, Interlock: "boiler.burner_on == false"}}
	info := p.Info()
	if info.Write == nil || info.Write.Max == nil || *info.Write.Max != 8.5 || info.Write.Interlock != "boiler.burner_on == false" {
		t.Fatalf("Info().Write = %+v, want the point's write spec", info.Write)
	}
	if (&Point{Name: "x", Node: "i=2258"}).Info().Write != nil {
		t.Fatal("a point without write: is writable in the catalog")
	}
}
