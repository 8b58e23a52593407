package web

import "time"

// Durability is the retention of acknowledged records and the uplink's
// check for messages the upstream lost after acknowledging them
// (docs/durability.md), for the health page and /api/health.
type Durability struct {
	// Enabled: records are retained after their acknowledgement and the
	// stream is checked.
	Enabled         bool    `json:"enabled"`
	WindowSeconds   float64 `json:"window_seconds"`
	RetainedRecords int     `json:"retained_records"`
	RetainedBytes   int64   `json:"retained_bytes"`
	// Checks counts the checks of the stream; LastError says why the last
	// one failed ("" when it worked).
	Checks    uint64    `json:"checks"`
	LastCheck time.Time `json:"last_check,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	// Lost and Resent count messages the upstream lost and ferry sent
	// again; Unrecoverable counts records lost past the retention.
	Lost            uint64    `json:"lost"`
	Resent          uint64    `json:"resent"`
	Unrecoverable   uint64    `json:"unrecoverable"`
	LastLoss        time.Time `json:"last_loss,omitzero"`
	LastLossMessage string    `json:"last_loss_message,omitempty"`
}
