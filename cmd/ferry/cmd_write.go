package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/ferry-edge/ferry/internal/tlsfile"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/gateway"
)

// operatorPasswordEnv holds the operator password for `ferry write`
// (or use -password-file).
const operatorPasswordEnv = "FERRY_OPERATOR_PASSWORD"

// cmdWrite sends one command to the running daemon's API (POST
// /api/commands) and prints its reply. It retries a request that got no
// answer with the same id: the gateway writes an id at most once, and a
// repeat returns the stored reply.
func cmdWrite(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("write", stderr)
	path := fs.String("config", config.DefaultPath, "the running daemon's configuration `FILE` (for its HTTP address and operator name)")
	url := fs.String("url", "", "the daemon's base `URL` (default: from http.listen in the configuration)")
	user := fs.String("user", "", "operator user name (default: http.operator.username)")
	pwFile := fs.String("password-file", "", "`FILE` holding the operator password (default: $"+operatorPasswordEnv+")")
	caFile := fs.String("ca", "", "PEM `FILE` of the CA that signed the daemon's certificate (https)")
	id := fs.String("id", "", "command `ID` (default: a random one, printed; repeat it to get the same reply)")
	deadline := fs.Duration("deadline", 30*time.Second, "the command is refused if it cannot be written within this `DURATION`")
	jsonOut := fs.Bool("json", false, "print the reply as JSON")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ferry write [-config FILE] [flags] DEVICE POINT VALUE\n\n"+
			"Writes VALUE to a writable point through the running daemon (POST /api/commands with the\n"+
			"operator credential). VALUE is a number, true/false, or text (a JSON string to force text).\n"+
			"Exit status: 0 when written and read back, 1 otherwise.\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 3 {
		return usageError("want DEVICE POINT VALUE, got %d arguments", fs.NArg())
	}
	cfg, err := gateway.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return &exitError{code: 1, err: fmt.Errorf("%s is not valid", *path)}
	}
	base := *url
	if base == "" {
		if base, err = apiBase(cfg); err != nil {
			return err
		}
	}
	name := *user
	if name == "" && cfg.HTTP.Operator != nil {
		name = cfg.HTTP.Operator.Username
	}
	if name == "" {
		return usageError("no operator: set http.operator in %s or give -user", *path)
	}
	password := os.Getenv(operatorPasswordEnv)
	if *pwFile != "" {
		b, err := os.ReadFile(*pwFile)
		if err != nil {
			return err
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	if password == "" {
		return usageError("no operator password: set $%s or give -password-file", operatorPasswordEnv)
	}
	if *id == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		*id = "cli-" + hex.EncodeToString(b[:])
	}
	req := ferry.CommandRequest{ID: *id, Device: fs.Arg(0), Point: fs.Arg(1), Value: valueJSON(fs.Arg(2)),
		Deadline: time.Now().Add(*deadline)}
	body, _ := json.Marshal(req)

	client, err := apiClient(*caFile)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "command %s: write %s.%s = %s\n", *id, req.Device, req.Point, req.Value)
	reply, err := postCommand(ctx, client, strings.TrimRight(base, "/")+"/api/commands", name, password, body, req.Deadline)
	if err != nil {
		return err
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(reply)
	} else {
		line := reply.Status
		if reply.ReadBack != nil {
			line += fmt.Sprintf(" (read back %v)", reply.ReadBack)
		}
		if reply.Reason != "" {
			line += ": " + reply.Reason
		}
		fmt.Fprintln(stdout, line)
	}
	if reply.Status != ferry.CommandDone {
		return &exitError{code: 1, err: fmt.Errorf("command %s %s", reply.ID, reply.Status)}
	}
	return nil
}

// postCommand posts body and returns the reply. A request that gets no
// answer (connection refused, reset, timeout) is sent again with the same
// id until one comes or the deadline passes: the id makes it safe.
func postCommand(ctx context.Context, c *http.Client, url, user, pass string, body []byte, deadline time.Time) (ferry.CommandReply, error) {
	var reply ferry.CommandReply
	var lastErr error
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return reply, err
		}
		req.SetBasicAuth(user, pass)
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err == nil {
			b, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			switch {
			case rerr != nil:
				err = rerr
			case resp.StatusCode != http.StatusOK:
				var e struct{ Error string }
				_ = json.Unmarshal(b, &e)
				if e.Error == "" {
					e.Error = strings.TrimSpace(string(b))
				}
				return reply, fmt.Errorf("%s: %s: %s", url, resp.Status, e.Error)
			default:
				if err := json.Unmarshal(b, &reply); err != nil {
					return reply, fmt.Errorf("%s: reply %q: %w", url, b, err)
				}
				return reply, nil
			}
		}
		lastErr = err
		// Past the deadline the gateway refuses it anyway; one more
		// request after it only fetches a stored reply.
		if time.Now().After(deadline.Add(5*time.Second)) || ctx.Err() != nil {
			return reply, fmt.Errorf("no reply from %s: %w", url, lastErr)
		}
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second)):
		}
	}
}

// valueJSON is VALUE as JSON: a JSON number, bool or string as given,
// anything else as a string.
func valueJSON(s string) json.RawMessage {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err == nil {
		switch v.(type) {
		case float64, bool, string:
			return json.RawMessage(s)
		}
	}
	b, _ := json.Marshal(s)
	return b
}

// apiBase is the base URL of the daemon's API from http.listen.
func apiBase(cfg *config.Config) (string, error) {
	if cfg.HTTP.Disabled() {
		return "", errors.New("the daemon's HTTP listener is off (http.listen: off): ferry write needs it")
	}
	host, port, err := net.SplitHostPort(cfg.HTTP.Listen)
	if err != nil {
		return "", fmt.Errorf("http.listen %q: %w", cfg.HTTP.Listen, err)
	}
	if port == "0" {
		return "", errors.New("http.listen has port 0 (chosen at start): give -url")
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "http"
	if cfg.HTTP.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}

func apiClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pool, err := tlsfile.Pool(caFile)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	// A write and its read back are bounded by commands.write_timeout
	// (at most 1m) on the gateway.
	return &http.Client{Transport: tr, Timeout: 90 * time.Second}, nil
}
