package web

import "time"

// FleetStatus is fleet mode as /api/status, /api/health and the console
// show it: which bundle runs and what came of the last one.
type FleetStatus struct {
	// Key is the gateway's key in the config and status buckets.
	Key string `json:"key"`
	// Revision and SiteRevision are the bundle revisions that run (0:
	// the local file alone); Hash identifies their files.
	Revision     uint64 `json:"revision"`
	SiteRevision uint64 `json:"site_revision,omitempty"`
	Hash         string `json:"hash,omitempty"`
	// Last is the last apply result: applied, refused, rolled_back,
	// applying, or local when no bundle was ever seen.
	Last       string    `json:"last"`
	LastReason string    `json:"last_reason,omitempty"`
	LastTime   time.Time `json:"last_time,omitzero"`
}
