package gateway

import (
	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/sinks"
)

// alert is the rule engine's Emit: every transition goes to the buffer's
// alerts lane (upstream, ahead of telemetry) and to the local sinks.
func (d *Gateway) alert(a ferry.Alert) {
	d.buf.AppendAlert(a)
	d.sendLocal(a)
}

// sendLocal hands an alert to the local sinks (the buffer's own alerts come
// here directly: it has stored them already).
func (d *Gateway) sendLocal(a ferry.Alert) {
	d.historyAlert(a)
	d.con.alert(a)
	if s := d.sinks.Load(); s != nil {
		s.Send(a)
		return
	}
	d.earlyMu.Lock()
	s := d.sinks.Load()
	if s == nil {
		d.early = append(d.early, a)
	}
	d.earlyMu.Unlock()
	if s != nil {
		s.Send(a)
	}
}

func (d *Gateway) setSinks(cfg sinks.Config) error {
	s, err := d.buildSinks(cfg)
	if err != nil {
		return err
	}
	d.installSinks(s)
	return nil
}

// buildSinks builds the local alert sinks of cfg without starting them.
func (d *Gateway) buildSinks(cfg sinks.Config) (*sinks.Sinks, error) {
	return sinks.New(cfg, sinks.Options{Logger: d.log.With("part", "alerts"), Registerer: d.reg, Gateway: d.cfg.Gateway.ID})
}

// installSinks makes s the sinks every alert goes to (and its stream the
// one /api/alerts/stream serves), and hands it the alerts raised before
// any sinks existed.
func (d *Gateway) installSinks(s *sinks.Sinks) {
	// The MQTT sink's retained "active alerts" messages start from what
	// the engine restored from the store.
	s.Restore(d.engine.Active())
	d.earlyMu.Lock()
	d.sinks.Store(s)
	early := d.early
	d.early = nil
	d.earlyMu.Unlock()
	for _, a := range early {
		s.Send(a)
	}
}
