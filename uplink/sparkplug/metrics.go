package sparkplug

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's Prometheus metrics (ferry_sparkplug_*). They are
// registered with Options.Registerer; a Node created again (on reload)
// shares them.
type metrics struct {
	connected  prometheus.Gauge
	hostOnline prometheus.Gauge
	messages   *prometheus.CounterVec // by message type (NBIRTH, DDATA, …)
	records    *prometheus.CounterVec // by result
	samples    *prometheus.CounterVec // by historical
	rebirths   *prometheus.CounterVec // by reason
	errs       *prometheus.CounterVec // by reason
	refused    *prometheus.CounterVec // metrics left out, by reason
	invalid    *prometheus.CounterVec // bad inbound messages, by kind
	commands   *prometheus.CounterVec // NCMD/DCMD metrics, by kind and result
	bdSeq      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_sparkplug_connected", Help: "1 while the Sparkplug edge node is connected to its MQTT server and born (NBIRTH published), else 0.",
		}),
		hostOnline: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_sparkplug_primary_host_online", Help: "1 while the primary host application's STATE says online (always 1 without primary_host_id).",
		}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_sparkplug_messages_total", Help: "Sparkplug messages acknowledged by the MQTT server (PUBACK), by type.",
		}, []string{"type"}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_sparkplug_records_total", Help: "Buffer records finished by the Sparkplug node, by result: published, filtered (device or alerts filter), corrupt (undecodable, dropped).",
		}, []string{"result"}),
		samples: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_sparkplug_samples_total", Help: "Metric values published in DDATA/NDATA, by historical (true: backlog sent with is_historical).",
		}, []string{"historical"}),
		rebirths: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_sparkplug_rebirths_total", Help: "Births published again within a session, by reason: ncmd, catalog, new_metric, type_change, device_back.",
		}, []string{"reason"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_sparkplug_errors_total", Help: "Sparkplug node failures, by reason: connect, will_refused, subscribe, publish, ack_timeout, connection_lost, state_store.",
		}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_sparkplug_metrics_refused_total", Help: "Points left out of births and data, by reason: name_too_long, bad_device_id.",
		}, []string{"reason"}),
		invalid: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_sparkplug_invalid_messages_total", Help: "Inbound messages that could not be used, by kind: state, ncmd, dcmd.",
		}, []string{"kind"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_sparkplug_commands_total", Help: "Command metrics received, by kind (ncmd, dcmd) and result (rebirth, done, refused, failed, unknown, unsupported, dropped).",
		}, []string{"kind", "result"}),
		bdSeq: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_sparkplug_bdseq", Help: "bdSeq of the current (or last attempted) MQTT session.",
		}),
	}
	if reg != nil {
		var err error
		reuse(reg, &m.connected, &err)
		reuse(reg, &m.hostOnline, &err)
		reuse(reg, &m.messages, &err)
		reuse(reg, &m.records, &err)
		reuse(reg, &m.samples, &err)
		reuse(reg, &m.rebirths, &err)
		reuse(reg, &m.errs, &err)
		reuse(reg, &m.refused, &err)
		reuse(reg, &m.invalid, &err)
		reuse(reg, &m.commands, &err)
		reuse(reg, &m.bdSeq, &err)
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

// reuse registers *c with reg; when an equal collector is registered
// already (a Node created again on reload), *c becomes that one.
func reuse[T prometheus.Collector](reg prometheus.Registerer, c *T, errp *error) {
	if *errp != nil {
		return
	}
	err := reg.Register(*c)
	if err == nil {
		return
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(T); ok {
			*c = existing
			return
		}
	}
	*errp = err
}

func (m *metrics) err(reason string) { m.errs.WithLabelValues(reason).Inc() }
