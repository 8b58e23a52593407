package gateway

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/drivers/opcua"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/web"
)

// TestOPCUAFailureReasons runs the daemon against a node-opcua server
// (Basic256Sha256, SignAndEncrypt, user name login only) through the
// sequence a commissioning engineer meets (issue 21 item 10): the server
// certificate is not yet trusted by ferry (BadCertificateUntrusted); once
// trusted, the password is wrong (BadUserAccessDenied); once the account
// is fixed on the server, the device connects. Each step is one Warn or
// Info line — a change of failure reason is a change of state — and
// /api/devices shows each reason in turn, then none.
func TestOPCUAFailureReasons(t *testing.T) {
	if testing.Short() {
		t.Skip("runs node-opcua and a daemon")
	}
	t.Parallel()
	const user, right, wrong = "op", "right-pw-7c1", "wrong-pw-7c1"
	srv := testpeer.StartNodeOPCUA(t, testpeer.NodeOPCUAConfig{
		Security:    []string{"Basic256Sha256"},
		Users:       []testpeer.NodeOPCUAUser{{Username: user, Password: right}},
		NoAnonymous: true,
		Nodes:       []testpeer.NodeOPCUAVar{{Name: "Temp", Type: "Double", Value: 21.5}},
	})
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	path := filepath.Join(dir, "ferry.yaml")
	cfg := fmt.Sprintf(`gateway: {id: %s, site: test}
data_dir: %s
log: {level: debug}
http: {listen: "127.0.0.1:0"}
devices:
  - name: cell
    opcua:
      endpoint: %q
      security_policy: Basic256Sha256
      security_mode: SignAndEncrypt
      auth: {username: %s, password: %s}
      mode: poll
      interval: 100ms
    points:
      - {name: temp, node: %q}
`, gatewayID, data, srv.Endpoint(), user, wrong, srv.Node("Temp"))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	h := startDaemon(t, path)

	device := func() web.Device {
		t.Helper()
		code, body := h.get("/api/devices")
		if code != 200 {
			t.Fatalf("GET /api/devices: %d %s", code, body)
		}
		var devs []web.Device
		if err := json.Unmarshal([]byte(body), &devs); err != nil {
			t.Fatalf("/api/devices: %v: %s", err, body)
		}
		for _, d := range devs {
			if d.Device == "cell" {
				return d
			}
		}
		t.Fatalf("/api/devices lists no cell: %s", body)
		return web.Device{}
	}
	var seen []string // the reasons /api/devices showed, in order, without repeats
	// waitReason waits until /api/devices shows the reason want, after
	// at least retries failures with it (so that repeats are seen not to
	// be logged).
	waitReason := func(want string, retries uint64) web.Device {
		t.Helper()
		var d web.Device
		waitFor(t, 60*time.Second, fmt.Sprintf("/api/devices to show reason %q after %d failures", want, retries), func() bool {
			d = device()
			if n := len(seen); n == 0 || seen[n-1] != d.Reason {
				seen = append(seen, d.Reason)
			}
			return d.Reason == want && d.Errors[want] >= retries
		})
		return d
	}

	// 1. ferry does not trust the server's certificate yet.
	d := waitReason("BadCertificateUntrusted", 3)
	if d.State != "lost" || d.Connected {
		t.Errorf("untrusted: state %q, connected %v", d.State, d.Connected)
	}
	rejected, err := filepath.Glob(filepath.Join(data, "pki", "rejected", "*"))
	if err != nil || len(rejected) != 1 {
		t.Fatalf("rejected server certificates: %v %v", rejected, err)
	}
	// 2. The operator trusts it (`ferry pki trust`); the password is wrong.
	if _, err := opcua.NewPKI(data).Trust(rejected[0]); err != nil {
		t.Fatal(err)
	}
	d = waitReason("BadUserAccessDenied", 3)
	if d.State != "lost" || d.Connected {
		t.Errorf("wrong password: state %q, connected %v", d.State, d.Connected)
	}
	// 3. The server's administrator sets the password ferry has: right now.
	if err := srv.SetUser(user, wrong); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "cell connected", func() bool { d = device(); return d.State == "connected" })
	if n := len(seen); n == 0 || seen[n-1] != "" {
		seen = append(seen, d.Reason)
	}
	if d.LastError != "" || d.Reason != "" {
		t.Errorf("connected, but last_error is %q, reason %q", d.LastError, d.Reason)
	}
	if want := []string{"", "BadCertificateUntrusted", "BadUserAccessDenied", ""}; fmt.Sprint(seen) != fmt.Sprint(want) && fmt.Sprint(seen) != fmt.Sprint(want[1:]) {
		t.Errorf("/api/devices showed reasons %q, want %q", seen, want)
	}

	// One log line per step, however many retries each step took.
	for _, step := range [][]string{
		{"level=WARN", "msg=\"cannot connect\"", "reason=BadCertificateUntrusted"},
		{"level=WARN", "msg=\"still not connected, for another reason\"", "reason=BadUserAccessDenied"},
		{"level=INFO", "msg=connected"},
	} {
		if got := h.logs.lines(append(step, "device=cell")...); len(got) != 1 {
			t.Errorf("%d lines with %q, want 1: %q", len(got), step, got)
		}
	}
	for _, reason := range []string{"BadCertificateUntrusted", "BadUserAccessDenied"} {
		if got := h.logs.lines("level=WARN", "device=cell", "reason="+reason); len(got) != 1 {
			t.Errorf("%d Warn lines with reason %s, want 1: %q", len(got), reason, got)
		}
		if got := h.logs.lines("level=DEBUG", "msg=\"still not connected\"", "device=cell", "reason="+reason); len(got) < 2 {
			t.Errorf("%d retries with reason %s at Debug, want at least 2", len(got), reason)
		}
	}
	if h.logs.lines("level=WARN", "device=cell", wrong) != nil || h.logs.lines(right) != nil {
		t.Error("a password is in the log")
	}
}
