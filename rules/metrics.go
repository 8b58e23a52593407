package rules

import "github.com/prometheus/client_golang/prometheus"

// metrics are the engine's Prometheus series.
type metrics struct {
	active      *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	exprErrors  *prometheus.CounterVec
	stateErrors prometheus.Counter
	loaded      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, e *Engine) *metrics {
	m := &metrics{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_alerts_active", Help: "Alerts raised or acknowledged and not yet cleared, by severity.",
		}, []string{"severity"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_alerts_transitions_total", Help: "Alert transitions (raised, acknowledged, cleared) by rule.",
		}, []string{"rule", "state"}),
		exprErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_rules_errors_total", Help: "Rule evaluations that failed at run time (an expression on a value of the wrong type), by rule.",
		}, []string{"rule"}),
		stateErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_rules_state_errors_total", Help: "Writes of alert state to the state store that failed (retried at the next tick).",
		}),
		loaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_rules_loaded", Help: "Rules in the running rule set.",
		}),
	}
	for _, s := range []string{"info", "warning", "critical"} {
		m.active.WithLabelValues(s)
	}
	if reg != nil {
		reg.MustRegister(m.active, m.transitions, m.exprErrors, m.stateErrors, m.loaded,
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "ferry_rules_evaluations_total", Help: "Rule evaluations: a rule checked against a new sample or on a tick.",
			}, func() float64 { return float64(e.evals.Load()) }))
	}
	return m
}
