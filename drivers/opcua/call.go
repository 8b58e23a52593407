package opcua

import (
	"context"
	"fmt"
	"strings"

	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
)

// method is one declared method, with its node ids parsed.
type method struct {
	decl           *Method
	object, method NodeID
	inputs         []ua.TypeID
	outputs        []ua.TypeID
}

// newMethod returns the method of a validated declaration.
func newMethod(m *Method) *method {
	x := &method{decl: m}
	x.object, _ = ParseNodeID(m.Object) // validated
	x.method, _ = ParseNodeID(m.Method)
	for _, a := range m.Inputs {
		x.inputs = append(x.inputs, writeTypes[a.Type])
	}
	for _, a := range m.Outputs {
		x.outputs = append(x.outputs, writeTypes[a.Type])
	}
	return x
}

// method returns the declared method called name, or nil.
func (dv *device) method(name string) *method {
	for _, m := range dv.methods {
		if m.decl.Name == name {
			return m
		}
	}
	return nil
}

// call calls m with args, each converted to its declared input type, and
// returns the output arguments. A call is not read back: its outputs are
// the result. Outputs that differ from the declaration in number or type
// make a failed call (the result still holds them).
func (dv *device) call(ctx context.Context, m *method, args []ferry.Value) (ferry.WriteResult, error) {
	what := "call " + dv.cfg.Name + "." + m.decl.Name
	if len(args) != len(m.inputs) {
		return ferry.WriteResult{}, refused(what, "%d arguments given, the method takes %d (%s)", len(args), len(m.inputs), argList(m.decl.Inputs))
	}
	in := make([]*ua.Variant, len(args))
	for i, a := range args {
		v, reason := toVariant(a, m.inputs[i])
		if reason != "" {
			return ferry.WriteResult{}, refused(what, "input %q: %s", m.decl.Inputs[i].Name, reason)
		}
		in[i] = v
	}
	s, err := dv.ready(ctx, what)
	if err != nil {
		return ferry.WriteResult{}, err
	}
	ns := s.c.Namespaces()
	obj, err := m.object.resolve(ns)
	if err != nil {
		return ferry.WriteResult{}, refused(what, "object %s: %s", m.object, reasonNamespaceUnknown)
	}
	mid, err := m.method.resolve(ns)
	if err != nil {
		return ferry.WriteResult{}, refused(what, "method %s: %s", m.method, reasonNamespaceUnknown)
	}
	dv.m.writes.Inc()
	res, err := s.c.Call(ctx, &ua.CallMethodRequest{ObjectID: obj, MethodID: mid, InputArguments: in})
	if err != nil {
		dv.m.writeError(reasonOf(err))
		return ferry.WriteResult{}, sendError(what, err)
	}
	if severity(res.StatusCode) == ferry.Bad {
		dv.m.writeError(StatusName(res.StatusCode))
		reason := StatusName(res.StatusCode)
		var bad []string
		for i, r := range res.InputArgumentResults {
			if severity(r) == ferry.Bad && i < len(m.decl.Inputs) {
				bad = append(bad, m.decl.Inputs[i].Name+" "+StatusName(r))
			}
		}
		if len(bad) > 0 {
			reason += " (inputs: " + strings.Join(bad, ", ") + ")"
		}
		return ferry.WriteResult{}, fmt.Errorf("%s: %s", what, reason)
	}
	out := ferry.WriteResult{Time: dv.now(), Outputs: make([]ferry.Value, len(res.OutputArguments))}
	var problems []string
	if len(res.OutputArguments) != len(m.outputs) {
		problems = append(problems, fmt.Sprintf("%d outputs returned, %d declared (%s)", len(res.OutputArguments), len(m.outputs), argList(m.decl.Outputs)))
	}
	for i, o := range res.OutputArguments {
		v, reason := convert(o, -1)
		out.Outputs[i] = v
		switch {
		case reason != "":
			problems = append(problems, fmt.Sprintf("output %d: %s", i, reason))
		case i < len(m.outputs) && o.Type() != m.outputs[i]:
			problems = append(problems, fmt.Sprintf("output %q is a %s, declared %s", m.decl.Outputs[i].Name, typeName(o.Type()), m.decl.Outputs[i].Type))
		}
	}
	if len(problems) > 0 {
		dv.m.writeError("outputs")
		return out, fmt.Errorf("%s: called, but %s", what, strings.Join(problems, "; "))
	}
	return out, nil
}

// argList formats arguments as "name Type, …".
func argList(args []Argument) string {
	if len(args) == 0 {
		return "none"
	}
	parts := make([]string, len(args))
	for i, a := range args {
		parts[i] = a.Name + " " + a.Type
	}
	return strings.Join(parts, ", ")
}
