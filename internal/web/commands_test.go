package web

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

// commandRecorder is Options.Command for the handler's tests: it records
// what reached the command path (the path itself is internal/command's,
// tested there and end to end in internal/gateway).
type commandRecorder struct {
	mu    sync.Mutex
	calls []string
}

func (c *commandRecorder) do(ctx context.Context, body []byte, by string) ferry.CommandReply {
	c.mu.Lock()
	c.calls = append(c.calls, by+" "+string(body))
	c.mu.Unlock()
	return ferry.CommandReply{ID: "c1", Status: ferry.CommandDone, ReadBack: 42.0, At: time.Unix(0, 0).UTC()}
}

func (c *commandRecorder) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}

// TestCommandAuth: POST /api/commands takes the operator credential only
// (401 without or with a wrong one, 403 with the read-only one), refuses
// cross-site browser requests (CSRF), and hands the body to the command
// path with the operator's name.
func TestCommandAuth(t *testing.T) {
	cfg := local()
	cfg.BasicAuth = &BasicAuth{Username: "viewer", PasswordHash: mustHash(t, "read only")}
	cfg.Operator = &BasicAuth{Username: "operator", PasswordHash: mustHash(t, "open sesame")}
	rec := &commandRecorder{}
	s, logs := start(t, cfg, Options{Command: rec.do})
	url := "http://" + s.Addr() + commandsPath
	body := `{"id": "c1", "device": "press", "point": "setpoint", "value": 42}`

	tests := []struct {
		name       string
		method     string
		user, pass string
		hdr        []string
		want       int
		wantErr    string
	}{
		{"no credential", "POST", "", "", nil, 401, "operator credential"},
		{"wrong operator password", "POST", "operator", "sesame", nil, 401, "operator credential"},
		{"unknown user", "POST", "mallory", "open sesame", nil, 401, "operator credential"},
		{"read-only credential", "POST", "viewer", "read only", nil, 403, "read-only"},
		{"cross-site browser request", "POST", "operator", "open sesame", []string{"Sec-Fetch-Site", "cross-site"}, 403, ""},
		{"cross-origin browser request", "POST", "operator", "open sesame", []string{"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"}, 403, ""},
		{"GET", "GET", "operator", "open sesame", nil, 405, "use POST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, got := send(t, tt.method, url, body, tt.user, tt.pass, tt.hdr...)
			if code != tt.want || !strings.Contains(got, tt.wantErr) {
				t.Fatalf("%d %s, want %d with %q", code, got, tt.want, tt.wantErr)
			}
			if rec.n() != 0 {
				t.Fatalf("the request reached the command path: %v", rec.calls)
			}
		})
	}
	// The read-only credential still reads the rest of the API.
	if code, _, _ := send(t, "GET", "http://"+s.Addr()+"/api/status", "", "viewer", "read only"); code != 200 {
		t.Fatalf("read-only GET: %d", code)
	}
	code, _, got := send(t, "POST", url, body, "operator", "open sesame", "Sec-Fetch-Site", "same-origin")
	var reply ferry.CommandReply
	if err := json.Unmarshal([]byte(got), &reply); err != nil || code != 200 || reply.Status != ferry.CommandDone {
		t.Fatalf("operator: %d %s (%v)", code, got, err)
	}
	if rec.n() != 1 || rec.calls[0] != "operator "+body {
		t.Fatalf("command path got %q", rec.calls)
	}
	if code, _, _ := send(t, "POST", url, strings.Repeat(" ", maxCommandBody+1), "operator", "open sesame"); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d", code)
	}
	if strings.Contains(logs.String(), "open sesame") {
		t.Fatal("the operator password is in the log")
	}
}

// TestCommandNoOperator: without http.operator the API takes no commands.
func TestCommandNoOperator(t *testing.T) {
	rec := &commandRecorder{}
	s, _ := start(t, local(), Options{Command: rec.do})
	code, _, got := send(t, "POST", "http://"+s.Addr()+commandsPath, `{"id": "c1"}`, "operator", "x")
	if code != 403 || !strings.Contains(got, "http.operator") || rec.n() != 0 {
		t.Fatalf("%d %s, %d calls", code, got, rec.n())
	}
}

func TestOperatorConfig(t *testing.T) {
	cfg := local()
	cfg.BasicAuth = &BasicAuth{Username: "same", PasswordHash: mustHash(t, "a")}
	cfg.Operator = &BasicAuth{Username: "same", PasswordHash: mustHash(t, "b")}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "operator.username: \"same\" is also basic_auth's user") {
		t.Fatalf("Validate: %v", err)
	}
	cfg.Operator = &BasicAuth{Username: "op", PasswordHash: "plain"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "operator.password_hash: is not a bcrypt hash") {
		t.Fatalf("Validate: %v", err)
	}
}

func send(t *testing.T, method, url, body, user, pass string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}
