package gateway

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/web"
	"github.com/ferry-edge/ferry/uplink"
)

// Several upstreams (issue 25, docs/upstreams.md). The uplink section's
// entries (uplink.Config.Entries: the map form's nats block, or the
// list's upstreams) each become a running upstream. With one upstream
// nothing changes from a gateway without the list: it drains the buffer
// itself, with its metrics as they always were. With several, the buffer
// is opened with one consumer per upstream (buffer.Options.Consumers),
// each upstream drains its own cursor, and its metrics carry the label
// upstream="<name>".
//
// The first upstream is the primary: d.up, the readiness check "uplink",
// the health page's traffic and durability, as before.

// upstream is one running upstream.
type upstream struct {
	name string
	kind string
	part upstreamPart
	// catalog hands the part the configuration's catalog (at start and
	// on every reload).
	catalog func(cfg *config.Config)
	up      *uplink.Uplink // the part when it is a NATS uplink
	cur     *buffer.Cursor // nil with a single upstream
	run     *runner
}

// upstreamPart is what the gateway needs of an upstream of any kind.
type upstreamPart interface {
	// Run forwards until ctx ends.
	Run(ctx context.Context) error
	// Err is nil when the upstream is connected and usable, else why not.
	Err() error
}

// err is the upstream's readiness.
func (u *upstream) err() error { return u.part.Err() }

// bufferConsumers is the buffer's consumers for cfg: one per upstream when
// there are several, none (the buffer's single default consumer) else.
func bufferConsumers(cfg *config.Config) []string {
	es := cfg.Uplink.Entries()
	if len(es) < 2 {
		return nil
	}
	names := make([]string, len(es))
	for i, e := range es {
		names[i] = e.Name
	}
	return names
}

// newUpstreams builds the upstreams of cfg (no I/O). The buffer must have
// been opened with bufferConsumers(cfg).
func (d *Gateway) newUpstreams(cfg *config.Config) ([]*upstream, error) {
	es := cfg.Uplink.Entries()
	multi := len(es) > 1
	// named puts the upstream's name on a build error when there are
	// several.
	named := func(name string, err error) error {
		if multi {
			return fmt.Errorf("upstream %s: %w", name, err)
		}
		return err
	}
	var ups []*upstream
	for _, e := range es {
		u := &upstream{name: e.Name, kind: e.Kind()}
		var src source = d.buf
		reg := prometheus.Registerer(d.reg)
		log := d.log.With("part", "uplink")
		if multi {
			cur, err := d.buf.Cursor(e.Name)
			if err != nil {
				return nil, fmt.Errorf("upstream %s: %w", e.Name, err)
			}
			u.cur, src = cur, cur
			reg = prometheus.WrapRegistererWith(prometheus.Labels{"upstream": e.Name}, d.reg)
			log = log.With("upstream", e.Name)
		}
		var from uplink.Source = src
		if !e.Filter.All() {
			from = newFiltered(src, e.Filter)
		}
		// The one place where an entry becomes a running upstream: a new
		// kind adds its case here.
		switch {
		case e.NATS != nil:
			up, err := uplink.New(*e.NATS, from, uplink.Options{
				Gateway:    cfg.Gateway.ID,
				Site:       cfg.Gateway.Site,
				Version:    d.opts.Version,
				Logger:     log,
				Registerer: reg,
				Alert:      d.alert,
			})
			if err != nil {
				return nil, named(e.Name, err)
			}
			u.part, u.up = up, up
			u.catalog = func(cfg *config.Config) {
				up.SetCatalog(uplink.Catalog{ConfigVersion: cfg.Version, Points: cfg.Points})
			}
		case e.Sparkplug != nil:
			node, err := d.newSparkplug(cfg.Gateway.ID, *e.Sparkplug, from, src, log.With("kind", uplink.KindSparkplug), reg)
			if err != nil {
				return nil, named(e.Name, err)
			}
			u.part = node
			var last []ferry.PointInfo
			u.catalog = func(cfg *config.Config) {
				// A new catalog rebirths the node: only when the points changed.
				if last == nil || !reflect.DeepEqual(last, cfg.Points) {
					last = cfg.Points
					node.SetCatalog(cfg.Points)
				}
			}
		default:
			return nil, fmt.Errorf("upstream %s: no upstream block", e.Name)
		}
		u.catalog(cfg)
		ups = append(ups, u)
	}
	return ups, nil
}

