package uplink

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry/internal/backoff"
)

// catalogMessage builds the catalog's body: the points grouped by device,
// in configuration order.
func (u *Uplink) catalogMessage(c *Catalog) CatalogMessage {
	m := CatalogMessage{
		Gateway:       u.opts.Gateway,
		Site:          u.opts.Site,
		ConfigVersion: c.ConfigVersion,
		Time:          u.opts.Now().UTC(),
		Devices:       []CatalogDevice{},
	}
	index := map[string]int{}
	for _, p := range c.Points {
		i, ok := index[p.Device]
		if !ok {
			i = len(m.Devices)
			index[p.Device] = i
			m.Devices = append(m.Devices, CatalogDevice{Name: p.Device, Protocol: p.Protocol, Points: []CatalogPoint{}})
		}
		m.Devices[i].Points = append(m.Devices[i].Points, CatalogPoint{
			Name: p.Point, Source: p.Source, Type: p.Type, Unit: p.Unit,
			Description: p.Description, Scale: p.Scale, Offset: p.Offset,
		})
	}
	return m
}

// publishCatalog publishes c and waits for its PubAck.
func (u *Uplink) publishCatalog(ctx context.Context, js jetstream.JetStream, c *Catalog, rollup bool) error {
	body, err := json.Marshal(u.catalogMessage(c))
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	h := nats.Header{}
	if algo := u.cfg.Compression; algo != "" && algo != CompressionNone {
		// 85 bytes of JSON per point: 0.85 MB at 10k tags, near NATS's
		// default max_payload of 1 MB and sent again on every reconnect.
		// Compressed as batches are, it is 10-20 times smaller.
		if body, err = compress(algo, nil, body); err != nil {
			return fmt.Errorf("catalog: %w", err)
		}
		h.Set(HeaderCompression, algo)
	}
	if limit := js.Conn().MaxPayload(); int64(len(body)) > limit {
		hint := "raise the server's max_payload"
		if h.Get(HeaderCompression) == "" {
			hint = "set uplink.nats.compression: zstd, or " + hint
		}
		return fmt.Errorf("catalog of %d points is %d bytes, over the server's max_payload of %d (%s)", len(c.Points), len(body), limit, hint)
	}
	h.Set(HeaderContentType, ContentTypeJSON)
	h.Set(HeaderKind, KindCatalog)
	h.Set(HeaderVersion, u.opts.Version)
	if c.ConfigVersion != "" {
		h.Set(HeaderConfigVersion, c.ConfigVersion)
	}
	if rollup {
		h.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	}
	ctx, cancel := context.WithTimeout(ctx, u.cfg.AckTimeout)
	defer cancel()
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: u.subj.Catalog, Header: h, Data: body}); err != nil {
		return fmt.Errorf("publish catalog on %s: %w", u.subj.Catalog, err)
	}
	return nil
}

// catalogLoop publishes the catalog whenever it changes and, when
// republish is set (a reconnect), again. Failures are retried with backoff;
// they do not hold up the drain.
func (u *Uplink) catalogLoop(ctx context.Context, js jetstream.JetStream, plan func() streamPlan, republish *atomic.Bool, published uint64) {
	bo := &backoff.Backoff{Max: u.cfg.ReconnectMax}
	failing := false
	for {
		u.catMu.Lock()
		c, gen := u.catalog, u.catGen
		u.catMu.Unlock()
		again := republish.Swap(false)
		if c != nil && (gen != published || again) {
			if err := u.publishCatalog(ctx, js, c, plan().rollup); err != nil {
				if ctx.Err() != nil {
					return
				}
				u.m.err(reasonCatalog)
				if !failing {
					u.log.Warn("catalog not published; retrying", "err", err)
				}
				failing = true
				republish.Store(true)
				if !bo.Wait(ctx) {
					return
				}
				continue
			}
			published = gen
			bo.Reset()
			u.m.catalogs.Inc()
			if failing {
				u.log.Info("catalog published", "config_version", c.ConfigVersion, "points", len(c.Points))
			} else {
				u.log.Debug("catalog published", "config_version", c.ConfigVersion, "points", len(c.Points))
			}
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-u.catCh:
		}
	}
}

// publishCatalogNow makes one attempt before the drain starts, so that the
// cloud side sees what the points mean before their values; it returns
// the generation published (0: none).
func (u *Uplink) publishCatalogNow(ctx context.Context, js jetstream.JetStream, rollup bool) uint64 {
	u.catMu.Lock()
	c, gen := u.catalog, u.catGen
	u.catMu.Unlock()
	if c == nil {
		return 0
	}
	if err := u.publishCatalog(ctx, js, c, rollup); err != nil {
		return 0
	}
	u.m.catalogs.Inc()
	u.log.Debug("catalog published", "config_version", c.ConfigVersion, "points", len(c.Points))
	return gen
}
