package buffer

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	ftest "github.com/ferry-edge/ferry/internal/testutil"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"defaults", func(*Config) {}, ""},
		{"small max_size", func(c *Config) { c.MaxSize = 1000 }, "max_size: 1000B is below the minimum of 1MiB"},
		{"short max_age", func(c *Config) { c.MaxAge = time.Second }, "max_age: 1s is below the minimum of 1m"},
		{"negative dedupe_window", func(c *Config) { c.DedupeWindow = -time.Second }, "dedupe_window: -1s is outside 0..24h"},
		{"long dedupe_window", func(c *Config) { c.DedupeWindow = 25 * time.Hour }, "dedupe_window: 25h0m0s is outside 0..24h"},
		{"dedupe off", func(c *Config) { c.DedupeWindow = 0 }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			tt.edit(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestOpenRefusesBadInput(t *testing.T) {
	bad := testConfig()
	bad.MaxAge = 0
	tests := []struct {
		name string
		cfg  Config
		opts Options
	}{
		{"no gateway", testConfig(), Options{}},
		{"bad config", bad, Options{Gateway: "gw"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := Open(dir, tt.cfg, tt.opts); !errors.Is(err, ferry.ErrInvalidConfig) {
				t.Fatalf("Open = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestAlertQueueFullIsCountedAndLogged(t *testing.T) {
	b := openT(t, t.TempDir(), testConfig(), Options{AlertQueueSize: 5})
	tx, err := b.db.Begin(true) // stall the writer in its next commit
	if err != nil {
		t.Fatal(err)
	}
	b.AppendAlert(fixedAlert(0))
	ftest.WaitFor(t, 5*time.Second, "the writer taking the first alert", func() bool {
		b.qmu.Lock()
		defer b.qmu.Unlock()
		return len(b.alertq) == 0
	})
	for i := 1; i <= 7; i++ {
		b.AppendAlert(fixedAlert(i))
	}
	if got := dropped(b, ferry.LaneAlerts, reasonQueueFull); got != 2 {
		t.Fatalf("dropped{alerts,queue_full} = %d, want 2", got)
	}
	tx.Rollback()
	flush(t, b)
	if got := b.Stats().Lanes[ferry.LaneAlerts].Records; got < 6 {
		t.Fatalf("%d alerts stored, want the 6 that were queued", got)
	}
}
