package sparkplug

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ferry-edge/ferry/uplink/sparkplug/sproto"
)

// FuzzParseState: any payload on the STATE topic is either a valid
// STATE or ErrInvalidState; never a panic. Seeds: testdata/fuzz/FuzzParseState.
func FuzzParseState(f *testing.F) {
	for _, s := range []string{`{"online":true,"timestamp":1668114759262}`, `{"online":false,"timestamp":0}`, `ONLINE`, `OFFLINE`, `{"online":true}`, `{"online":1,"timestamp":1}`, `{"online":true,"timestamp":1e300}`, `null`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseState(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidState) {
				t.Fatalf("error %v is not ErrInvalidState", err)
			}
			return
		}
		if st.Timestamp < 0 {
			t.Fatalf("negative timestamp %d accepted", st.Timestamp)
		}
	})
}

// FuzzParseCommand: any payload on NCMD/DCMD is either a list of metrics
// each with a name or an alias, or ErrInvalidCommand; never a panic.
// Seeds: testdata/fuzz/FuzzParseCommand.
func FuzzParseCommand(f *testing.F) {
	seeds := []*sproto.Payload{
		{Timestamp: proto.Uint64(1), Metrics: []*sproto.Payload_Metric{{Name: proto.String(MetricRebirth), Datatype: proto.Uint32(TypeBoolean), Value: &sproto.Payload_Metric_BooleanValue{BooleanValue: true}}}},
		{Metrics: []*sproto.Payload_Metric{{Alias: proto.Uint64(3), Datatype: proto.Uint32(TypeInt16), Value: &sproto.Payload_Metric_IntValue{IntValue: 0xffff}}}},
		{Metrics: []*sproto.Payload_Metric{{Name: proto.String("x"), Datatype: proto.Uint32(TypeFloat), Value: &sproto.Payload_Metric_FloatValue{FloatValue: 1.5}}}},
		{Metrics: []*sproto.Payload_Metric{{Name: proto.String("b"), Value: &sproto.Payload_Metric_BytesValue{BytesValue: []byte("z")}}}},
		{Metrics: []*sproto.Payload_Metric{{Name: proto.String("n"), IsNull: proto.Bool(true)}}},
		{},
	}
	for _, p := range seeds {
		b, _ := proto.Marshal(p)
		f.Add(b)
	}
	f.Add([]byte{0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		cmds, _, err := ParseCommand(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("error %v is not ErrInvalidCommand", err)
			}
			return
		}
		if len(cmds) == 0 || len(cmds) > maxCommandMetrics {
			t.Fatalf("%d commands accepted", len(cmds))
		}
		for _, c := range cmds {
			if c.Name == "" && !c.HasAlias {
				t.Fatal("a command without name or alias accepted")
			}
			if c.Unsupported != "" && !c.Value.IsNone() {
				t.Fatalf("unsupported %q with a value %v", c.Unsupported, c.Value)
			}
		}
	})
}
