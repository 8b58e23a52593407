package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink"
)

const alarmStream = "FERRY_ALARM_TEST"

// alarmRig is a gateway with one OPC UA device, oven, on the node-opcua
// alarms server, an operator credential, and a real nats-server.
type alarmRig struct {
	t    *testing.T
	srv  *testpeer.NodeOPCUA
	nats *testpeer.NATSServer
	path string
	h    *harness
}

func newAlarmRig(t *testing.T) *alarmRig {
	t.Helper()
	r := &alarmRig{t: t}
	r.srv = testpeer.StartNodeOPCUAAlarms(t, testpeer.NodeOPCUAConfig{
		Nodes:  []testpeer.NodeOPCUAVar{{Name: "Overheat", Type: "Boolean", Value: false}, {Name: "Temp", Type: "Double", Value: 180.5}},
		Alarms: []testpeer.NodeOPCUAAlarm{{Name: "OverheatAlarm", Input: "Overheat", Severity: 800, Message: "oven over temperature"}},
	})
	r.nats = testpeer.NATS(t)
	hash, err := bcrypt.GenerateFromPassword([]byte(operatorPwd), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "gateway: {id: %s, site: test}\ndata_dir: %s\n", gatewayID, filepath.Join(dir, "data"))
	fmt.Fprintf(&b, "http: {listen: \"127.0.0.1:0\", operator: {username: %s, password_hash: %q}}\n", operator, hash)
	fmt.Fprintf(&b, `devices:
  - name: oven
    opcua:
      endpoint: "%s"
      security_policy: None
      allow_insecure: true
      interval: 100ms
      timeouts: {request: 2s, keepalive: 1s}
      events:
        severity: {warning: 400, critical: 700}
    points:
      - {name: temp, node: "%s"}
`, r.srv.Endpoint(), r.srv.Node("Temp"))
	b.WriteString("alerts: {log: {enabled: true}}\n")
	fmt.Fprintf(&b, "uplink:\n  nats: {urls: [\"%s\"], stream: %s, create_stream: true, reconnect_max: 500ms, connect_timeout: 1s}\n", r.nats.URL(), alarmStream)
	r.path = filepath.Join(dir, "ferry.yaml")
	testutil.WriteFile(t, r.path, b.String())
	r.h = startDaemon(t, r.path)
	r.resynced(1)
	return r
}

// resynced waits until the gateway logged its n-th resync of oven's
// conditions (a ConditionRefresh done) and the device is connected.
func (r *alarmRig) resynced(n int) {
	r.t.Helper()
	testutil.Eventually(r.t, 90*time.Second, fmt.Sprintf("resync %d of oven's conditions", n), func() error {
		if got := len(r.h.logs.lines("machine alarms resynced", "device=oven")); got < n {
			return fmt.Errorf("%d resyncs; device %+v", got, r.h.status("oven"))
		}
		return nil
	})
}

// machineAlerts returns the active alerts of the API that are oven's
// condition's.
func (r *alarmRig) machineAlerts() []ferry.AlertJSON {
	r.t.Helper()
	code, body := r.h.get("/api/alerts")
	if code != http.StatusOK {
		r.t.Fatalf("GET /api/alerts: %d %s", code, body)
	}
	var all, out []ferry.AlertJSON
	if err := json.Unmarshal([]byte(body), &all); err != nil {
		r.t.Fatal(err)
	}
	for _, a := range all {
		if a.Labels["source"] == "opcua" {
			out = append(out, a)
		}
	}
	return out
}

// waitAlert waits until oven's alarm is active in state (or, with state
// "", until none is), and returns it.
func (r *alarmRig) waitAlert(what, state string) ferry.AlertJSON {
	r.t.Helper()
	var got ferry.AlertJSON
	testutil.Eventually(r.t, 30*time.Second, what, func() error {
		as := r.machineAlerts()
		switch {
		case state == "" && len(as) == 0:
			return nil
		case state != "" && len(as) == 1 && as[0].State == state:
			got = as[0]
			return nil
		}
		return fmt.Errorf("active machine alerts: %+v", as)
	})
	return got
}

