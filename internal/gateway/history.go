package gateway

import (
	"context"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/history"
	"github.com/ferry-edge/ferry/internal/web"
)

// The local history (internal/history) is fed from two places:
//
//   - the pipeline, after the rules and before reduction: the history is
//     the operator's record of what the devices read, at full resolution;
//     report by exception and aggregation are for the way upstream, and a
//     deadband would leave flat lines where the value moved inside it.
//     Store.Add copies what it needs under a mutex and returns: it never
//     waits for the disk.
//   - sendLocal, which sees every alert transition (the rules', the
//     buffer's own) once.
//
// It is off unless history.enabled; a change of the history section takes
// effect at the next restart.

// openHistory opens DATA_DIR/history.db when history is on and hooks it
// into the pipeline. Call it after the pipeline exists.
func (d *Gateway) openHistory(cfg *config.Config) error {
	if !cfg.History.Enabled {
		return nil
	}
	st, err := history.Open(cfg.DataDir, cfg.History, history.Options{
		Logger:     d.log.With("part", "history"),
		Registerer: d.reg,
	})
	if err != nil {
		return err
	}
	d.hist.Store(st)
	d.pipe.history = st.Add
	return nil
}

// startHistory starts the history's commits.
func (d *Gateway) startHistory(ctx context.Context) {
	if st := d.hist.Load(); st != nil {
		d.histRun = start(ctx, st.Run)
	}
}

// stopHistory commits what the history holds and closes its file. Call it
// after the pipeline drained and the rules stopped (their last alerts are
// in it).
func (d *Gateway) stopHistory(timeout time.Duration) {
	st := d.hist.Load()
	if st == nil {
		return
	}
	if d.histRun != nil && !d.histRun.stop(timeout) {
		d.log.Error("history did not commit in time")
	}
	if err := st.Close(); err != nil {
		d.log.Error("close history", "err", err)
	}
}

// historyAlert keeps an alert transition in the history, when it is on.
func (d *Gateway) historyAlert(a ferry.Alert) {
	if st := d.hist.Load(); st != nil {
		st.Alert(a)
	}
}

// historian is what the HTTP API reads of the history; nil when it is off.
func (d *Gateway) historian() web.Historian {
	st := d.hist.Load()
	if st == nil {
		return nil
	}
	return webHistorian{st}
}

// webHistorian adapts the store to the web package's types.
type webHistorian struct{ st *history.Store }

func (h webHistorian) Query(q web.HistoryQuery) (web.HistorySeries, error) {
	s, err := h.st.Query(history.Query{Device: q.Device, Point: q.Point, From: q.From, To: q.To, Step: q.Step})
	if err != nil {
		return web.HistorySeries{}, err
	}
	out := web.HistorySeries{Device: s.Device, Point: s.Point, Step: s.Step, Points: make([]web.HistoryPoint, len(s.Points))}
	for i, p := range s.Points {
		out.Points[i] = web.HistoryPoint{Time: p.Time, Min: p.Min, Max: p.Max, Mean: p.Mean, Last: p.Last, Count: p.Count, Quality: p.Quality}
	}
	return out, nil
}

func (h webHistorian) Alerts(q web.AlertHistoryQuery) ([]ferry.AlertJSON, error) {
	return h.st.Alerts(history.AlertQuery{
		Device: q.Device, Point: q.Point, Rule: q.Rule, State: q.State, Severity: q.Severity,
		Text: q.Text, From: q.From, To: q.To, Limit: q.Limit,
	})
}
