package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/plantsim"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/rules"
)

// testGateway is a ferry daemon running in-process against real peers.
type testGateway struct {
	d          *Gateway
	path       string // the configuration file
	base       string // http://127.0.0.1:port
	user, pass string // basic auth, when set
	log        *testutil.SyncBuffer
}

// startGateway loads the configuration yaml (with basic auth for user and
// pass when user is set), starts the daemon and stops it when the test
// ends.
func startGateway(t *testing.T, yaml, user, pass string) *testGateway {
	t.Helper()
	dir := t.TempDir()
	if user != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		hashFile := filepath.Join(dir, "http.hash")
		if err := os.WriteFile(hashFile, hash, 0o600); err != nil {
			t.Fatal(err)
		}
		yaml = strings.TrimRight(yaml, "\n") + fmt.Sprintf("\n  basic_auth: {username: %s, password_hash_file: %s}\n", user, hashFile)
	}
	path := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("load %s: %v\n%s", path, err, yaml)
	}
	gw := &testGateway{path: path, user: user, pass: pass, log: &testutil.SyncBuffer{}}
	log := slog.New(slog.NewTextHandler(gw.log, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d, err := New(cfg, Options{Logger: log, Version: "test", Commit: "abc123", ShutdownTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	gw.d = d
	gw.base = "http://" + d.http.Addr()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s", gw.log.String())
		}
	})
	testutil.Run(t, "daemon", 30*time.Second, d.Run) // stopped before the log is shown
	return gw
}

