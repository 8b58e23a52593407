package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
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
	return cmdConfigWith(t, dataDir, mbAddr, natsURL, enabled, points...)
}

func cmdConfigWith(t testing.TB, dataDir, mbAddr, natsURL string, enabled bool, points ...string) string {
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

// writablePoints is the device map of the write tests: a float32 CDAB
// setpoint with scale 0.1 and limits, a recipe number with allowed values
// and an interlock on the line speed, a rate-limited reset coil.
var writablePoints = []string{
	"{name: line_speed, table: holding, address: 0, type: uint16}",
	"{name: setpoint, table: holding, address: 10, type: float32, order: CDAB, scale: 0.1, write: {min: 0, max: 250}}",
	`{name: recipe, table: holding, address: 20, type: uint16, write: {allowed: ["1", "2", "5"], interlock: "line_speed == 0"}}`,
	"{name: reset, table: coil, address: 3, write: {rate_limit: 1m}}",
}

// TestCommandWriteGateway: commands over NATS and HTTP against a real
// gateway and a real Modbus server: the server's registers hold what was
// asked (encoded as a read decodes it), a repeat of an id writes nothing,
// the interlock follows the polled value, limits and the rate limit
// refuse without writing, and each audit event is upstream exactly once.
func TestCommandWriteGateway(t *testing.T) {
	r := newCmdRig(t, true, writablePoints...)
	r.bank.Set(0, 7) // the line runs

	got := r.request(cmdJSON("w1", "setpoint", 180.5))
	if got.Status != ferry.CommandDone || got.ReadBack != 180.5 {
		t.Fatalf("setpoint: %+v", got)
	}
	// float32(1805) = 0x44E1A000, CDAB: low word first.
	if lo, hi := r.bank.Reg(10), r.bank.Reg(11); lo != 0xA000 || hi != 0x44E1 {
		t.Fatalf("registers 10, 11 = %#04x %#04x, want 0xa000 0x44e1", lo, hi)
	}
	if again := r.request(cmdJSON("w1", "setpoint", 180.5)); again.Status != ferry.CommandDone || !again.At.Equal(got.At) {
		t.Fatalf("repeat: %+v, want the stored %+v", again, got)
	}
	if n := len(r.bank.Writes()); n != 1 {
		t.Fatalf("%d writes after a repeat, want 1", n)
	}

	if got := r.request(cmdJSON("w2", "setpoint", 250.1)); got.Status != ferry.CommandRefused || !strings.Contains(got.Reason, "above max 250") {
		t.Fatalf("above max: %+v", got)
	}
	testutil.Eventually(t, 10*time.Second, "the interlock to see the line run", func() error {
		if s, ok := r.h.d.cmds.vals.get("press", "line_speed"); !ok || s.Value.Float64() != 7 {
			return fmt.Errorf("line_speed %+v", s)
		}
		return nil
	})
	if got := r.request(cmdJSON("w3", "recipe", 2)); got.Status != ferry.CommandRefused || !strings.Contains(got.Reason, `interlock "line_speed == 0" is false`) {
		t.Fatalf("interlock: %+v", got)
	}
	if n := len(r.bank.Writes()); n != 1 {
		t.Fatalf("refusals wrote: %d writes", n)
	}
	r.bank.Set(0, 0) // the line stops; the next poll sees it
	testutil.Eventually(t, 10*time.Second, "the recipe to be written once the line stopped", func() error {
		got := r.request(cmdJSON(fmt.Sprint("w4-", time.Now().UnixNano()), "recipe", 2))
		if got.Status != ferry.CommandDone {
			return fmt.Errorf("%+v", got)
		}
		return nil
	})
	if v := r.bank.Reg(20); v != 2 {
		t.Fatalf("register 20 = %d, want 2", v)
	}

	// HTTP, as the operator.
	code, body := r.post(cmdJSON("w5", "setpoint", 100), operator, operatorPwd)
	if code != 200 || !strings.Contains(body, `"status": "done"`) {
		t.Fatalf("HTTP: %d %s", code, body)
	}
	if lo, hi := r.bank.Reg(10), r.bank.Reg(11); lo != 0x0000 || hi != 0x447A { // float32(1000) = 0x447A0000
		t.Fatalf("registers 10, 11 = %#04x %#04x after HTTP, want 0x0000 0x447a", lo, hi)
	}

	if got := r.request(cmdJSON("w6", "reset", true)); got.Status != ferry.CommandDone || got.ReadBack != true {
		t.Fatalf("reset: %+v", got)
	}
	if got := r.request(cmdJSON("w7", "reset", true)); got.Status != ferry.CommandRefused || !strings.Contains(got.Reason, "rate limit") {
		t.Fatalf("reset again: %+v", got)
	}

	testutil.Eventually(t, 20*time.Second, "every audit event upstream once", func() error {
		got := r.audits()
		for _, id := range []string{"command/w1/accepted", "command/w1/done", "command/w2/refused", "command/w3/refused",
			"command/w5/accepted", "command/w5/done", "command/w6/accepted", "command/w6/done", "command/w7/refused"} {
			if got[id] != 1 {
				return fmt.Errorf("%s arrived %d times", id, got[id])
			}
		}
		for id, n := range got {
			if n != 1 {
				return fmt.Errorf("%s arrived %d times", id, n)
			}
		}
		return nil
	})
}

// TestCommandsReload: a reload that turns commands on takes effect for the
// next command, without a restart; one that turns them off, too.
func TestCommandsReload(t *testing.T) {
	r := newCmdRig(t, false, "{name: speed, table: holding, address: 0, type: uint16}")
	if got := r.request(cmdJSON("r1", "speed", 5)); !strings.Contains(got.Reason, "commands are disabled") {
		t.Fatalf("before: %+v", got)
	}
	r.h.reload(cmdConfig(t, filepath.Join(r.dir, "data"), r.mb.Addr(), r.nats.URL(), true, "{name: speed, table: holding, address: 0, type: uint16}"))
	testutil.Eventually(t, 10*time.Second, "commands enabled by the reload", func() error {
		if got := r.request(cmdJSON(fmt.Sprint("r2-", time.Now().UnixNano()), "speed", 5)); !strings.Contains(got.Reason, "not writable") {
			return fmt.Errorf("%+v", got)
		}
		return nil
	})
}

// TestCommandsReloadSubject: a reload that changes the command subject
// moves the agent to it, without a restart; the old subject goes quiet.
func TestCommandsReloadSubject(t *testing.T) {
	r := newCmdRig(t, true, "{name: speed, table: holding, address: 0, type: uint16}")
	text := cmdConfig(t, filepath.Join(r.dir, "data"), r.mb.Addr(), r.nats.URL(), true, "{name: speed, table: holding, address: 0, type: uint16}")
	text = strings.Replace(text, "commands: {enabled: true,", `commands: {enabled: true, subject: "ferry.{site}.{gateway}.cmd2",`, 1)
	r.h.reload(text)
	testutil.Eventually(t, 20*time.Second, "the new subject answers", func() error {
		m, err := r.nc.Request(cmdSubject+"2", []byte(cmdJSON(fmt.Sprint("s-", time.Now().UnixNano()), "speed", 7)), time.Second)
		if err != nil {
			return err
		}
		var reply ferry.CommandReply
		if err := json.Unmarshal(m.Data, &reply); err != nil {
			return err
		}
		if !strings.Contains(reply.Reason, "not writable") { // answered by the service, from the new subject
			return fmt.Errorf("reply %+v", reply)
		}
		return nil
	})
	if _, err := r.nc.Request(cmdSubject, []byte(`{}`), 500*time.Millisecond); !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("the old subject still answers: err %v", err)
	}
}
