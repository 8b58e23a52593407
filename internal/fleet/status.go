package fleet

import (
	"context"
	"reflect"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Health is what the gateway reports of itself in its status key.
type Health struct {
	// ConfigVersion is the running configuration's version (its hash).
	ConfigVersion string `json:"config_version"`
	// Devices counts the configured devices by state: connected, lost,
	// connecting, not running.
	Devices map[string]int `json:"devices"`
	// Backlog is the records in the buffer not yet acknowledged upstream;
	// OldestAge the age of the oldest of them.
	Backlog   int64   `json:"backlog"`
	OldestAge float64 `json:"oldest_age_s"`
	// Uplink: configured, connected, and its lag: the age of the oldest
	// record waiting for it (0 when it has caught up).
	Uplink       UplinkHealth `json:"uplink"`
	AlertsActive int          `json:"alerts_active"`
}

// UplinkHealth is the uplink's part of Health.
type UplinkHealth struct {
	Configured bool    `json:"configured"`
	Connected  bool    `json:"connected"`
	Error      string  `json:"error,omitempty"`
	Lag        float64 `json:"lag_s"`
}

// Status is the value of a gateway's status key (JSON).
type Status struct {
	Gateway string `json:"gateway"`
	Site    string `json:"site"`
	Version string `json:"version"`
	Commit  string `json:"commit"`
	// Time is when this value was written; Heartbeat how often it is
	// rewritten. A status older than three heartbeats is stale: the
	// gateway, or its link, is down.
	Time      time.Time `json:"time"`
	Heartbeat float64   `json:"heartbeat_s"`
	Started   time.Time `json:"started"`
	Uptime    float64   `json:"uptime_s"`
	// Running is the bundle that runs (nil: the local file alone); Last
	// is the last apply result (state applied, refused, rolled_back or
	// applying; local when no bundle was ever seen).
	Running *Applied `json:"running,omitempty"`
	Last    Applied  `json:"last"`
	Health
}

// Stale reports whether s was last written more than three heartbeats
// before now.
func (s *Status) Stale(now time.Time) bool {
	hb := time.Duration(s.Heartbeat * float64(time.Second))
	if hb <= 0 {
		hb = DefaultHeartbeat
	}
	return now.Sub(s.Time) > 3*hb
}

// Status returns the gateway's status now.
func (a *Agent) Status() Status {
	last, running := a.Result()
	now := a.opts.Now()
	return Status{
		Gateway: a.opts.Gateway, Site: a.opts.Site,
		Version: a.opts.Version, Commit: a.opts.Commit,
		Time: now, Heartbeat: a.cfg.Heartbeat.Seconds(),
		Started: a.started, Uptime: now.Sub(a.started).Seconds(),
		Running: running, Last: last,
		Health: a.opts.Hooks.Health(),
	}
}

// publish writes the status key on every change (an apply result, a
// change of the device counts, the uplink or the alerts, looked at every
// second) and every heartbeat.
func (a *Agent) publish(ctx context.Context, js jetstream.JetStream) {
	kv := a.bucket(ctx, js, a.cfg.StatusBucket)
	if kv == nil {
		return
	}
	hb := time.NewTicker(a.cfg.Heartbeat)
	defer hb.Stop()
	look := time.NewTicker(time.Second)
	defer look.Stop()
	var sent Health
	put := func() {
		st := a.Status()
		sent = st.Health
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := kv.Put(pctx, a.Key(), marshal(st)); err != nil && ctx.Err() == nil {
			a.log.Debug("fleet status not written", "err", err)
		}
	}
	put()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.changed:
			put()
		case <-hb.C:
			put()
		case <-look.C:
			h := a.opts.Hooks.Health()
			if changedHealth(sent, h) {
				put()
			}
		}
	}
}

// changedHealth reports a change worth a status write: not the backlog or
// the lag, which move all the time (the heartbeat carries them).
func changedHealth(a, b Health) bool {
	return a.ConfigVersion != b.ConfigVersion || !reflect.DeepEqual(a.Devices, b.Devices) ||
		a.Uplink.Connected != b.Uplink.Connected || a.Uplink.Configured != b.Uplink.Configured ||
		a.AlertsActive != b.AlertsActive
}
