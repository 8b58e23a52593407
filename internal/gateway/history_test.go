package gateway

import (
	"encoding/csv"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/history"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/rules"
)

type seriesJSON struct {
	Device     string `json:"device"`
	Point      string `json:"point"`
	Resolution string `json:"resolution"`
	Points     []struct {
		T       time.Time `json:"t"`
		Mean    *float64  `json:"mean"`
		Count   uint32    `json:"count"`
		Quality string    `json:"quality"`
	} `json:"points"`
}

// TestHistoryAcrossRestart runs a gateway with history on against a
// simulated press, twice. The API serves raw samples for a short range
// and rollups for a long one, as JSON and CSV; the alert history keeps
// the raise and the acknowledgement (with who) across the restart; and
// in the end the file's rollups hold every raw sample exactly once: the
// restart neither lost nor doubled a minute.
func TestHistoryAcrossRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and two daemons")
	}
	p := startPlant(t, 1)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	cfg := plantConfig{
		DataDir:  filepath.Join(dir, "data"),
		Interval: map[string]string{"press1": "50ms"},
		Rules:    []string{`{name: turning, when: "press1.speed >= 0", severity: warning, message: "press turning"}`},
		Extra:    "history: {enabled: true, commit_interval: 100ms}\n",
	}
	testutil.WriteFile(t, path, cfg.yaml(p))
	h := startDaemon(t, path)

	getJSON := func(path string, v any) {
		t.Helper()
		code, b := h.get(path)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, b)
		}
		if err := json.Unmarshal([]byte(b), v); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, b)
		}
	}
	var raw []seriesJSON
	waitFor(t, 20*time.Second, "20 raw samples of press1.speed in the history", func() bool {
		getJSON("/api/history?device=press1&point=speed&point=oil_temp&from=10m", &raw)
		return len(raw) == 2 && len(raw[0].Points) >= 20 && len(raw[1].Points) >= 20
	})
	if raw[0].Resolution != "raw" || raw[0].Point != "speed" || raw[1].Point != "oil_temp" || raw[0].Points[0].Mean == nil {
		t.Fatalf("10 minutes: %+v", raw[0])
	}
	var long []seriesJSON
	getJSON("/api/history?device=press1&point=speed&from=168h", &long)
	if long[0].Resolution != "6m" || len(long[0].Points) == 0 || long[0].Points[0].Count == 0 {
		t.Fatalf("7 days: resolution %q, %d points", long[0].Resolution, len(long[0].Points))
	}
	// CSV: a header and one row per raw sample.
	code, body := h.get("/api/history?device=press1&point=speed&from=10m&format=csv")
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if code != http.StatusOK || err != nil || len(rows) < 21 {
		t.Fatalf("csv: %d %v %d rows", code, err, len(rows))
	}
	if strings.Join(rows[0], ",") != "device,point,time,min,max,mean,last,count,quality" || rows[1][0] != "press1" || rows[1][1] != "speed" {
		t.Fatalf("csv rows: %q %q", rows[0], rows[1])
	}
	if _, err := strconv.ParseFloat(rows[1][5], 64); err != nil {
		t.Fatalf("csv mean %q: %v", rows[1][5], err)
	}
	for _, bad := range []string{"/api/history?point=speed", "/api/history?device=press1&point=speed&from=yesterday", "/api/history?device=press1&point=speed&step=x"} {
		if code, _ := h.get(bad); code != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 400", bad, code)
		}
	}

	var a ferry.Alert
	waitFor(t, 10*time.Second, "alert turning raised", func() bool {
		var ok bool
		a, ok = activeAlert(h.d, "turning")
		return ok
	})
	if _, err := h.d.engine.Ack(a.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	var alerts []ferry.AlertJSON
	waitFor(t, 10*time.Second, "the ack in the alert history", func() bool {
		getJSON("/api/alerts/history?rule=turning&q=alice", &alerts)
		return len(alerts) == 1
	})
	for _, m := range []string{"ferry_history_samples_total", "ferry_history_alerts_total", "ferry_history_commits_total", "ferry_history_bytes"} {
		if v, ok := h.metric(m); !ok || v <= 0 {
			t.Errorf("%s = %v (exported: %v), want > 0", m, v, ok)
		}
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}

	h = startDaemon(t, path)
	waitFor(t, 10*time.Second, "samples after the restart", func() bool { return h.scans("press1") >= 10 })
	getJSON("/api/alerts/history?rule=turning", &alerts)
	var states []string
	for _, x := range alerts {
		states = append(states, x.State)
	}
	// The restart restores the alert from the buffer's state: no second
	// raise, and the first two transitions survived.
	if len(alerts) < 2 || alerts[len(alerts)-1].State != "raised" || alerts[len(alerts)-2].State != "acknowledged" ||
		alerts[len(alerts)-2].Labels[rules.AckLabel] != "alice" || alerts[0].Gateway != gatewayID {
		t.Fatalf("alert history after restart: %v %+v", states, alerts)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}

	// The file of the stopped gateway: every raw sample counted once in
	// the rollups, over both runs.
	var hc history.Config
	hc.SetDefaults()
	st, err := history.Open(cfg.DataDir, hc, history.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	for _, pt := range []string{"speed", "oil_temp", "cycles", "running"} {
		rs, err := st.Query(history.Query{Device: "press1", Point: pt, From: now.Add(-time.Hour), To: now.Add(time.Minute), Step: time.Nanosecond})
		if err != nil {
			t.Fatal(err)
		}
		ro, err := st.Query(history.Query{Device: "press1", Point: pt, From: now.Add(-time.Hour), To: now.Add(time.Minute), Step: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		var n uint32
		for _, r := range ro.Points {
			n += r.Count
		}
		var good uint32
		for _, r := range rs.Points {
			good += r.Count
		}
		if n != good || n < 30 {
			t.Errorf("%s: rollups count %d samples, raw holds %d", pt, n, good)
		}
	}
}
