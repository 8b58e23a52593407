package gateway

import (
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestCommandOPCUAGateway: commands over NATS through a real gateway to
// the gopcua server: a Write of a declared node within its limits is read
// back, one outside them never reaches the server, and a declared method
// is called with its arguments and returns its outputs; each command's
// audit events are upstream once.
func TestCommandOPCUAGateway(t *testing.T) {
	srv := testpeer.OPCUAServer(t, testpeer.UANone(), testpeer.UAMethods())
	srv.AddWritable("sp", 1.5)
	var got []any
	srv.AddMethod("ns=0;i=85", srv.Node("Hold"), func(in []*ua.Variant) *ua.CallMethodResult {
		for _, v := range in {
			got = append(got, v.Value())
		}
		return &ua.CallMethodResult{StatusCode: ua.StatusOK, OutputArguments: []*ua.Variant{ua.MustVariant(true)}}
	})
	ns := testpeer.NATS(t)
	nc, _ := ns.Connect()
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "gateway: {id: %s, site: test}\ndata_dir: %s\nhttp: {listen: \"127.0.0.1:0\"}\ncommands: {enabled: true}\n", gatewayID, filepath.Join(dir, "data"))
	fmt.Fprintf(&b, `devices:
  - name: plc
    opcua:
      endpoint: "%s"
      security_policy: None
      allow_insecure: true
      mode: poll
      interval: 200ms
      methods:
        - {name: hold, object: "i=85", method: "%s", inputs: [{name: secs, type: Int32}], outputs: [{name: ok, type: Boolean}]}
    points:
      - {name: sp, node: "%s", write: {min: 0, max: 10}}
`, srv.Endpoint(), srv.Node("Hold"), srv.Node("sp"))
	fmt.Fprintf(&b, "uplink:\n  nats: {urls: [\"%s\"], stream: %s, create_stream: true, reconnect_max: 500ms, connect_timeout: 1s}\n", ns.URL(), cmdStream)
	path := filepath.Join(dir, "ferry.yaml")
	testutil.WriteFile(t, path, b.String())
	h := startDaemon(t, path)
	r := &cmdRig{t: t, nats: ns, nc: nc, h: h, dir: dir}
	testutil.Eventually(t, 30*time.Second, "the device connected and the subject answering", func() error {
		if st := h.status("plc"); !st.Connected {
			return fmt.Errorf("plc not connected: %s", st.LastError)
		}
		_, err := nc.Request(cmdSubject, []byte(`{}`), time.Second)
		return err
	})

	if rep := r.request(`{"id": "u1", "device": "plc", "point": "sp", "value": 2.5}`); rep.Status != ferry.CommandDone || rep.ReadBack != 2.5 {
		t.Fatalf("write: %+v", rep)
	}
	if rep := r.request(`{"id": "u2", "device": "plc", "point": "sp", "value": 11}`); rep.Status != ferry.CommandRefused || !strings.Contains(rep.Reason, "above max 10") {
		t.Fatalf("above max: %+v", rep)
	}
	rep := r.request(`{"id": "u3", "device": "plc", "point": "hold", "args": [5]}`)
	if rep.Status != ferry.CommandDone || !reflect.DeepEqual(rep.Outputs, []any{true}) {
		t.Fatalf("call: %+v", rep)
	}
	if !reflect.DeepEqual(got, []any{int32(5)}) {
		t.Fatalf("the server's method got %v, want [5]", got)
	}
	if n := srv.Calls(); n != 1 {
		t.Fatalf("%d calls at the server, want 1", n)
	}
	testutil.Eventually(t, 20*time.Second, "the audit events upstream", func() error {
		a := r.audits()
		for _, id := range []string{"command/u1/accepted", "command/u1/done", "command/u2/refused", "command/u3/accepted", "command/u3/done"} {
			if a[id] != 1 {
				return fmt.Errorf("%s arrived %d times", id, a[id])
			}
		}
		return nil
	})
}