func (r *alarmRig) set(v bool) {
	r.t.Helper()
	if err := r.srv.Set("Overheat", v); err != nil {
		r.t.Fatal(err)
	}
}

// ack posts an acknowledge of id with the given credential.
func (r *alarmRig) ack(id, user, pass, body string) (int, string) {
	r.t.Helper()
	req, err := http.NewRequest("POST", r.h.url("/api/alerts/"+id+"/ack"), strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

// upstream counts the alert transitions of oven's condition in the
// stream, by "id state", and collects the plain event messages.
func (r *alarmRig) upstream() (transitions map[string]int, events []string) {
	r.t.Helper()
	transitions = map[string]int{}
	testpeer.ReadStream(r.t, r.nats.URL(), alarmStream, func(m jetstream.Msg) {
		all, err := uplink.DecodeAll(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			r.t.Fatalf("stream message on %s: %v", m.Subject(), err)
		}
		for _, msg := range all {
			switch {
			case msg.Kind == uplink.KindAlert && msg.Alert.Device == "oven":
				transitions[msg.Alert.ID+" "+msg.Alert.State]++
			case msg.Kind == uplink.KindTelemetry && msg.Telemetry.Device == "oven":
				for _, s := range msg.Telemetry.Scans {
					for _, p := range s.Points {
						if p.Name == "event.message" {
							events = append(events, p.Value.String())
						}
					}
				}
			}
		}
	})
	return transitions, events
}

// TestMachineAlarmsNodeOPCUA is issue 23's closing test, against
// node-opcua's Alarms & Conditions and a real nats-server: an alarm goes
// active (a critical alert with the machine's message), is acknowledged
// from ferry's API with the operator credential (the server's AckedState
// and comment change, and ferry shows what the server reports), and
// clears. A server restart with the alarm still active raises nothing
// again; an alarm that ended, and one that began, while ferry was
// disconnected are cleared and raised by the ConditionRefresh after the
// reconnect; a restart of ferry raises nothing again. A plain event goes
// upstream as an event record. Every transition reaches JetStream exactly
// once.
func TestMachineAlarmsNodeOPCUA(t *testing.T) {
	r := newAlarmRig(t)

	// Raise.
	r.set(true)
	a1 := r.waitAlert("the alarm raised", "raised")
	if a1.Severity != "critical" || a1.Message != "oven over temperature" || a1.Device != "oven" || a1.Rule != "OverheatAlarm" ||
		a1.Labels["opcua_severity"] != "800" || a1.Labels["condition_id"] != r.srv.Node("OverheatAlarm") {
		t.Fatalf("raised alert: %+v", a1)
	}

	// The console shows it (headless Chromium, when installed).
	var console context.Context
	if chrome := testutil.ChromiumPath(); chrome != "" {
		console = testutil.Browser(t, chrome)
		row := `tr[data-alert-id="` + a1.ID + `"]`
		testutil.Browse(t, console, 30*time.Second, "the machine alarm on the console's alerts page",
			chromedp.Navigate(r.h.url("/#alerts")),
			chromedp.WaitVisible(chromedp.CSS(row+`[data-state="raised"][data-rule="OverheatAlarm"].sev-critical`)))
		if txt := textOf(t, console, row); !strings.Contains(txt, "oven over temperature") || !strings.Contains(txt, "oven") {
			t.Fatalf("the console's row shows %q", txt)
		}
	} else {
		t.Log("chromium is not installed: the console check is skipped")
	}

	// Acknowledge: refused without the operator, done with it.
	if code, body := r.ack(a1.ID, "", "", ""); code != http.StatusUnauthorized {
		t.Fatalf("ack without credentials: %d %s", code, body)
	}
	if code, body := r.ack(a1.ID, operator, "wrong", ""); code != http.StatusUnauthorized {
		t.Fatalf("ack with a wrong password: %d %s", code, body)
	}
	if st, err := r.srv.Alarm("OverheatAlarm"); err != nil || st.Acked || st.Acks != 0 {
		t.Fatalf("server state after refused acks: %+v %v", st, err)
	}
	code, body := r.ack(a1.ID, operator, operatorPwd, `{"comment": "checked the door seal"}`)
	if code != http.StatusOK {
		t.Fatalf("ack: %d %s", code, body)
	}
	var acked ferry.AlertJSON
	if err := json.Unmarshal([]byte(body), &acked); err != nil || acked.State != "acknowledged" || acked.ID != a1.ID || acked.Labels["acknowledged_by"] != operator {
		t.Fatalf("ack answered %s (%v)", body, err)
	}
	st, err := r.srv.Alarm("OverheatAlarm")
	if err != nil || !st.Acked || !st.Active || st.Acks != 1 || st.Comment != "checked the door seal" {
		t.Fatalf("server state after ack: %+v %v", st, err)
	}
	r.waitAlert("the alarm acknowledged", "acknowledged")
	if console != nil {
		row := `tr[data-alert-id="` + a1.ID + `"]`
		testutil.Browse(t, console, 30*time.Second, "the acknowledged state on the console",
			chromedp.WaitVisible(chromedp.CSS(row+`[data-state="acknowledged"]`)))
		if txt := textOf(t, console, row+` .state`); !strings.Contains(txt, "by "+operator) {
			t.Fatalf("the console's state cell shows %q", txt)
		}
	}

	// Clear.
	r.set(false)
	r.waitAlert("the alarm cleared", "")

	// Raised again; then the server restarts with the alarm still active:
	// the refresh finds it active, nothing is raised again.
	r.set(true)
	a2 := r.waitAlert("the alarm raised again", "raised")
	if a2.ID == a1.ID {
		t.Fatalf("a new episode kept the id %s", a1.ID)
	}
	r.srv.SetStart("Overheat", true)
	if err := r.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	r.resynced(2)
	if got := r.waitAlert("the alarm still raised after the server restart", "raised"); got.ID != a2.ID {
		t.Fatalf("after the server restart the alert is %+v, want %s", got, a2.ID)
	}

	// The alarm ends while ferry is disconnected: the refresh does not
	// resend it, ferry clears it.
	r.srv.Stop()
	r.srv.SetStart("Overheat", false)
	if err := r.srv.Start(); err != nil {
		t.Fatal(err)
	}
	r.resynced(3)
	r.waitAlert("the alarm cleared by the refresh", "")

	// An alarm begins while ferry is disconnected: the refresh resends
	// it, ferry raises it.
	r.srv.Stop()
	r.srv.SetStart("Overheat", true)
	if err := r.srv.Start(); err != nil {
		t.Fatal(err)
	}
	r.resynced(4)
	a3 := r.waitAlert("the alarm raised by the refresh", "raised")

	// ferry restarts: the alert is restored, the refresh raises nothing.
	if err := r.h.stop(); err != nil {
		t.Fatal(err)
	}
	r.h = startDaemon(t, r.path)
	r.resynced(1)
	if got := r.waitAlert("the alarm still raised after ferry's restart", "raised"); got.ID != a3.ID {
		t.Fatalf("after ferry's restart the alert is %+v, want %s", got, a3.ID)
	}

	// A plain event: an event record upstream.
	if err := r.srv.RaiseEvent("door opened", 300); err != nil {
		t.Fatal(err)
	}

	want := map[string]int{
		a1.ID + " raised": 1, a1.ID + " acknowledged": 1, a1.ID + " cleared": 1,
		a2.ID + " raised": 1, a2.ID + " cleared": 1,
		a3.ID + " raised": 1,
	}
	testutil.Eventually(t, 30*time.Second, "every transition upstream exactly once, and the event", func() error {
		got, events := r.upstream()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("transitions upstream %v, want %v", got, want)
		}
		if fmt.Sprint(events) != "[door opened]" {
			return fmt.Errorf("event records upstream: %q", events)
		}
		return nil
	})
}
