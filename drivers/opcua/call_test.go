package opcua

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// recipeMethods are the methods of TestCall, declared as a device map
// declares them.
func recipeMethods() []Method {
	line := "nsu=" + testNS + ";s=Line1"
	return []Method{
		{Name: "start_recipe", Object: line, Method: "nsu=" + testNS + ";s=Line1.StartRecipe",
			Inputs:  []Argument{{Name: "recipe", Type: "String"}, {Name: "batch", Type: "UInt32"}, {Name: "speed", Type: "Float"}},
			Outputs: []Argument{{Name: "accepted", Type: "Boolean"}, {Name: "order", Type: "Int64"}, {Name: "eta", Type: "Double"}}},
		{Name: "reset", Object: line, Method: "nsu=" + testNS + ";s=Line1.Reset"},
		{Name: "odd", Object: line, Method: "nsu=" + testNS + ";s=Line1.Odd", Outputs: []Argument{{Name: "n", Type: "Int32"}}},
		{Name: "missing", Object: line, Method: "nsu=" + testNS + ";s=Line1.NotThere"},
	}
}

// TestCall calls methods of the gopcua server (through the kit's Call
// service: gopcua v0.9.1's own answers BadServiceUnsupported, see
// TestCallUnsupported): the inputs arrive in their declared types, the
// outputs come back; a Bad result and its input argument results are the
// reason; arguments that do not fit are refused before anything is sent.
func TestCall(t *testing.T) {
	type got struct{ in []*ua.Variant }
	calls := make(chan got, 10)
	r := newWriteRig(t, func(srv *testpeer.UAServer) {
		line, start := srv.Node("Line1"), srv.Node("Line1.StartRecipe")
		srv.AddMethod(line, start, func(in []*ua.Variant) *ua.CallMethodResult {
			calls <- got{in}
			if len(in) == 3 && in[1].Value() == uint32(0) {
				return &ua.CallMethodResult{StatusCode: ua.StatusBadInvalidArgument,
					InputArgumentResults: []ua.StatusCode{ua.StatusOK, ua.StatusBadOutOfRange, ua.StatusOK}}
			}
			return &ua.CallMethodResult{StatusCode: ua.StatusOK, OutputArguments: []*ua.Variant{
				ua.MustVariant(true), ua.MustVariant(int64(90210)), ua.MustVariant(12.5)}}
		})
		srv.AddMethod(line, srv.Node("Line1.Reset"), func([]*ua.Variant) *ua.CallMethodResult {
			return &ua.CallMethodResult{StatusCode: ua.StatusOK}
		})
		srv.AddMethod(line, srv.Node("Line1.Odd"), func([]*ua.Variant) *ua.CallMethodResult {
			return &ua.CallMethodResult{StatusCode: ua.StatusOK, OutputArguments: []*ua.Variant{ua.MustVariant("seven")}}
		})
	}, nil, recipeMethods(), testpeer.UAMethods())
	call := func(name string, args ...ferry.Value) (ferry.WriteResult, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return r.d.Write(ctx, ferry.WriteRequest{Device: "plc", Point: name, Args: args})
	}

	res, err := call("start_recipe", ferry.StringValue("PILS_12"), ferry.FloatValue(7), ferry.FloatValue(0.5))
	if err != nil {
		t.Fatal(err)
	}
	want := []ferry.Value{ferry.BoolValue(true), ferry.IntValue(90210), ferry.FloatValue(12.5)}
	if len(res.Outputs) != len(want) {
		t.Fatalf("outputs %v, want %v", res.Outputs, want)
	}
	for i := range want {
		if !res.Outputs[i].Equal(want[i]) {
			t.Errorf("output %d: %v (%v), want %v", i, res.Outputs[i], res.Outputs[i].Kind(), want[i])
		}
	}
	c := <-calls
	if len(c.in) != 3 || c.in[0].Value() != "PILS_12" || c.in[1].Value() != uint32(7) || c.in[2].Value() != float32(0.5) {
		var vals []any
		for _, v := range c.in {
			vals = append(vals, v.Value())
		}
		t.Fatalf("the server got inputs %#v, want String PILS_12, UInt32 7, Float 0.5", vals)
	}

	// A Bad result: its status and the bad input are the reason.
	_, err = call("start_recipe", ferry.StringValue("PILS_12"), ferry.IntValue(0), ferry.FloatValue(1))
	if err == nil || errors.Is(err, ferry.ErrWriteRefused) || errors.Is(err, ferry.ErrWriteUnknown) ||
		!strings.Contains(err.Error(), "BadInvalidArgument (inputs: batch BadOutOfRange)") {
		t.Fatalf("bad call: %v, want the reason BadInvalidArgument (inputs: batch BadOutOfRange)", err)
	}
	<-calls

	// No arguments, no outputs.
	if res, err := call("reset"); err != nil || len(res.Outputs) != 0 {
		t.Fatalf("reset: %v, %v", res.Outputs, err)
	}
	// Outputs that differ from the declaration: a failed call that still
	// reports what came back.
	res, err = call("odd")
	if err == nil || !strings.Contains(err.Error(), `output "n" is a String, declared Int32`) || len(res.Outputs) != 1 || res.Outputs[0].Str() != "seven" {
		t.Fatalf("odd outputs: %v, %v", res.Outputs, err)
	}
	// A method the server does not have.
	if _, err := call("missing"); err == nil || !strings.Contains(err.Error(), "BadMethodInvalid") {
		t.Fatalf("missing method: %v, want BadMethodInvalid", err)
	}

	before := r.srv.Calls()
	for _, tt := range []struct {
		args   []ferry.Value
		reason string
	}{
		{[]ferry.Value{ferry.StringValue("A")}, "1 arguments given, the method takes 3 (recipe String, batch UInt32, speed Float)"},
		{[]ferry.Value{ferry.StringValue("A"), ferry.FloatValue(1.5), ferry.FloatValue(1)}, `input "batch": 1.5 does not fit UInt32 (not a whole number)`},
		{[]ferry.Value{ferry.IntValue(5), ferry.IntValue(1), ferry.FloatValue(1)}, `input "recipe": 5 (int) cannot be written to a String node`},
		{[]ferry.Value{ferry.StringValue("A"), ferry.IntValue(1), ferry.FloatValue(0.3333333333)}, `input "speed": 0.3333333333 does not fit Float`},
	} {
		_, err := call("start_recipe", tt.args...)
		if !errors.Is(err, ferry.ErrWriteRefused) || !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("call with %v: %v, want refused: %s", tt.args, err, tt.reason)
		}
	}
	if n := r.srv.Calls(); n != before {
		t.Fatalf("the server saw %d calls of refused commands, want none", n-before)
	}
}

// TestCallUnsupported calls a method of gopcua v0.9.1's own server, whose
// Call service answers every request with BadServiceUnsupported: that
// status is the reason, and the call is neither refused nor unknown.
func TestCallUnsupported(t *testing.T) {
	r := newWriteRig(t, func(*testpeer.UAServer) {}, nil, []Method{{Name: "reset", Object: "i=85", Method: "nsu=" + testNS + ";s=Reset"}})
	_, err := r.d.Write(context.Background(), ferry.WriteRequest{Device: "plc", Point: "reset"})
	if err == nil || errors.Is(err, ferry.ErrWriteRefused) || errors.Is(err, ferry.ErrWriteUnknown) || !strings.Contains(err.Error(), "BadServiceUnsupported") {
		t.Fatalf("call on gopcua's server: %v, want the reason BadServiceUnsupported", err)
	}
}