// setUpstreams makes ups the running set (not started); d.mu is held or
// the gateway is not running yet.
func (d *Gateway) setUpstreams(ups []*upstream) {
	d.ups = ups
	d.up = nil
	if len(ups) > 0 {
		d.up = ups[0].up // nil when the first is not a NATS uplink
	}
	d.curUp.Store(d.up)
	d.curUps.Store(&ups)
}

// startUpstreams starts every upstream under ctx.
func (d *Gateway) startUpstreams(ctx context.Context) {
	for _, u := range d.ups {
		u.run = start(ctx, u.part.Run)
	}
	if len(d.ups) > 0 {
		d.upRun = d.ups[0].run
	}
}

// stopUpstreams stops every upstream at once, each waiting up to timeout
// for its publishes in flight, and reports whether all stopped in time.
func (d *Gateway) stopUpstreams(timeout time.Duration) bool {
	var wg sync.WaitGroup
	ok := make([]bool, len(d.ups))
	for i, u := range d.ups {
		wg.Add(1)
		go func() { defer wg.Done(); ok[i] = u.run.stop(timeout) }()
	}
	wg.Wait()
	for i, u := range d.ups {
		if !ok[i] {
			d.log.Error("upstream did not stop in time; its records in flight are sent again at the next start", "upstream", u.name)
		}
		u.run = nil
	}
	d.upRun = nil
	return !slices.Contains(ok, false)
}

// prepareUpstreams builds the upstreams when the uplink section changed
// (or hands the running ones the new catalog); the commit stops the old
// ones and starts the new. The buffer's consumers are fixed when it
// opens: a change of the upstreams' names (with several) is refused, and
// applied by a restart.
func (d *Gateway) prepareUpstreams(old, cfg *config.Config) (func(), error) {
	if !slices.Equal(bufferConsumers(old), bufferConsumers(cfg)) {
		return nil, fmt.Errorf("uplink: the upstreams changed from %q to %q: each has a cursor in the buffer, fixed at start; restart ferry to apply this", bufferConsumers(old), bufferConsumers(cfg))
	}
	if sameUplink(old, cfg) {
		return func() {
			for _, u := range d.ups {
				u.catalog(cfg)
			}
		}, nil
	}
	ups, err := d.newUpstreams(cfg)
	if err != nil {
		return nil, err
	}
	return func() {
		if len(d.ups) > 0 {
			d.stopUpstreams(d.opts.ShutdownTimeout)
		}
		d.setUpstreams(ups)
		d.startUpstreams(d.runCtx)
		if len(ups) > 0 {
			d.log.Info("uplink restarted", "upstreams", len(ups))
		}
	}, nil
}

// primary is the first upstream, nil when none runs.
func (d *Gateway) primary() *upstream {
	p := d.curUps.Load()
	if p == nil || len(*p) == 0 {
		return nil
	}
	return (*p)[0]
}

// upstreamStatus is each upstream's part of /api/status and the health
// page: nil with fewer than two.
func (d *Gateway) upstreamStatus() []web.UpstreamStatus {
	p := d.curUps.Load()
	if p == nil || len(*p) < 2 {
		return nil
	}
	now := time.Now()
	var out []web.UpstreamStatus
	for _, u := range *p {
		st := web.UpstreamStatus{Name: u.name, Kind: u.kind}
		err := u.err()
		st.Connected = err == nil
		if err != nil {
			st.Error = err.Error()
		}
		if u.cur != nil {
			cs := u.cur.Stats()
			for _, l := range cs.Lanes {
				st.Pending += l.Records
				st.PendingBytes += l.Bytes
				st.InFlight += l.InFlight
				if !l.Oldest.IsZero() {
					st.OldestAgeSeconds = max(st.OldestAgeSeconds, now.Sub(l.Oldest).Seconds())
				}
			}
		}
		out = append(out, st)
	}
	return out
}

// sameUplink reports whether the uplink section is unchanged.
func sameUplink(old, cfg *config.Config) bool { return reflect.DeepEqual(old.Uplink, cfg.Uplink) }
