package mqtt

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry/internal/label"
)

// Metrics are the MQTT driver's own series. Create them once (NewMetrics)
// and share them between every Driver, so that a driver restarted on
// reload does not register them again. The shared device series
// (connected, errors by reason, scans) are in internal/devstat.
type Metrics struct {
	messages     *prometheus.CounterVec
	payloadErrs  *prometheus.CounterVec
	redeliveries *prometheus.CounterVec
	unmatched    *prometheus.CounterVec
	acksPending  *prometheus.GaugeVec
	acks         *prometheus.CounterVec
	resyncs      *prometheus.CounterVec
	broker       *prometheus.GaugeVec
	rebirths     *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_mqtt_messages_total",
			Help: "Messages handled per device: ok (every point Good), bad (a payload problem), ignored (nothing configured in it).",
		}, []string{"device", "result"}),
		payloadErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_mqtt_payload_errors_total",
			Help: "Payload problems per device and reason (not_json, missing_path, wrong_type, bad_protobuf, unknown_alias, seq_gap, …).",
		}, []string{"device", "reason"}),
		redeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_mqtt_redeliveries_total",
			Help: "Messages received with the DUP flag: possibly already stored; the buffer drops those it has committed within its dedupe window.",
		}, []string{"device"}),
		unmatched: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_mqtt_unmatched_messages_total",
			Help: "Messages whose topic matches no configured device (e.g. a subscription left in the persistent session by an older configuration).",
		}, []string{"client"}),
		acksPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_mqtt_acks_pending",
			Help: "QoS 1/2 messages received and not yet acknowledged (waiting for their scans to be committed).",
		}, []string{"client"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_mqtt_acks_total",
			Help: "QoS 1/2 messages by outcome: sent (acknowledged after commit), withheld (not committed: left for redelivery), lost (committed after the connection ended: will come back as a duplicate).",
		}, []string{"client", "result"}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_mqtt_resyncs_total",
			Help: "Reconnects made so that the broker redelivers withheld messages.",
		}, []string{"client"}),
		broker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_mqtt_connected_broker",
			Help: "Which broker the connection is on: 0 broker, 1 the first of fallback_brokers, …; -1 not connected.",
		}, []string{"client"}),
		rebirths: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_mqtt_sparkplug_rebirth_requests_total",
			Help: "Sparkplug rebirth requests (NCMD Node Control/Rebirth) per edge node (group/edge_node) and result: sent, or failed (not connected, write error).",
		}, []string{"client", "node", "result"}),
	}
	if reg != nil {
		reg.MustRegister(m.messages, m.payloadErrs, m.redeliveries, m.unmatched, m.acksPending, m.acks, m.resyncs, m.broker, m.rebirths)
	}
	return m
}

// clientMetrics are the series of one connection, bound once.
type clientMetrics struct {
	unmatched                        prometheus.Counter
	acksPending                      prometheus.Gauge
	acksSent, acksWithheld, acksLost prometheus.Counter
	resyncs                          prometheus.Counter
	broker                           prometheus.Gauge
	rebirths                         *prometheus.CounterVec
	id                               string
}

func (m *Metrics) client(id string) *clientMetrics {
	return &clientMetrics{
		unmatched:    m.unmatched.WithLabelValues(id),
		acksPending:  m.acksPending.WithLabelValues(id),
		acksSent:     m.acks.WithLabelValues(id, "sent"),
		acksWithheld: m.acks.WithLabelValues(id, "withheld"),
		acksLost:     m.acks.WithLabelValues(id, "lost"),
		resyncs:      m.resyncs.WithLabelValues(id),
		broker:       m.broker.WithLabelValues(id),
		rebirths:     m.rebirths,
		id:           id,
	}
}

// rebirth counts a rebirth request to node ("group/edge_node").
func (m *clientMetrics) rebirth(node string, err error) {
	result := "sent"
	if err != nil {
		result = "failed"
	}
	m.rebirths.WithLabelValues(m.id, node, result).Inc()
}

// deviceMetrics are the series of one device, bound once.
type deviceMetrics struct {
	ok, bad, ignored prometheus.Counter
	redeliveries     prometheus.Counter
	errs             *prometheus.CounterVec
	name             string
}

func (m *Metrics) device(name string) *deviceMetrics {
	return &deviceMetrics{
		ok:           m.messages.WithLabelValues(name, "ok"),
		bad:          m.messages.WithLabelValues(name, "bad"),
		ignored:      m.messages.WithLabelValues(name, "ignored"),
		redeliveries: m.redeliveries.WithLabelValues(name),
		errs:         m.payloadErrs,
		name:         name,
	}
}

func (m *deviceMetrics) payloadError(reason string) {
	m.errs.WithLabelValues(m.name, label.Code(reason)).Inc()
}
