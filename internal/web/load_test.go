package web_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-edge/ferry/internal/gateway"
	"github.com/ferry-edge/ferry/internal/web"
)

// TestFromConfigFile loads an http section through the real loader
// (password_hash_file included) and serves with it.
func TestFromConfigFile(t *testing.T) {
	dir := t.TempDir()
	hash, _ := bcrypt.GenerateFromPassword([]byte("scrape-me"), bcrypt.MinCost)
	os.WriteFile(filepath.Join(dir, "http.hash"), append(hash, '\n'), 0o600)
	yaml := `gateway: {id: gw1}
data_dir: ` + dir + `
http:
  listen: 127.0.0.1:0
  basic_auth:
    username: prometheus
    password_hash_file: http.hash
`
	p := filepath.Join(dir, "ferry.yaml")
	os.WriteFile(p, []byte(yaml), 0o600)
	c, err := gateway.LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	s, err := web.New(web.Options{Config: c.HTTP})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	req, _ := http.NewRequest("GET", "http://"+s.Addr()+"/readyz", nil)
	req.SetBasicAuth("prometheus", "scrape-me")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d with the password from password_hash_file", resp.StatusCode)
	}

	// A plain password where the hash belongs is refused at load.
	os.WriteFile(p, []byte(strings.Replace(yaml, "password_hash_file: http.hash", "password_hash: scrape-me", 1)), 0o600)
	_, err = gateway.LoadConfig(p)
	if err == nil || !strings.Contains(err.Error(), "http.basic_auth.password_hash: is not a bcrypt hash") {
		t.Fatalf("plain password: %v", err)
	}
	if strings.Contains(err.Error(), "scrape-me") {
		t.Fatalf("the error prints the password: %v", err)
	}
}
