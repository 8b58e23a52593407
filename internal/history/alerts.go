package history

import (
	"encoding/json"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ferry-edge/ferry"
)

// DefaultAlertLimit and MaxAlertLimit bound an alert search's answer.
const (
	DefaultAlertLimit = 100
	MaxAlertLimit     = 10_000
)

// AlertQuery filters the alert history. Empty fields match everything.
type AlertQuery struct {
	Device, Point, Rule, State, Severity string
	// Text matches, case-insensitively, anywhere in the id, rule,
	// device, point, message or labels (who acknowledged).
	Text     string
	From, To time.Time
	// Limit is how many transitions to return, newest first
	// (DefaultAlertLimit when 0, at most MaxAlertLimit).
	Limit int
}

func encodeAlert(a ferry.Alert) ([]byte, error) {
	return json.Marshal(ferry.NewAlertJSON(a, ""))
}

// Alerts returns the transitions q matches, newest first.
func (s *Store) Alerts(q AlertQuery) ([]ferry.AlertJSON, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultAlertLimit
	}
	limit = min(limit, MaxAlertLimit)
	text := strings.ToLower(q.Text)
	out := []ferry.AlertJSON{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bktAlerts).Cursor()
		var k, v []byte
		if q.To.IsZero() {
			k, v = c.Last()
		} else {
			// The first key at or after To, then one back.
			seek := make([]byte, 16)
			putUint64(seek, uint64(q.To.UnixNano()))
			if k, _ = c.Seek(seek); k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		}
		for ; k != nil && len(out) < limit; k, v = c.Prev() {
			var a ferry.AlertJSON
			if json.Unmarshal(v, &a) != nil {
				continue
			}
			if !q.From.IsZero() && a.Time.Before(q.From) {
				break
			}
			if match(q, text, &a) {
				out = append(out, a)
			}
		}
		return nil
	})
	return out, err
}

func putUint64(b []byte, v uint64) {
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

func match(q AlertQuery, text string, a *ferry.AlertJSON) bool {
	if q.Device != "" && a.Device != q.Device || q.Point != "" && a.Point != q.Point ||
		q.Rule != "" && a.Rule != q.Rule || q.State != "" && a.State != q.State ||
		q.Severity != "" && a.Severity != q.Severity {
		return false
	}
	if text == "" {
		return true
	}
	for _, f := range []string{a.ID, a.Rule, a.Device, a.Point, a.Message} {
		if strings.Contains(strings.ToLower(f), text) {
			return true
		}
	}
	for _, l := range a.Labels {
		if strings.Contains(strings.ToLower(l), text) {
			return true
		}
	}
	return false
}
