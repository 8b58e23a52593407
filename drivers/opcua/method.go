package opcua

import (
	"math"
	"regexp"
	"strings"

	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry/internal/setting"
)

// Method declares an OPC UA method that commands may call, in the device's
// `opcua:` block. A command names it like a point (WriteRequest.Point) and
// gives one value per input argument (WriteRequest.Args); each value is
// converted to its argument's type as a write is, losslessly or not at all.
type Method struct {
	// Name is what commands call; unique among the device's points and
	// methods.
	Name string `yaml:"name" doc:"name commands use; unique among the device's points and methods"`
	// Object is the node id of the object the method is called on, Method
	// the node id of the method (both in ParseNodeID's forms).
	Object      string `yaml:"object" doc:"node id of the object the method is called on"`
	Method      string `yaml:"method" doc:"node id of the method"`
	Description string `yaml:"description"`
	// Inputs are the method's input arguments in order; a call must give
	// exactly one value for each.
	Inputs []Argument `yaml:"inputs" doc:"input arguments, in order"`
	// Outputs are the output arguments the method returns, in order; a
	// result whose outputs differ in number or type is a failed call.
	Outputs []Argument `yaml:"outputs" doc:"output arguments, in order"`
}

// Argument is one typed argument of a method.
type Argument struct {
	Name string `yaml:"name"`
	// Type is an OPC UA built-in type name.
	Type string `yaml:"type" enum:"Boolean,SByte,Byte,Int16,UInt16,Int32,UInt32,Int64,UInt64,Float,Double,String,DateTime,LocalizedText"`
}

// writeTypes are the OPC UA built-in types ferry writes and passes as
// method arguments, by their specification names.
var writeTypes = map[string]ua.TypeID{
	"Boolean": ua.TypeIDBoolean, "SByte": ua.TypeIDSByte, "Byte": ua.TypeIDByte,
	"Int16": ua.TypeIDInt16, "UInt16": ua.TypeIDUint16, "Int32": ua.TypeIDInt32,
	"UInt32": ua.TypeIDUint32, "Int64": ua.TypeIDInt64, "UInt64": ua.TypeIDUint64,
	"Float": ua.TypeIDFloat, "Double": ua.TypeIDDouble, "String": ua.TypeIDString,
	"DateTime": ua.TypeIDDateTime, "LocalizedText": ua.TypeIDLocalizedText,
}

// writeTypeOrder lists writeTypes' names in the specification's order, for
// messages.
var writeTypeOrder = []string{"Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32",
	"Int64", "UInt64", "Float", "Double", "String", "DateTime", "LocalizedText"}

// typeName returns the specification name of a built-in type.
func typeName(t ua.TypeID) string {
	for n, id := range writeTypes {
		if id == t {
			return n
		}
	}
	return strings.TrimPrefix(t.String(), "TypeID")
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// validateWriteSpec checks the `write:` of point p at path.
func validateWriteSpec(errs *setting.Errors, path string, p *Point) {
	w := p.Write
	if p.Index != nil {
		errs.Add(path, "a point with index cannot be written (ferry does not write one element of an array); declare write on a point of a scalar node")
	}
	for _, b := range []struct {
		name string
		v    *float64
	}{{"min", w.Min}, {"max", w.Max}} {
		if b.v != nil && (math.IsNaN(*b.v) || math.IsInf(*b.v, 0)) {
			errs.Add(path+"."+b.name, "must be a finite number")
		}
	}
	if w.Min != nil && w.Max != nil && *w.Min > *w.Max {
		errs.Add(path+".min", "%v is above max %v", *w.Min, *w.Max)
	}
	if w.RateLimit < 0 {
		errs.Add(path+".rate_limit", "must not be negative")
	}
}

// validateMethods checks the methods of a device whose points are points.
func validateMethods(errs *setting.Errors, methods []Method, points []Point) {
	taken := map[string]string{}
	for i := range points {
		taken[points[i].Name] = setting.Index("points", i)
	}
	for i := range methods {
		m := &methods[i]
		mp := setting.Index("opcua.methods", i)
		switch {
		case m.Name == "":
			errs.Add(mp+".name", "is required")
		case !nameRE.MatchString(m.Name):
			errs.Add(mp+".name", "%q may hold only letters, digits, _ and -", m.Name)
		case taken[m.Name] != "":
			errs.Add(mp+".name", "%q is already the name of %s (points and methods share the names commands use)", m.Name, taken[m.Name])
		default:
			taken[m.Name] = mp
		}
		for _, n := range []struct{ key, v string }{{"object", m.Object}, {"method", m.Method}} {
			if n.v == "" {
				errs.Add(mp+"."+n.key, "is required")
			} else if _, err := ParseNodeID(n.v); err != nil {
				errs.Add(mp+"."+n.key, "%v", err)
			}
		}
		validateArgs(errs, mp+".inputs", m.Inputs)
		validateArgs(errs, mp+".outputs", m.Outputs)
	}
}

func validateArgs(errs *setting.Errors, path string, args []Argument) {
	seen := map[string]bool{}
	for j, a := range args {
		ap := setting.Index(path, j)
		switch {
		case a.Name == "":
			errs.Add(ap+".name", "is required")
		case seen[a.Name]:
			errs.Add(ap+".name", "duplicate argument name %q", a.Name)
		}
		seen[a.Name] = true
		if err := setting.OneOf(a.Type, writeTypeOrder...); err != nil {
			errs.Add(ap+".type", "%v", err)
		}
	}
}