// do sends a request, with the gateway's credentials when auth is true.
func (gw *testGateway) do(t *testing.T, method, path string, auth bool, header http.Header, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, gw.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if auth {
		req.SetBasicAuth(gw.user, gw.pass)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func activeAlert(d *Gateway, rule string) (ferry.Alert, bool) {
	for _, a := range d.engine.Active() {
		if a.Rule == rule {
			return a, true
		}
	}
	return ferry.Alert{}, false
}

// TestConsoleAuth runs ferry with basic auth and a PLC that does not
// answer: the console's page and API need the password (only /healthz is
// open), acknowledge is refused without it and from another web site, and
// works with it.
func TestConsoleAuth(t *testing.T) {
	yaml := fmt.Sprintf(`gateway: {id: gw-auth}
data_dir: %s
devices:
  - name: plc
    description: a PLC that is switched off
    modbus: {url: "tcp://%s", unit: 1, interval: 200ms, timeout: 200ms}
    points:
      - {name: temp, table: holding, address: 0, type: uint16, unit: degC}
rules:
  - {name: plc_down, point: plc.temp, stale: 1s, severity: critical}
http:
  listen: "127.0.0.1:0"`, t.TempDir(), testpeer.Reserve(t).Addr())
	gw := startGateway(t, yaml, "operator", "s3cret pass")

	// Unauthenticated: only /healthz.
	for _, tc := range []struct {
		method, path string
		auth         bool
		want         int
	}{
		{"GET", "/healthz", false, http.StatusOK},
		{"GET", "/", false, http.StatusUnauthorized},
		{"GET", "/assets/app.js", false, http.StatusUnauthorized},
		{"GET", "/api/devices", false, http.StatusUnauthorized},
		{"GET", "/api/points", false, http.StatusUnauthorized},
		{"GET", "/api/health", false, http.StatusUnauthorized},
		{"GET", "/api/alerts/history", false, http.StatusUnauthorized},
		{"GET", "/", true, http.StatusOK},
		{"GET", "/assets/app.js", true, http.StatusOK},
		{"GET", "/api/health", true, http.StatusOK},
	} {
		if code, _ := gw.do(t, tc.method, tc.path, tc.auth, nil, ""); code != tc.want {
			t.Errorf("%s %s (auth %v): %d, want %d", tc.method, tc.path, tc.auth, code, tc.want)
		}
	}

	// The console shows the PLC lost with its reason.
	waitFor(t, 20*time.Second, "plc lost with reason connection refused", func() bool {
		code, b := gw.do(t, "GET", "/api/devices", true, nil, "")
		var devs []struct {
			Device string            `json:"device"`
			State  string            `json:"state"`
			Errors map[string]uint64 `json:"errors"`
		}
		if code != http.StatusOK || json.Unmarshal(b, &devs) != nil {
			t.Fatalf("GET /api/devices: %d %s", code, b)
		}
		return len(devs) == 1 && devs[0].Device == "plc" && devs[0].State == "lost" && devs[0].Errors[ferry.ReasonConnRefused] > 0
	})

	var a ferry.Alert
	waitFor(t, 20*time.Second, "alert plc_down raised", func() bool {
		var ok bool
		a, ok = activeAlert(gw.d, "plc_down")
		return ok
	})
	ackPath := "/api/alerts/" + a.ID + "/ack"
	jsonBody := http.Header{"Content-Type": {"application/json"}}
	crossSite := http.Header{"Content-Type": {"application/json"}, "Sec-Fetch-Site": {"cross-site"}, "Origin": {"http://evil.example"}}
	for _, tc := range []struct {
		name   string
		auth   bool
		header http.Header
		want   int
	}{
		{"no credentials", false, jsonBody, http.StatusUnauthorized},
		{"cross-site with credentials", true, crossSite, http.StatusForbidden},
	} {
		if code, b := gw.do(t, "POST", ackPath, tc.auth, tc.header, `{"by":"mallory"}`); code != tc.want {
			t.Errorf("ack %s: %d %s, want %d", tc.name, code, b, tc.want)
		}
		if got, _ := activeAlert(gw.d, "plc_down"); got.State != ferry.AlertRaised {
			t.Fatalf("after ack %s: state %v, want raised", tc.name, got.State)
		}
	}
	wrong := &testGateway{base: gw.base, user: gw.user, pass: "wrong"}
	if code, _ := wrong.do(t, "POST", ackPath, true, jsonBody, `{"by":"mallory"}`); code != http.StatusUnauthorized {
		t.Errorf("ack with a wrong password: %d, want 401", code)
	}

	code, b := gw.do(t, "POST", ackPath, true, http.Header{"Content-Type": {"application/json"}, "Sec-Fetch-Site": {"same-origin"}}, `{"by":"operator"}`)
	if code != http.StatusOK {
		t.Fatalf("ack with credentials: %d %s", code, b)
	}
	got, _ := activeAlert(gw.d, "plc_down")
	if got.State != ferry.AlertAcknowledged || got.Labels[rules.AckLabel] != "operator" {
		t.Fatalf("after ack: %+v, want acknowledged by operator", got)
	}

	// The history has both transitions, newest first.
	code, b = gw.do(t, "GET", "/api/alerts/history", true, nil, "")
	var hist []struct{ ID, Rule, State string }
	if err := json.Unmarshal(b, &hist); code != http.StatusOK || err != nil {
		t.Fatalf("history: %d %s %v", code, b, err)
	}
	if len(hist) < 2 || hist[0].State != "acknowledged" || hist[1].State != "raised" || hist[0].ID != a.ID {
		t.Fatalf("history %+v, want acknowledged then raised of %s", hist, a.ID)
	}

	// The health page tells a refused reload (and why), then a good one.
	good, err := os.ReadFile(gw.path)
	if err != nil {
		t.Fatal(err)
	}
	reload := func(content string) (ok bool, msg string) {
		t.Helper()
		if err := os.WriteFile(gw.path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		gw.d.Reload(gw.path)
		code, b := gw.do(t, "GET", "/api/health", true, nil, "")
		var h struct {
			Config struct {
				File   string `json:"file"`
				Reload *struct {
					OK    bool   `json:"ok"`
					Error string `json:"error"`
				} `json:"reload"`
			} `json:"config"`
		}
		if err := json.Unmarshal(b, &h); code != http.StatusOK || err != nil || h.Config.Reload == nil || h.Config.File != gw.path {
			t.Fatalf("health after a reload: %d %s %v", code, b, err)
		}
		return h.Config.Reload.OK, h.Config.Reload.Error
	}
	if ok, msg := reload(string(good) + "bogus: 1\n"); ok || !strings.Contains(msg, `unknown field "bogus"`) {
		t.Errorf("bad reload: ok %v, error %q", ok, msg)
	}
	if ok, msg := reload(string(good)); !ok || msg != "" {
		t.Errorf("good reload: ok %v, error %q", ok, msg)
	}
}

func textOf(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// plantClock is the simulated plant's clock: real time plus a shift the
// test moves forward to reach a part of the fault cycle at once.
type plantClock struct{ shift atomic.Int64 }

func (c *plantClock) Now() time.Time { return time.Now().Add(time.Duration(c.shift.Load())) }

// TestConsoleInBrowser drives the console in a real headless Chromium
// against ferry reading the simulated plant (Modbus, OPC UA, MQTT, NATS
// in-process), with basic auth: a device shows connected, a value
// changes, the plant's overheating fault raises oil_hot, the alert appears
// live, Acknowledge changes its state (in the page and in the rule
// engine), and the health page shows the uplink connected with its rates.
//
// With FERRY_SCREENSHOTS=DIR it then writes the documentation's
// screenshots of every page, at 1280 and 360 px wide, to DIR.
func TestConsoleInBrowser(t *testing.T) {
	chrome := testutil.Chromium(t)
	shotsDir := os.Getenv("FERRY_SCREENSHOTS")
	started := time.Now()

	// A long fault cycle, entered where the test wants it by moving the
	// plant's clock: 20%..40% of it is press1's overheating plateau (8
	// minutes), 30%..70% the stuck humidity sensor.
	const cycle = 40 * time.Minute
	clock := &plantClock{}
	plant, err := plantsim.Start(context.Background(), plantsim.Options{
		Faults: true, FaultCycle: cycle, NATSDir: t.TempDir(), Now: clock.Now, Rate: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plant.Close() })
	cfg, err := plant.Config(plantsim.ConfigOptions{GatewayID: "line-3", DataDir: t.TempDir(), HTTP: "127.0.0.1:0", Interval: "500ms"})
	if err != nil {
		t.Fatal(err)
	}
	// startGateway appends basic_auth to a block-style http section.
	yaml := strings.Replace(string(cfg), `http: {listen: "127.0.0.1:0"}`, "http:\n  listen: \"127.0.0.1:0\"", 1)
	if !strings.Contains(yaml, "oil_hot") || !strings.HasSuffix(strings.TrimSpace(yaml), `listen: "127.0.0.1:0"`) {
		t.Fatalf("unexpected plant configuration:\n%s", cfg)
	}
	gw := startGateway(t, strings.TrimSpace(yaml), "operator", "s3cret")

	ctx := testutil.Browser(t, chrome)
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(gw.user+":"+gw.pass))
	testutil.Browse(t, ctx, 30*time.Second, "open the console",
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
				return err
			}
			_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}})
			return err
		}),
		chromedp.Navigate(gw.base+"/#devices"),
	)

	// Devices: press1 connected.
	testutil.Browse(t, ctx, 30*time.Second, "press1 connected on the devices page",
		chromedp.WaitVisible(chromedp.CSS(`tr[data-device="press1"] .state .pill.connected`)))

	// Click the device: its points, and a value that changes.
	testutil.Browse(t, ctx, 20*time.Second, "open press1's points",
		chromedp.Click(chromedp.CSS(`tr[data-device="press1"] td[data-label="Protocol"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-point="press1.oil_temp"][data-quality="good"] .v`)))
	if loc := mustRun(t, ctx, chromedp.Location()); !strings.HasSuffix(loc, "#points/press1") {
		t.Errorf("after clicking press1: location %s, want #points/press1", loc)
	}
	first := textOf(t, ctx, `tr[data-point="press1.oil_temp"] .v`)
	if _, err := strconv.ParseFloat(strings.ReplaceAll(first, ",", ""), 64); err != nil {
		t.Fatalf("press1.oil_temp shows %q, want a number", first)
	}
	testutil.Browse(t, ctx, 30*time.Second, "press1.oil_temp changes",
		pollTrue(fmt.Sprintf(`(() => { const el = document.querySelector('tr[data-point="press1.oil_temp"] .v'); return !!el && el.textContent !== %q && el.textContent !== '—'; })()`, first)))

	// The plant overheats: oil_hot appears live on the alerts page.
	testutil.Browse(t, ctx, 10*time.Second, "open the alerts page",
		chromedp.Click(chromedp.CSS(`nav a[data-view="alerts"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#stream-state.on`)))
	clock.shift.Store(int64(cycle * 23 / 100))
	testutil.Browse(t, ctx, 45*time.Second, "oil_hot raised on the alerts page",
		chromedp.WaitVisible(chromedp.CSS(`tr[data-rule="oil_hot"][data-state="raised"] button.ack`)))
	if badge := textOf(t, ctx, `#alert-count`); badge == "" || badge == "0" {
		t.Errorf("alert badge %q, want a count", badge)
	}

	// Acknowledge it.
	testutil.Browse(t, ctx, 20*time.Second, "acknowledge oil_hot",
		chromedp.SetValue(chromedp.CSS(`#ack-by`), "line tech"),
		chromedp.Click(chromedp.CSS(`tr[data-rule="oil_hot"] button.ack`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-rule="oil_hot"][data-state="acknowledged"]`)))
	if s := textOf(t, ctx, `tr[data-rule="oil_hot"] .state`); !strings.Contains(s, "by line tech") {
		t.Errorf("oil_hot state cell %q, want it acknowledged by line tech", s)
	}
	if a, ok := activeAlert(gw.d, "oil_hot"); !ok || a.State != ferry.AlertAcknowledged || a.Labels[rules.AckLabel] != "line tech" {
		t.Errorf("rule engine: oil_hot %+v (active %v), want acknowledged by line tech", a, ok)
	}
	testutil.Browse(t, ctx, 20*time.Second, "the history shows the acknowledgement",
		pollTrue(`[...document.querySelectorAll('#alerts-history tr')].some(tr => tr.textContent.includes('oil_hot') && tr.textContent.includes('acknowledged'))`))
	dir := t.ArtifactDir()
	testutil.Screenshot(t, ctx, filepath.Join(dir, "console-alerts.png"))

	// Health: the uplink is connected and publishing.
	testutil.Browse(t, ctx, 30*time.Second, "health page with the uplink's rate",
		chromedp.Click(chromedp.CSS(`nav a[data-view="health"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#card-uplink .pill.connected`)),
		pollTrue(`/[0-9.]+ msg\/s/.test(document.querySelector('#card-uplink').textContent)`))
	if s := textOf(t, ctx, `#card-config`); !strings.Contains(s, "ferry.yaml") {
		t.Errorf("configuration card %q does not name the file", s)
	}
	testutil.Screenshot(t, ctx, filepath.Join(dir, "console-health.png"))

	// A 360 px phone: no page is wider than the screen.
	testutil.Browse(t, ctx, 10*time.Second, "360 px viewport", chromedp.EmulateViewport(360, 780))
	for _, p := range consolePages {
		testutil.Browse(t, ctx, 30*time.Second, "page "+p.name+" at 360 px",
			chromedp.Navigate(gw.base+"/"+p.hash),
			chromedp.WaitVisible(chromedp.CSS(p.ready)))
		w := mustRun(t, ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
		if w > 360 {
			t.Errorf("page %s at 360 px is %d px wide", p.name, w)
		}
	}
	testutil.Screenshot(t, ctx, filepath.Join(dir, "console-health-360.png"))
	testutil.Browse(t, ctx, 10*time.Second, "reset the viewport", chromedp.ResetViewport())
	t.Logf("browser checks took %v", time.Since(started).Round(time.Millisecond))

	if shotsDir != "" {
		docScreenshots(t, ctx, gw, clock, cycle, shotsDir, started)
	}
}

// docScreenshots writes the README's screenshots: every page, wide and
// at 360 px. It waits until the sparklines have a few minutes of data
// (FERRY_SCREENSHOT_WAIT, default 150s after the start) and lets the
// hall sensor stick so that one alert waits for acknowledgement.
func docScreenshots(t *testing.T, ctx context.Context, gw *testGateway, clock *plantClock, cycle time.Duration, dir string, started time.Time) {
	wait := 150 * time.Second
	if s := os.Getenv("FERRY_SCREENSHOT_WAIT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("FERRY_SCREENSHOT_WAIT: %v", err)
		}
		wait = d
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The humidity sensor sticks at 30% of the cycle: humidity_stuck is
	// raised 15 s later, while press1 stays hot until 40% (4 minutes on).
	target := cycle*30/100 + 5*time.Second - time.Since(started)
	if cur := time.Duration(clock.shift.Load()); target > cur {
		clock.shift.Store(int64(target))
	}
	if rest := wait - time.Since(started); rest > 0 {
		t.Logf("waiting %v for the sparklines to fill", rest.Round(time.Second))
		time.Sleep(rest)
	}
	waitFor(t, 60*time.Second, "humidity_stuck raised", func() bool { _, ok := activeAlert(gw.d, "humidity_stuck"); return ok })
	if _, ok := activeAlert(gw.d, "oil_hot"); !ok {
		t.Fatal("oil_hot is no longer active: the screenshots would miss it")
	}
	for _, mobile := range []bool{false, true} {
		if mobile {
			testutil.Browse(t, ctx, 10*time.Second, "viewport", chromedp.EmulateViewport(360, 780, chromedp.EmulateMobile))
		} else {
			testutil.Browse(t, ctx, 10*time.Second, "viewport", chromedp.EmulateViewport(1280, 800))
		}
		for _, p := range consolePages {
			testutil.Browse(t, ctx, 30*time.Second, "page "+p.name,
				chromedp.Navigate(gw.base+"/"+p.hash),
				chromedp.WaitVisible(chromedp.CSS(p.ready)),
				// Let one more poll (2 s) fill in the rates and the ages.
				chromedp.Sleep(2500*time.Millisecond))
			if !mobile {
				testutil.Screenshot(t, ctx, filepath.Join(dir, "console-"+p.name+".png"))
				continue
			}
			// A phone shows the first screen.
			png := mustRun(t, ctx, chromedp.CaptureScreenshot())
			file := filepath.Join(dir, "console-"+p.name+"-360.png")
			if err := os.WriteFile(file, png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// consolePages are the console's pages: the hash that opens each, and
// an element that shows it is filled.
var consolePages = []struct{ name, hash, ready string }{
	{"devices", "#devices", `tr[data-device="press1"]`},
	{"points", "#points/press1", `tr[data-point="press1.oil_temp"] svg.spark`},
	{"alerts", "#alerts", `#alerts-active table, #no-alerts`},
	{"health", "#health", `#card-uplink`},
}

func mustRun[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// pollTrue waits until the JavaScript expression is true.
func pollTrue(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Poll[bool](expr)(ctx, tg)
		return err
	})
}
