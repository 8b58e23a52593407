package web

import (
	"context"
	"fmt"
	"math"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/history"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS polls a JavaScript condition until it is true.
func waitJS(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		for {
			ok, err := chromedp.Evaluate[bool](expr)(ctx, tg)
			if err == nil && ok {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s never became true: %w", expr, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
}

// runJS evaluates a JavaScript statement for its effect.
func runJS(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool]("(() => { "+expr+"; return true; })()")(ctx, tg)
		return err
	})
}

// artifactDir is where the browser test writes its screenshots:
// $FERRY_ARTIFACTS when set (kept), else a directory under the test's
// temporary directory (removed after the test).
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("FERRY_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(t.TempDir(), "artifacts")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	return dir
}

// storeHistorian adapts a history.Store to the web package's Historian,
// as internal/gateway does.
type storeHistorian struct{ st *history.Store }

func (h storeHistorian) Query(q HistoryQuery) (HistorySeries, error) {
	s, err := h.st.Query(history.Query{Device: q.Device, Point: q.Point, From: q.From, To: q.To, Step: q.Step})
	if err != nil {
		return HistorySeries{}, err
	}
	out := HistorySeries{Device: s.Device, Point: s.Point, Step: s.Step, Points: make([]HistoryPoint, len(s.Points))}
	for i, p := range s.Points {
		out.Points[i] = HistoryPoint{Time: p.Time, Min: p.Min, Max: p.Max, Mean: p.Mean, Last: p.Last, Count: p.Count, Quality: p.Quality}
	}
	return out, nil
}

func (h storeHistorian) Alerts(q AlertHistoryQuery) ([]ferry.AlertJSON, error) {
	return h.st.Alerts(history.AlertQuery{
		Device: q.Device, Point: q.Point, Rule: q.Rule, State: q.State, Severity: q.Severity,
		Text: q.Text, From: q.From, To: q.To, Limit: q.Limit,
	})
}

// Seeded history: the last seedMinutes minutes of press1.pressure_1 and
// press0.temp_0, one sample a minute; press1.pressure_1 reads Bad (no
// value) for badMinutes minutes from badFrom minutes ago.
const (
	seedMinutes = 26 * 60
	badFrom     = 10 * 60
	badMinutes  = 30
)

