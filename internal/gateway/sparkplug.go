package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/uplink/sparkplug"
)

// This file builds the Sparkplug B edge node (uplink/sparkplug, issue 25)
// of an `uplink` entry with a `sparkplug:` block; upstreams.go runs it
// like any upstream, on its own buffer cursor when there are several. It
// gets the catalog of configured points and, with `commands: true`, hands
// DCMDs to the command path.

// viaSparkplug is the audit label (labels.via) of commands that came as
// a DCMD.
const viaSparkplug = "sparkplug"

// newSparkplug builds the node of sc on from (its records) and state (the
// buffer or its cursor: bdSeq is kept there). It does no I/O.
func (d *Gateway) newSparkplug(gateway string, sc sparkplug.Config, from sparkplug.Source, state ferry.StateStore, log *slog.Logger, reg prometheus.Registerer) (*sparkplug.Node, error) {
	opts := sparkplug.Options{
		Gateway:    gateway,
		Logger:     log,
		Registerer: reg,
		State:      state,
	}
	if sc.Commands {
		opts.Command = d.sparkplugCommand
	}
	return sparkplug.New(sc, from, opts)
}

// sparkplugCommand runs one DCMD metric through the command path, as a
// request of its own id (made by the node from the DCMD).
func (d *Gateway) sparkplugCommand(ctx context.Context, req ferry.CommandRequest) ferry.CommandReply {
	body, err := json.Marshal(req)
	if err != nil {
		return ferry.CommandReply{ID: req.ID, Status: ferry.CommandRefused, Reason: err.Error(), At: time.Now()}
	}
	return d.cmds.svc.Handle(ctx, body, viaSparkplug, "")
}
