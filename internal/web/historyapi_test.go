package web

import (
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

// recordingHistorian answers with fixed points and records the queries it
// got: what this file tests is the handlers' parsing and rendering (the
// store itself is tested in internal/history and, end to end, in
// internal/gateway's TestHistoryAcrossRestart).
type recordingHistorian struct {
	got    []HistoryQuery
	alerts []AlertHistoryQuery
}

func (h *recordingHistorian) Query(q HistoryQuery) (HistorySeries, error) {
	h.got = append(h.got, q)
	nan := math.NaN()
	return HistorySeries{Device: q.Device, Point: q.Point, Step: 6 * time.Minute, Points: []HistoryPoint{
		{Time: q.From, Min: 1, Max: 3, Mean: 2, Last: 3, Count: 4},
		{Time: q.From.Add(6 * time.Minute), Min: nan, Max: nan, Mean: nan, Last: nan, Quality: ferry.Bad},
	}}, nil
}

func (h *recordingHistorian) Alerts(q AlertHistoryQuery) ([]ferry.AlertJSON, error) {
	h.alerts = append(h.alerts, q)
	return []ferry.AlertJSON{{ID: "a1", Rule: "hot", State: "acknowledged"}}, nil
}

func TestHistoryAPI(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	get := func(t *testing.T, srv *httptest.Server, path string) (int, string, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}

	off := httptest.NewServer(newConsole(t, Catalog{}, Options{Now: func() time.Time { return now }}).Handler())
	defer off.Close()
	if code, _, body := get(t, off, "/api/history?device=d&point=p"); code != http.StatusNotFound || !strings.Contains(body, "history is off") {
		t.Errorf("history off: %d %s", code, body)
	}
	if code, _, body := get(t, off, "/api/alerts/history?rule=x"); code != http.StatusOK || strings.TrimSpace(body) != "[]" {
		t.Errorf("alert history, history off: %d %s", code, body)
	}

	h := &recordingHistorian{}
	srv := httptest.NewServer(newConsole(t, Catalog{}, Options{Gateway: "gw1", Historian: h, Now: func() time.Time { return now }}).Handler())
	defer srv.Close()
	code, _, body := get(t, srv, "/api/history?device=d&point=p&point=q&from=168h&step=6m")
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	if len(h.got) != 2 || !h.got[0].From.Equal(now.Add(-168*time.Hour)) || !h.got[0].To.Equal(now) || h.got[0].Step != 6*time.Minute || h.got[1].Point != "q" {
		t.Fatalf("queries: %+v", h.got)
	}
	var js []historyJSON
	if err := json.Unmarshal([]byte(body), &js); err != nil {
		t.Fatal(err)
	}
	if len(js) != 2 || js[0].Resolution != "6m" || js[0].StepSecs != 360 || *js[0].Points[0].Mean != 2 || js[0].Points[1].Mean != nil || js[0].Points[1].Quality != "bad" {
		t.Fatalf("json: %s", body)
	}
	code, ctype, body := get(t, srv, "/api/history?device=d&point=p&from=2026-12-07T11:00:00Z&to=1796644800&format=csv")
	want := "device,point,time,min,max,mean,last,count,quality\n" +
		"d,p,2026-12-07T11:00:00Z,1,3,2,3,4,good\n" +
		"d,p,2026-12-07T11:06:00Z,,,,,0,bad\n"
	if code != http.StatusOK || !strings.HasPrefix(ctype, "text/csv") || body != want {
		t.Errorf("csv: %d %s\n%s", code, ctype, body)
	}
	if q := h.got[len(h.got)-1]; !q.To.Equal(time.Unix(1796644800, 0)) {
		t.Errorf("to as Unix seconds: %v", q.To)
	}
	for _, bad := range []string{
		"/api/history?device=d",
		"/api/history?device=d&point=p&from=soon",
		"/api/history?device=d&point=p&to=x",
		"/api/history?device=d&point=p&step=-1m",
		"/api/history?device=d&point=p&from=1h&to=2h",
		"/api/history?device=d" + strings.Repeat("&point=p", 21),
		"/api/alerts/history?limit=many",
	} {
		if code, _, body := get(t, srv, bad); code != http.StatusBadRequest {
			t.Errorf("GET %s: %d %s, want 400", bad, code, body)
		}
	}
	code, _, body = get(t, srv, "/api/alerts/history?device=oven&point=temp&rule=hot&state=acknowledged&severity=critical&q=alice&from=24h&limit=5")
	if code != http.StatusOK || !strings.Contains(body, `"gateway":"gw1"`) {
		t.Fatalf("alert history: %d %s", code, body)
	}
	aq := h.alerts[len(h.alerts)-1]
	if aq.Device != "oven" || aq.Point != "temp" || aq.Rule != "hot" || aq.State != "acknowledged" || aq.Severity != "critical" ||
		aq.Text != "alice" || aq.Limit != 5 || !aq.From.Equal(now.Add(-24*time.Hour)) || !aq.To.Equal(now) {
		t.Errorf("alert query: %+v", aq)
	}
}
