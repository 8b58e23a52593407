package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink"
)

// cmdRig is a gateway with commands against a real Modbus server and a
// real NATS JetStream server, and an operator credential on its API.
type cmdRig struct {
	t    *testing.T
	bank *testpeer.RegBank
	mb   *testpeer.ModbusTCP
	nats *testpeer.NATSServer
	nc   *nats.Conn
	h    *harness
	dir  string
}

const (
	cmdStream   = "FERRY_CMD_TEST"
	cmdSubject  = "ferry.test.gw1.cmd"
	operator    = "operator"
	operatorPwd = "open sesame"
)

// cmdConfig renders the rig's configuration: device press (unit 1)
// with the given points (YAML flow mappings), commands enabled or not.
func cmdConfig(t *testing.T, dataDir, mbAddr, natsURL string, enabled bool, points ...string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(operatorPwd), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "gateway: {id: %s, site: test}\n", gatewayID)
	fmt.Fprintf(&b, "data_dir: %s\n", dataDir)
	b.WriteString("log: {level: debug}\n")
	fmt.Fprintf(&b, "http: {listen: \"127.0.0.1:0\", operator: {username: %s, password_hash: %q}}\n", operator, hash)
	fmt.Fprintf(&b, "commands: {enabled: %v, default_deadline: 10s}\n", enabled)
	fmt.Fprintf(&b, "devices:\n  - name: press\n    modbus: {url: \"tcp://%s\", unit: 1, interval: 100ms, timeout: 1s}\n    points:\n", mbAddr)
	for _, p := range points {
		fmt.Fprintf(&b, "      - %s\n", p)
	}
	b.WriteString("alerts: {log: {enabled: true}}\n")
	fmt.Fprintf(&b, "uplink:\n  nats: {urls: [\"%s\"], stream: %s, create_stream: true, reconnect_max: 500ms, connect_timeout: 1s}\n", natsURL, cmdStream)
	return b.String()
}

func newCmdRig(t *testing.T, enabled bool, points ...string) *cmdRig {
	t.Helper()
	r := &cmdRig{t: t, bank: &testpeer.RegBank{}, dir: t.TempDir()}
	r.mb = testpeer.ModbusServer(t, r.bank)
	r.nats = testpeer.NATS(t)
	r.nc, _ = r.nats.Connect()
	path := filepath.Join(r.dir, "ferry.yaml")
	testutil.WriteFile(t, path, cmdConfig(t, filepath.Join(r.dir, "data"), r.mb.Addr(), r.nats.URL(), enabled, points...))
	r.h = startDaemon(t, path)
	// The command agent is listening once a request gets an answer.
	testutil.Eventually(t, 20*time.Second, "the command subject to answer", func() error {
		_, err := r.nc.Request(cmdSubject, []byte(`{}`), time.Second)
		return err
	})
	return r
}

// request sends a command over NATS and decodes the reply.
func (r *cmdRig) request(body string) ferry.CommandReply {
	r.t.Helper()
	m, err := r.nc.Request(cmdSubject, []byte(body), 20*time.Second)
	if err != nil {
		r.t.Fatalf("request %s: %v", body, err)
	}
	var reply ferry.CommandReply
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		r.t.Fatalf("reply %s: %v", m.Data, err)
	}
	return reply
}

// post sends a command to the HTTP API.
func (r *cmdRig) post(body, user, pass string) (int, string) {
	r.t.Helper()
	req, err := http.NewRequest("POST", r.h.url("/api/commands"), bytes.NewReader([]byte(body)))
	if err != nil {
		r.t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// audits returns the command audit events in the stream: alert id →
// how many times it arrived (what the cloud received).
func (r *cmdRig) audits() map[string]int {
	r.t.Helper()
	out := map[string]int{}
	testpeer.ReadStream(r.t, r.nats.URL(), cmdStream, func(m jetstream.Msg) {
		all, err := uplink.DecodeAll(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			r.t.Fatalf("stream message on %s: %v", m.Subject(), err)
		}
		for _, msg := range all {
			if msg.Kind == uplink.KindAlert && msg.Alert.Rule == "command" {
				out[msg.Alert.ID]++
			}
		}
	})
	return out
}

func cmdJSON(id, point string, value any) string {
	v, _ := json.Marshal(value)
	return fmt.Sprintf(`{"id": %q, "device": "press", "point": %q, "value": %s}`, id, point, v)
}

// TestCommandRefusalsGateway: through a real gateway, over NATS and HTTP,
// the refusals come back with their reason, nothing reaches the Modbus
// server, and each stored refusal's audit event is upstream exactly once.
func TestCommandRefusalsGateway(t *testing.T) {
	r := newCmdRig(t, true, "{name: speed, table: holding, address: 0, type: uint16}")
	cases := []struct{ body, reason string }{
		{cmdJSON("n1", "speed", 5), "press.speed is not writable"},
		{cmdJSON("n2", "nosuch", 5), `unknown point "nosuch" of device "press"`},
		{`{"id": "n3", "device": "nosuch", "point": "speed", "value": 5}`, `unknown device "nosuch"`},
		{`{"id": "n4", "device": "press",`, "malformed request"},
	}
	for _, c := range cases {
		if got := r.request(c.body); got.Status != ferry.CommandRefused || !strings.Contains(got.Reason, c.reason) {
			t.Errorf("NATS %s: %+v, want refused with %q", c.body, got, c.reason)
		}
	}
	// Over HTTP: the operator gets the stored reply of n1; the read-only
	// or a wrong credential gets nothing through.
	code, body := r.post(cmdJSON("n1", "speed", 5), operator, operatorPwd)
	if code != 200 || !strings.Contains(body, "press.speed is not writable") {
		t.Errorf("HTTP operator: %d %s", code, body)
	}
	if code, body := r.post(cmdJSON("h1", "speed", 5), operator, "wrong"); code != 401 {
		t.Errorf("HTTP wrong password: %d %s", code, body)
	}
	if code, body := r.post(cmdJSON("h1", "speed", 5), "", ""); code != 401 {
		t.Errorf("HTTP no credential: %d %s", code, body)
	}
	if w := r.bank.Writes(); len(w) != 0 {
		t.Fatalf("the Modbus server took writes: %+v", w)
	}
	want := []string{"command/n1/refused", "command/n2/refused", "command/n3/refused"}
	testutil.Eventually(t, 20*time.Second, "the audit events upstream", func() error {
		got := r.audits()
		for _, id := range want {
			if got[id] != 1 {
				return fmt.Errorf("%s arrived %d times (all: %v)", id, got[id], got)
			}
		}
		return nil
	})
}

// TestCommandsDisabledGateway: with commands.enabled false (the default)
// every command is refused, over NATS and HTTP, and nothing is written.
func TestCommandsDisabledGateway(t *testing.T) {
	r := newCmdRig(t, false, "{name: speed, table: holding, address: 0, type: uint16}")
	if got := r.request(cmdJSON("d1", "speed", 5)); got.Status != ferry.CommandRefused || !strings.Contains(got.Reason, "commands are disabled") {
		t.Fatalf("NATS: %+v", got)
	}
	if code, body := r.post(cmdJSON("d2", "speed", 5), operator, operatorPwd); code != 200 || !strings.Contains(body, "commands are disabled") {
		t.Fatalf("HTTP: %d %s", code, body)
	}
	if w := r.bank.Writes(); len(w) != 0 {
		t.Fatalf("the Modbus server took writes: %+v", w)
	}
}
