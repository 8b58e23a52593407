package web

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/sinks"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/rules"
)

type sseEvent struct{ name, data string }

func dialSSE(t *testing.T, url string) <-chan sseEvent {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %s", resp.Status)
	}
	ch := make(chan sseEvent, 64)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			switch line := sc.Text(); {
			case line == "":
				if ev.name != "" {
					ch <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[len("data: "):]
			}
		}
	}()
	return ch
}

func next(t *testing.T, ch <-chan sseEvent) (string, ferry.AlertJSON) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("stream ended")
		}
		var a ferry.AlertJSON
		if err := json.Unmarshal([]byte(ev.data), &a); err != nil {
			t.Fatalf("event data %q: %v", ev.data, err)
		}
		return ev.name, a
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	return "", ferry.AlertJSON{}
}

func call(t *testing.T, method, url, body string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: %s: %v", method, url, b, err)
		}
	}
	return resp.StatusCode
}

// TestAPI wires the engine to the sinks as internal/gateway does and drives the
// API over a real HTTP server: list, stream, acknowledge.
func TestAPI(t *testing.T) {
	var cfg sinks.Config
	cfg.SetDefaults()
	cfg.Log.Enabled = false
	sk, err := sinks.New(cfg, sinks.Options{Gateway: "gw1"})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := rules.New([]rules.Rule{{Name: "oil_hot", When: "press3.oil_temp > 80", Clear: "press3.oil_temp < 75", Severity: "critical"}},
		rules.Options{Emit: sk.Send})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newConsole(t, Catalog{}, Options{Gateway: "gw1", Alerts: eng, Stream: func() AlertStream { return sk.Stream() }}).Handler())
	t.Cleanup(srv.Close)
	testutil.Run(t, "sinks", 15*time.Second, sk.Run)
	send := func(v float64) {
		eng.Process(&ferry.Scan{Device: "press3", Samples: []ferry.Sample{{Point: "oil_temp", Value: ferry.FloatValue(v)}}})
	}

	var list []ferry.AlertJSON
	if code := call(t, "GET", srv.URL+"/api/alerts", "", &list); code != 200 || len(list) != 0 {
		t.Fatalf("GET /api/alerts: %d %v", code, list)
	}
	stream := dialSSE(t, srv.URL+"/api/alerts/stream")

	send(90)
	name, raised := next(t, stream)
	if name != "alert" || raised.State != "raised" || raised.Rule != "oil_hot" || raised.Gateway != "gw1" || raised.Value != 90.0 {
		t.Fatalf("stream: %s %+v", name, raised)
	}
	if code := call(t, "GET", srv.URL+"/api/alerts", "", &list); code != 200 || len(list) != 1 || list[0].ID != raised.ID {
		t.Fatalf("GET /api/alerts: %d %+v", code, list)
	}

	var e struct{ Error string }
	if code := call(t, "POST", srv.URL+"/api/alerts/nope/ack", "", &e); code != 404 || !strings.Contains(e.Error, "not found") {
		t.Fatalf("ack unknown: %d %+v", code, e)
	}
	if code := call(t, "POST", srv.URL+"/api/alerts/"+raised.ID+"/ack", "{by:", &e); code != 400 {
		t.Fatalf("ack with a bad body: %d", code)
	}
	if code := call(t, "GET", srv.URL+"/api/alerts/"+raised.ID+"/ack", "", nil); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET on ack: %d", code)
	}
	// A browser request from another site may not acknowledge.
	req, _ := http.NewRequest("POST", srv.URL+"/api/alerts/"+raised.ID+"/ack", strings.NewReader(`{"by": "mallory"}`))
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site ack: %d, want 403", resp.StatusCode)
	}
	var acked ferry.AlertJSON
	if code := call(t, "POST", srv.URL+"/api/alerts/"+raised.ID+"/ack", `{"by": "alice"}`, &acked); code != 200 ||
		acked.State != "acknowledged" || acked.ID != raised.ID || acked.Labels[rules.AckLabel] != "alice" {
		t.Fatalf("ack: %d %+v", code, acked)
	}
	if name, a := next(t, stream); name != "alert" || a.State != "acknowledged" || a.ID != raised.ID {
		t.Fatalf("stream after ack: %s %+v", name, a)
	}
	if code := call(t, "GET", srv.URL+"/api/alerts", "", &list); code != 200 || list[0].State != "acknowledged" {
		t.Fatalf("GET after ack: %+v", list)
	}

	// A client connecting now first gets the active alerts.
	late := dialSSE(t, srv.URL+"/api/alerts/stream")
	if name, a := next(t, late); name != "active" || a.ID != raised.ID || a.State != "acknowledged" {
		t.Fatalf("snapshot: %s %+v", name, a)
	}

	send(70)
	for _, ch := range []<-chan sseEvent{stream, late} {
		if name, a := next(t, ch); name != "alert" || a.State != "cleared" || a.ID != raised.ID {
			t.Fatalf("clear: %s %+v", name, a)
		}
	}
	if code := call(t, "POST", srv.URL+"/api/alerts/"+raised.ID+"/ack?by=bob", "", &e); code != 404 {
		t.Fatalf("ack of a cleared alert: %d", code)
	}
}

func TestStreamWithoutHub(t *testing.T) {
	eng, err := rules.New(nil, rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newConsole(t, Catalog{}, Options{Alerts: eng}).Handler())
	defer srv.Close()
	if code := call(t, "GET", srv.URL+"/api/alerts/stream", "", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("stream without hub: %d", code)
	}
}
