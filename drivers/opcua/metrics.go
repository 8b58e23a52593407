package opcua

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry/internal/label"
)

// Metrics are the OPC UA driver's own series, labelled by device. The
// shared device series (connected, errors by reason, points by quality,
// poll durations) are in internal/devstat. One Metrics is created by
// cmd/ferry and shared by every Driver.
type Metrics struct {
	notifications *prometheus.CounterVec
	reads         *prometheus.CounterVec
	readNodes     *prometheus.CounterVec
	reconnects    *prometheus.CounterVec
	sessionErrs   *prometheus.CounterVec
	rejected      *prometheus.CounterVec
	items         *prometheus.GaugeVec
	badNodes      *prometheus.GaugeVec
	writes        *prometheus.CounterVec
	writeErrs     *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_opcua_notifications_total",
			Help: "Monitored item values received in data change notifications.",
		}, []string{"device"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_opcua_reads_total",
			Help: "Read requests sent (a poll of more nodes than the server's MaxNodesPerRead sends several).",
		}, []string{"device"}),
		readNodes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_opcua_read_nodes_total",
			Help: "Node values requested by Read requests.",
		}, []string{"device"}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_opcua_session_reconnects_total",
			Help: "Sessions established again after a lost or failed one.",
		}, []string{"device"}),
		sessionErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_opcua_session_errors_total",
			Help: "Failed connects and lost sessions, by reason (a status name as a snake_case code such as bad_certificate_untrusted, or timeout, connection_refused, disconnected).",
		}, []string{"device", "reason"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_opcua_certificates_rejected_total",
			Help: "Connects refused because the server certificate is not trusted or not valid.",
		}, []string{"device"}),
		items: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_opcua_monitored_items",
			Help: "Monitored items the server accepted in the current subscription.",
		}, []string{"device"}),
		badNodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_opcua_bad_nodes",
			Help: "Points whose node the server refused or could not resolve in the current session.",
		}, []string{"device"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_opcua_writes_total",
			Help: "Write and Call requests sent for commands (refusals before sending are not counted).",
		}, []string{"device"}),
		writeErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_opcua_write_errors_total",
			Help: "Writes and calls sent that did not succeed, by reason (a status name as a snake_case code such as bad_user_access_denied, timeout, mismatch, read_back).",
		}, []string{"device", "reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.notifications, m.reads, m.readNodes, m.reconnects, m.sessionErrs, m.rejected, m.items, m.badNodes, m.writes, m.writeErrs)
	}
	return m
}

// Forget removes the series of a device (removed by a reload).
func (m *Metrics) Forget(device string) {
	l := prometheus.Labels{"device": device}
	m.notifications.DeletePartialMatch(l)
	m.reads.DeletePartialMatch(l)
	m.readNodes.DeletePartialMatch(l)
	m.reconnects.DeletePartialMatch(l)
	m.sessionErrs.DeletePartialMatch(l)
	m.rejected.DeletePartialMatch(l)
	m.items.DeletePartialMatch(l)
	m.badNodes.DeletePartialMatch(l)
	m.writes.DeletePartialMatch(l)
	m.writeErrs.DeletePartialMatch(l)
}

// deviceMetrics are the series of one device, resolved once.
type deviceMetrics struct {
	m             *Metrics
	device        string
	notifications prometheus.Counter
	reads         prometheus.Counter
	readNodes     prometheus.Counter
	reconnects    prometheus.Counter
	rejected      prometheus.Counter
	items         prometheus.Gauge
	badNodes      prometheus.Gauge
	writes        prometheus.Counter
}

func (m *Metrics) device(name string) *deviceMetrics {
	return &deviceMetrics{
		m: m, device: name,
		notifications: m.notifications.WithLabelValues(name),
		reads:         m.reads.WithLabelValues(name),
		readNodes:     m.readNodes.WithLabelValues(name),
		reconnects:    m.reconnects.WithLabelValues(name),
		rejected:      m.rejected.WithLabelValues(name),
		items:         m.items.WithLabelValues(name),
		badNodes:      m.badNodes.WithLabelValues(name),
		writes:        m.writes.WithLabelValues(name),
	}
}

func (dm *deviceMetrics) sessionError(reason string) {
	dm.m.sessionErrs.WithLabelValues(dm.device, label.Code(reason)).Inc()
}

func (dm *deviceMetrics) writeError(reason string) {
	dm.m.writeErrs.WithLabelValues(dm.device, label.Code(reason)).Inc()
}