// seedHistory writes the seeded history into a real store in dir and
// returns it open.
func seedHistory(t *testing.T, dir string, now time.Time) *history.Store {
	t.Helper()
	var cfg history.Config
	cfg.SetDefaults()
	st, err := history.Open(dir, cfg, history.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	first := now.Truncate(time.Minute).Add(-seedMinutes * time.Minute)
	for m := range seedMinutes {
		at := first.Add(time.Duration(m) * time.Minute)
		ago := seedMinutes - m
		pressure := ferry.Sample{Device: "press1", Point: "pressure_1", Time: at, Value: ferry.FloatValue(150 + 40*math.Sin(float64(m)/90))}
		if ago <= badFrom && ago > badFrom-badMinutes {
			pressure.Value = ferry.Value{}
			pressure.Quality = ferry.Quality{Status: ferry.Bad, Reason: "timeout"}
		}
		st.Add(&ferry.Scan{Device: "press1", Time: at, Samples: []ferry.Sample{pressure}})
		st.Add(&ferry.Scan{Device: "press0", Time: at, Samples: []ferry.Sample{{Device: "press0", Point: "temp_0", Time: at, Value: ferry.FloatValue(60 + float64(m%120)/10)}}})
	}
	raised := now.Add(-3 * time.Hour)
	base := ferry.Alert{ID: "oil_hot/press1/pressure_1", Rule: "oil_hot", Device: "press1", Point: "pressure_1", Severity: ferry.SeverityCritical,
		Value: ferry.FloatValue(191.5), Message: "pressure above 190 bar", Since: raised}
	for i, stt := range []ferry.AlertState{ferry.AlertRaised, ferry.AlertAcknowledged, ferry.AlertCleared} {
		a := base
		a.State, a.Time = stt, raised.Add(time.Duration(i)*10*time.Minute)
		if stt == ferry.AlertAcknowledged {
			a.Labels = map[string]string{"acknowledged_by": "line tech"}
		}
		st.Alert(a)
	}
	other := base
	other.ID, other.Rule, other.Device, other.Point, other.Severity, other.State, other.Time, other.Message = "temp_high/press0/temp_0", "temp_high", "press0", "temp_0", ferry.SeverityWarning, ferry.AlertRaised, now.Add(-time.Hour), "temperature high"
	st.Alert(other)
	if err := st.Commit(); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestConsoleHistoryInBrowser drives the console's search, trend, alert
// history and device pages in a headless Chromium, against the real
// server (its CSP and headers) reading a real history store seeded with
// 26 hours of two points and an alert that was raised, acknowledged and
// cleared.
func TestConsoleHistoryInBrowser(t *testing.T) {
	chrome := testutil.Chromium(t)
	shots := artifactDir(t)
	now := time.Now()
	st := seedHistory(t, t.TempDir(), now)
	cat := bigCatalog(3, 8)
	srv := newConsole(t, cat, Options{
		Historian: storeHistorian{st},
		Devices: func() []ferry.DeviceStatus {
			return []ferry.DeviceStatus{
				{Device: "press0", Protocol: "modbus", Endpoint: "tcp://10.0.0.4:502", Connected: true, Since: now.Add(-time.Hour), LastPoll: now, PollDuration: 8 * time.Millisecond},
				{Device: "press1", Protocol: "modbus", Endpoint: "tcp://10.0.0.5:502", LastError: "read holding registers unit 1: i/o timeout",
					Since: now.Add(-time.Minute), LastPoll: now, PollDuration: 1500 * time.Millisecond, Errors: map[string]uint64{"timeout": 7}},
			}
		},
		Plan: func(dev string) *DevicePlan {
			if dev != "press1" {
				return nil
			}
			return &DevicePlan{Interval: time.Second, Timeout: 1500 * time.Millisecond, Requests: []string{
				"unit 1 holding 100..107 (8 registers) → 8 points: temp_0, pressure_1, speed_2, count_3, temp_4, pressure_5, speed_6, count_7",
			}, Bad: []string{"holding 108..109"}}
		},
	})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	ctx := testutil.Browser(t, chrome)

	// Search finds a point by a word of its description and its device.
	testutil.Browse(t, ctx, 30*time.Second, "open the console", chromedp.Navigate(ts.URL+"/#devices"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-device="press1"]`)))
	// Every later visit is a navigation within this page: a violation of
	// the console's Content-Security-Policy by what the new views do
	// (an inline style, an eval) is recorded here.
	testutil.Browse(t, ctx, 10*time.Second, "watch for CSP violations",
		runJS(`window.cspViolations = []; document.addEventListener('securitypolicyviolation', (e) => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI))`))
	testutil.Browse(t, ctx, 20*time.Second, "search for press1's hydraulic pressure",
		chromedp.SendKeys(chromedp.CSS(`#search`), "hydraulic press1"),
		chromedp.WaitVisible(chromedp.CSS(`#search-results[data-q="hydraulic press1"] li[data-device="press1"][data-point="pressure_1"]`)))
	if n := eval[int](t, ctx, `document.querySelectorAll('#search-results li[data-point]').length`); n != 2 {
		t.Errorf("search 'hydraulic press1': %d points listed, want press1's 2 pressure points", n)
	}
	testutil.Screenshot(t, ctx, filepath.Join(shots, "search.png"))

	// Picking it opens its 24 h trend, drawn from the seeded history.
	testutil.Browse(t, ctx, 30*time.Second, "open the trend of press1.pressure_1",
		chromedp.Click(chromedp.CSS(`#search-results li[data-point="pressure_1"][data-device="press1"]`)),
		chromedp.WaitVisible(chromedp.CSS(`svg.trend path.line[data-series="press1.pressure_1"]`)))
	if loc := eval[string](t, ctx, `location.hash`); loc != "#trend/24h/press1:pressure_1" {
		t.Errorf("location %s", loc)
	}
	line := `document.querySelector('svg.trend path.line[data-series="press1.pressure_1"]')`
	attr := func(name string) string { return eval[string](t, ctx, line+`.getAttribute('`+name+`')`) }
	vertices, _ := strconv.Atoi(attr("data-vertices"))
	segs, _ := strconv.Atoi(attr("data-segments"))
	gaps, _ := strconv.Atoi(attr("data-gaps"))
	d := attr("d")
	// 24 h at one bucket a minute: 1440 minutes, less the 30 Bad ones (an
	// edge minute may fall out of the window).
	if want := 24*60 - badMinutes; vertices < want-2 || vertices > want || attr("data-resolution") != "1m" {
		t.Errorf("trend: %d vertices at %s, want about %d one-minute buckets", vertices, attr("data-resolution"), want)
	}
	if segs != 2 || gaps != badMinutes || strings.Count(d, "M") != 2 || strings.Count(d, "L") != vertices-2 {
		t.Errorf("trend: %d segments, %d gap marks, path with %d M and %d L: want the Bad half hour drawn as one gap of %d buckets",
			segs, gaps, strings.Count(d, "M"), strings.Count(d, "L"), badMinutes)
	}
	// The line follows the data: its highest and lowest points are the
	// sine's (150±40), not a flat line.
	span := eval[float64](t, ctx, `(() => { const ys = [...`+line+`.getAttribute('d').matchAll(/[ML][0-9.]+,([0-9.]+)/g)].map(m => +m[1]); return Math.max(...ys) - Math.min(...ys); })()`)
	if span < 150 {
		t.Errorf("trend line spans %.0f of the chart's 340 units in height, want the 110..190 swing drawn across most of it", span)
	}
	// The gap sits where the Bad half hour is: 10 h ago of 24 h.
	gapX := eval[float64](t, ctx, `(() => { const m = [...`+line+`.getAttribute('d').matchAll(/M([0-9.]+),/g)]; return +m[1][1]; })()`)
	if want := 64 + (1000-64-14)*(1-float64(badFrom-badMinutes)/(24*60)); math.Abs(gapX-want) > 3 {
		t.Errorf("the line resumes at x=%.1f, want %.1f (after the Bad half hour)", gapX, want)
	}

	// A second point on the same chart.
	testutil.Browse(t, ctx, 30*time.Second, "add press0.temp_0",
		runJS(`document.querySelector('#search').value = ''`),
		chromedp.SendKeys(chromedp.CSS(`#search`), "press0.temp_0"),
		chromedp.WaitVisible(chromedp.CSS(`#search-results[data-q="press0.temp_0"] li[data-device="press0"][data-point="temp_0"]`)),
		chromedp.Click(chromedp.CSS(`#search-results li[data-device="press0"][data-point="temp_0"]`)),
		chromedp.WaitVisible(chromedp.CSS(`svg.trend path.line[data-series="press0.temp_0"]`)))
	if n := eval[int](t, ctx, `document.querySelectorAll('svg.trend path.line').length`); n != 2 {
		t.Errorf("%d lines on the chart, want 2", n)
	}
	if loc := eval[string](t, ctx, `location.hash`); loc != "#trend/24h/press1:pressure_1+press0:temp_0" {
		t.Errorf("location %s", loc)
	}
	testutil.Screenshot(t, ctx, filepath.Join(shots, "trend-24h.png"))

	// 1 h: raw samples; 7 d: the whole seeded 26 h in rollups.
	testutil.Browse(t, ctx, 30*time.Second, "1 h range",
		chromedp.Click(chromedp.CSS(`#trend-ranges button[data-range="1h"]`)),
		waitJS(line+`?.getAttribute('data-resolution') === 'raw'`))
	// One a minute; the last at the minute before the test started, and
	// the window moved on since.
	if v, _ := strconv.Atoi(attr("data-vertices")); v < 57 || v > 60 {
		t.Errorf("1 h: %d raw samples drawn, want about 59", v)
	}
	testutil.Browse(t, ctx, 30*time.Second, "7 d range",
		chromedp.Click(chromedp.CSS(`#trend-ranges button[data-range="7d"]`)),
		waitJS(line+`?.getAttribute('data-resolution') === '6m'`))
	// Zoom: a drag across the chart's middle asks for that window.
	before := eval[string](t, ctx, `document.querySelector('svg.trend').getAttribute('data-from')`)
	testutil.Browse(t, ctx, 30*time.Second, "drag to zoom",
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[bool](`(() => {
				const el = document.querySelector('svg.trend'); const r = el.getBoundingClientRect();
				const ev = (type, f) => el.dispatchEvent(new PointerEvent(type, {bubbles: true, pointerId: 1, clientX: r.left + r.width * f, clientY: r.top + r.height / 2}));
				ev('pointerdown', 0.85); ev('pointermove', 0.95); ev('pointerup', 0.95); return true; })()`)(ctx, tg)
			return err
		}),
		waitJS(`document.querySelector('svg.trend').getAttribute('data-from') !== `+strconv.Quote(before)),
		chromedp.WaitVisible(chromedp.CSS(`#trend-reset`)))
	from, _ := time.Parse(time.RFC3339Nano, eval[string](t, ctx, `document.querySelector('svg.trend').getAttribute('data-from')`))
	to, _ := time.Parse(time.RFC3339Nano, eval[string](t, ctx, `document.querySelector('svg.trend').getAttribute('data-to')`))
	if w := to.Sub(from); w < 12*time.Hour || w > 20*time.Hour {
		t.Errorf("zoomed window %v..%v (%v), want about a tenth of 7 days", from, to, w)
	}

	// Alert history: the raise, the acknowledgement (with who) and the
	// clear, then filtered.
	testutil.Browse(t, ctx, 30*time.Second, "alert history",
		chromedp.Navigate(ts.URL+"/#history"),
		chromedp.WaitVisible(chromedp.CSS(`#ah-list tr[data-rule="oil_hot"][data-state="raised"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#ah-list tr[data-rule="oil_hot"][data-state="acknowledged"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#ah-list tr[data-rule="oil_hot"][data-state="cleared"]`)))
	if s := eval[string](t, ctx, `document.querySelector('#ah-list tr[data-rule="oil_hot"][data-state="acknowledged"]').textContent`); !strings.Contains(s, "by line tech") {
		t.Errorf("acknowledged row %q does not say who", s)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll('#ah-list tbody tr').length`); n != 4 {
		t.Errorf("%d transitions listed, want 4", n)
	}
	testutil.Screenshot(t, ctx, filepath.Join(shots, "alert-history.png"))
	testutil.Browse(t, ctx, 20*time.Second, "filter: cleared on press1",
		chromedp.SetValue(chromedp.CSS(`#ah-state`), "cleared"),
		runJS(`document.querySelector('#ah-state').dispatchEvent(new Event('change'))`),
		waitJS(`document.querySelectorAll('#ah-list tbody tr').length === 1 && !!document.querySelector('#ah-list tr[data-state="cleared"]')`))
	testutil.Browse(t, ctx, 20*time.Second, "filter: device press0, any state",
		chromedp.SetValue(chromedp.CSS(`#ah-state`), ""),
		chromedp.SetValue(chromedp.CSS(`#ah-device`), "press0"),
		runJS(`document.querySelector('#ah-device').dispatchEvent(new Event('change'))`),
		waitJS(`document.querySelectorAll('#ah-list tbody tr').length === 1 && !!document.querySelector('#ah-list tr[data-rule="temp_high"]')`))

	// The device page: last error, poll latency, request plan.
	testutil.Browse(t, ctx, 30*time.Second, "device page of press1",
		chromedp.Navigate(ts.URL+"/#devices"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-device="press1"] a.details`)),
		chromedp.Click(chromedp.CSS(`tr[data-device="press1"] a.details`)),
		chromedp.WaitVisible(chromedp.CSS(`#device-plan ol.plan li`)))
	for sel, want := range map[string]string{
		`#device-title`:       "press1",
		`#device-last-error`:  "i/o timeout",
		`#device-poll-ms`:     "1,500 ms",
		`#device-plan`:        "unit 1 holding 100..107 (8 registers) → 8 points",
		`#device-plan ul.bad`: "holding 108..109",
	} {
		if s := eval[string](t, ctx, `document.querySelector('`+sel+`').textContent`); !strings.Contains(strings.ReplaceAll(s, "\u202f", " "), want) && !strings.Contains(s, strings.ReplaceAll(want, ",", "")) {
			t.Errorf("%s: %q, want %q in it", sel, s, want)
		}
	}
	if n := eval[int](t, ctx, `document.querySelectorAll('#device-body tr[data-point]').length`); n != 8 {
		t.Errorf("device page lists %d points, want press1's 8", n)
	}
	testutil.Browse(t, ctx, 20*time.Second, "recent alerts on the device page",
		waitJS(`!!document.querySelector('#device-body tr[data-rule="oil_hot"][data-state="cleared"]')`))
	testutil.Screenshot(t, ctx, filepath.Join(shots, "device.png"))

	if v := eval[string](t, ctx, `JSON.stringify(window.cspViolations)`); v != "[]" {
		t.Errorf("Content-Security-Policy violations: %s", v)
	}

	// A 360 px phone: the new pages are no wider than the screen.
	testutil.Browse(t, ctx, 10*time.Second, "360 px viewport", chromedp.EmulateViewport(360, 780))
	for hash, ready := range map[string]string{
		"#trend/24h/press1:pressure_1": `svg.trend path.line`,
		"#history/press1":              `#ah-list tr[data-rule="oil_hot"]`,
		"#device/press1":               `#device-plan ol.plan li`,
	} {
		testutil.Browse(t, ctx, 30*time.Second, hash+" at 360 px", chromedp.Navigate(ts.URL+"/"+hash), chromedp.WaitVisible(chromedp.CSS(ready)))
		if w := eval[int](t, ctx, `document.documentElement.scrollWidth`); w > 360 {
			t.Errorf("%s at 360 px is %d px wide", hash, w)
		}
	}
	testutil.Screenshot(t, ctx, filepath.Join(shots, "trend-360.png"))
	t.Logf("screenshots in %s", shots)
}
