package gateway

import (
	"context"
	"encoding/json"
	"reflect"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/uplink/sparkplug"
)

// This file wires the Sparkplug B edge node (uplink/sparkplug, issue 25):
// it drains the buffer when `uplink.sparkplug` is configured (for now
// without `uplink.nats`: the loader refuses both until each upstream has
// its own cursor), gets the catalog of configured points, and, with
// `commands: true`, hands DCMDs to the command path.

// viaSparkplug is the audit label (labels.via) of commands that came as
// a DCMD.
const viaSparkplug = "sparkplug"

// sparkplugWiring is the running node; guarded by d.mu like the uplink.
type sparkplugWiring struct {
	node *sparkplug.Node
	run  *runner
}

// newSparkplug builds the node of cfg (nil when not configured). It does
// no I/O.
func (d *Gateway) newSparkplug(cfg *config.Config) (*sparkplug.Node, error) {
	sc := cfg.Uplink.Sparkplug
	if sc == nil {
		return nil, nil
	}
	opts := sparkplug.Options{
		Gateway:    cfg.Gateway.ID,
		Logger:     d.log.With("part", "sparkplug"),
		Registerer: d.reg,
	}
	if sc.Commands {
		opts.Command = d.sparkplugCommand
	}
	n, err := sparkplug.New(*sc, d.buf, opts)
	if err != nil {
		return nil, err
	}
	n.SetCatalog(cfg.Points)
	return n, nil
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

// startSparkplug starts the node, if any. Call with d.mu held.
func (d *Gateway) startSparkplug(ctx context.Context) {
	if d.sp.node != nil {
		d.sp.run = start(ctx, d.sp.node.Run)
	}
}

// stopSparkplug stops the node within timeout: it publishes NDEATH and
// releases what was not acknowledged. Call with d.mu held.
func (d *Gateway) stopSparkplug(timeout time.Duration) {
	if !d.sp.run.stop(timeout) {
		d.log.Error("sparkplug node did not stop in time; its records in flight are sent again at the next start")
	}
	d.sp.run = nil
}

// prepareSparkplug builds the node again when its block changed (or hands
// the running one the new catalog, which rebirths it).
func (d *Gateway) prepareSparkplug(old, cfg *config.Config) (func(), error) {
	if reflect.DeepEqual(old.Uplink.Sparkplug, cfg.Uplink.Sparkplug) {
		if d.sp.node == nil || reflect.DeepEqual(old.Points, cfg.Points) {
			return nil, nil
		}
		return func() { d.sp.node.SetCatalog(cfg.Points) }, nil
	}
	n, err := d.newSparkplug(cfg)
	if err != nil {
		return nil, err
	}
	return func() {
		d.stopSparkplug(d.opts.ShutdownTimeout)
		d.sp.node = n
		if n != nil && d.runCtx != nil {
			d.startSparkplug(d.runCtx)
			d.log.Info("sparkplug node restarted")
		}
	}, nil
}
