package sinks

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the sinks' Prometheus series.
type metrics struct {
	reg       prometheus.Registerer
	sent      *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	errors    *prometheus.CounterVec
	connected *prometheus.GaugeVec
	clients   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		reg: reg,
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_alert_sink_sent_total", Help: "Alert transitions delivered, by sink (stream: per client).",
		}, []string{"sink"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_alert_sink_dropped_total", Help: "Alert transitions not delivered, by sink and reason (queue_full, attempts, rejected, slow_client).",
		}, []string{"sink", "reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_alert_sink_errors_total", Help: "Failed delivery or connection attempts, by sink.",
		}, []string{"sink"}),
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_alert_sink_connected", Help: "1 when a connection-based sink (mqtt) is connected.",
		}, []string{"sink"}),
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_alert_stream_clients", Help: "Clients connected to the alert stream (GET /api/alerts/stream).",
		}),
	}
	if reg != nil {
		// Sinks may be built again on a reload with the same registry:
		// the counters carry on, the queue gauges follow the new queues.
		m.sent = register(reg, m.sent)
		m.dropped = register(reg, m.dropped)
		m.errors = register(reg, m.errors)
		m.connected = register(reg, m.connected)
		m.clients = register(reg, m.clients)
	}
	return m
}

// register registers c, or returns the collector already registered
// under its name.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
		panic(err) // a name clash with another part of ferry: a bug
	}
	return c
}

// queued registers the queue length gauge of one sink, replacing the one
// of a previous Sinks.
func (m *metrics) queued(sink string, length func() float64) {
	if m.reg == nil {
		return
	}
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "ferry_alert_sink_queue_length",
		Help:        "Alert transitions waiting in a sink's queue.",
		ConstLabels: prometheus.Labels{"sink": sink},
	}, length)
	if err := m.reg.Register(g); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			panic(err)
		}
		m.reg.Unregister(are.ExistingCollector)
		m.reg.MustRegister(g)
	}
}
