package sinks

import "github.com/prometheus/client_golang/prometheus"

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
		reg.MustRegister(m.sent, m.dropped, m.errors, m.connected, m.clients)
	}
	return m
}

// queued registers the queue length gauge of one sink.
func (m *metrics) queued(sink string, length func() float64) {
	if m.reg == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "ferry_alert_sink_queue_length",
		Help:        "Alert transitions waiting in a sink's queue.",
		ConstLabels: prometheus.Labels{"sink": sink},
	}, length))
}
