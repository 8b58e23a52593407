package sinks

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
)

// logSink writes each transition to ferry's log: a raised critical alert
// at Error, warning at Warn, everything else at Info.
type logSink struct {
	log  *slog.Logger
	q    *queue
	sent prometheus.Counter
}

func newLogSink(cfg LogConfig, log *slog.Logger, m *metrics) *logSink {
	return &logSink{log: log.With("sink", "log"), q: newQueue("log", cfg.Queue, m), sent: m.sent.WithLabelValues("log")}
}

func (s *logSink) send(a ferry.Alert) { s.q.push(a) }

func (s *logSink) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.q.ready:
			a, ok := s.q.pop()
			if !ok {
				continue
			}
			level := slog.LevelInfo
			if a.State == ferry.AlertRaised {
				switch a.Severity {
				case ferry.SeverityCritical:
					level = slog.LevelError
				case ferry.SeverityWarning:
					level = slog.LevelWarn
				}
			}
			attrs := []slog.Attr{
				slog.String("rule", a.Rule), slog.String("state", a.State.String()),
				slog.String("severity", a.Severity.String()), slog.String("id", a.ID),
			}
			if a.Device != "" {
				attrs = append(attrs, slog.String("point", a.Device+"."+a.Point))
			}
			if !a.Value.IsNone() {
				attrs = append(attrs, slog.String("value", a.Value.String()))
			}
			for k, v := range a.Labels {
				attrs = append(attrs, slog.String("label."+k, v))
			}
			s.log.LogAttrs(ctx, level, "alert "+a.State.String()+": "+a.Message, attrs...)
			s.sent.Inc()
		}
	}
}
