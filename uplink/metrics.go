package uplink

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
)

// Error reasons, the values of the reason label of ferry_uplink_errors_total.
const (
	reasonConnect      = "connect"       // dial, DNS, refused, TLS handshake
	reasonAuth         = "auth"          // authorization violation, expired or revoked credentials
	reasonCredentials  = "credentials"   // a creds, nkey or TLS file cannot be read
	reasonStreamAbsent = "stream_absent" // the stream does not exist
	reasonStream       = "stream"        // the stream exists but does not fit, or a stream request failed
	reasonTimeout      = "timeout"       // no PubAck within ack_timeout
	reasonDisconnected = "disconnected"  // the connection dropped with publishes outstanding
	reasonNoStream     = "no_stream"     // no stream answered a publish
	reasonRejected     = "rejected"      // the stream refused a message (limits, permissions, …)
	reasonPublish      = "publish"       // the client could not send
	reasonCorrupt      = "corrupt"       // a record that cannot be decoded (dropped)
	reasonSourceAck    = "source_ack"    // the buffer could not delete acknowledged records
	reasonSourceNext   = "source_next"   // the buffer could not hand out records
	reasonCatalog      = "catalog"       // the catalog could not be published
	reasonTooLarge     = "too_large"     // a sample larger than max_payload, sent without its value
	reasonLossCheck    = "loss_check"    // the check for acknowledged messages the upstream lost failed
)

// metrics are the uplink's series. They are registered once per
// Registerer; an Uplink created again (on reload) shares them.
type metrics struct {
	connected     prometheus.Gauge
	published     *prometheus.CounterVec
	acked         *prometheus.CounterVec
	samples       prometheus.Counter
	duplicates    prometheus.Counter
	released      prometheus.Counter
	errs          *prometheus.CounterVec
	inflight      prometheus.Gauge
	inflightBytes prometheus.Gauge
	ackLatency    prometheus.Histogram
	reconnects    prometheus.Counter
	bytes         prometheus.Counter
	lag           prometheus.Gauge
	catalogs      prometheus.Counter
	reconciled    prometheus.Counter
	lossChecks    prometheus.Counter
	lost          prometheus.Counter
	resent        prometheus.Counter
	unrecoverable prometheus.Counter

	// Per lane, resolved once.
	pub [ferry.NumLanes]prometheus.Counter
	ack [ferry.NumLanes]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_uplink_connected", Help: "1 when connected to NATS and the stream is usable, else 0.",
		}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_uplink_published_total", Help: "Messages published (retries included), by lane.",
		}, []string{"lane"}),
		acked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_uplink_acked_total", Help: "Records in messages acknowledged by the stream (a batch counts each record; duplicates included), by lane.",
		}, []string{"lane"}),
		samples: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_uplink_samples_total", Help: "Samples in telemetry messages acknowledged by the stream.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_uplink_duplicates_total", Help: "PubAcks that reported a duplicate: a replayed record the stream already held (counted as delivered).",
		}),
		released: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_uplink_released_total", Help: "Records handed back to the buffer to be published again.",
		}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_uplink_errors_total", Help: "Uplink failures, by reason.",
		}, []string{"reason"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_uplink_inflight", Help: "Messages published and not yet acknowledged.",
		}),
		inflightBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_uplink_inflight_bytes", Help: "Bytes of messages published and not yet acknowledged.",
		}),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ferry_uplink_ack_latency_seconds",
			Help:    "Time from publish to PubAck.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_uplink_reconnects_total", Help: "Connections re-established after a loss.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_uplink_bytes_total", Help: "Bytes published (payload and headers, retries included).",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_uplink_lag_seconds", Help: "Age of the last record acknowledged (now minus when the buffer accepted it): the backlog's delay.",
		}),
		reconciled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_uplink_reconciled_total", Help: "Records found already in the stream after an outage longer than its duplicate window, and not sent again.",
		}),
		lossChecks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_uplink_upstream_loss_checks_total", Help: "Checks of the stream for acknowledged messages it lost (after reconnects, recoveries and every loss_check).",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_uplink_upstream_lost_total", Help: "Records in messages the stream acknowledged and later did not hold (a server that lost unsynced writes).",
		}),
		resent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_uplink_upstream_resent_after_loss_total", Help: "Records sent again from the buffer's retention after the stream lost them.",
		}),
		unrecoverable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_uplink_upstream_lost_unrecoverable_total", Help: "Records the stream lost after they had left the retention (retain_acked): lost for good.",
		}),
		catalogs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_uplink_catalog_published_total", Help: "Catalog messages acknowledged by the stream.",
		}),
	}
	if reg != nil {
		var err error
		reuse(reg, &m.connected, &err)
		reuse(reg, &m.published, &err)
		reuse(reg, &m.acked, &err)
		reuse(reg, &m.samples, &err)
		reuse(reg, &m.duplicates, &err)
		reuse(reg, &m.released, &err)
		reuse(reg, &m.errs, &err)
		reuse(reg, &m.inflight, &err)
		reuse(reg, &m.inflightBytes, &err)
		reuse(reg, &m.ackLatency, &err)
		reuse(reg, &m.reconnects, &err)
		reuse(reg, &m.bytes, &err)
		reuse(reg, &m.lag, &err)
		reuse(reg, &m.catalogs, &err)
		reuse(reg, &m.reconciled, &err)
		reuse(reg, &m.lossChecks, &err)
		reuse(reg, &m.lost, &err)
		reuse(reg, &m.resent, &err)
		reuse(reg, &m.unrecoverable, &err)
		if err != nil {
			return nil, err
		}
	}
	for l := ferry.Lane(0); l < ferry.NumLanes; l++ {
		m.pub[l] = m.published.WithLabelValues(l.String())
		m.ack[l] = m.acked.WithLabelValues(l.String())
	}
	return m, nil
}

// reuse registers *c with reg; when an equal collector is registered
// already (an Uplink created again on reload), *c becomes that one.
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
