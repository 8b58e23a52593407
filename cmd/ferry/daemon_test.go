package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/config"
)

// lockedBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestQuarantineAlertReachesSinks: the buffer raises buffer_quarantined
// inside buffer.Open, before the daemon has its sinks; the alert must still
// reach them (here the log sink), not only the alerts lane.
func TestQuarantineAlertReachesSinks(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "buffer.db"), bytes.Repeat([]byte("not a bbolt file "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ferry.yaml")
	yml := "gateway: {id: gw}\ndata_dir: " + data + "\nalerts:\n  log: {enabled: true}\nhttp: {listen: \"off\"}\n"
	if err := os.WriteFile(path, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	d, err := newDaemon(cfg, daemonOptions{Logger: slog.New(slog.NewTextHandler(&out, nil)), ShutdownTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "sink=log rule=buffer_quarantined state=raised") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if !strings.Contains(out.String(), "sink=log rule=buffer_quarantined state=raised") {
		t.Errorf("the log sink did not get buffer_quarantined:\n%s", out.String())
	}
}
