package modbus

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Modbus-specific series, shared by every Driver (create
// them once per process). The per-device series every driver has
// (connected, poll duration, errors by reason, points by quality,
// overruns) are in internal/devstat.
type Metrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	connects  *prometheus.CounterVec
	splits    *prometheus.CounterVec
	badRanges *prometheus.GaugeVec
	planned   *prometheus.GaugeVec
	decodeErr *prometheus.CounterVec
	reprobes  *prometheus.CounterVec
	writes    *prometheus.CounterVec
}

// Request results, the values of the result label of
// ferry_modbus_requests_total.
const (
	resultOK           = "ok"
	resultException    = "exception"
	resultTimeout      = "timeout"
	resultDisconnected = "disconnected"
	resultBadFrame     = "bad_frame"
)

var results = []string{resultOK, resultException, resultTimeout, resultDisconnected, resultBadFrame}

// NewMetrics creates the Modbus metrics and registers them with reg (nil:
// not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_modbus_requests_total",
			Help: "Modbus requests (reads and writes) by link and result (ok, exception, timeout, disconnected, bad_frame).",
		}, []string{"link", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ferry_modbus_request_duration_seconds",
			Help:    "Time from sending a Modbus request to its answer (or failure).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"link"}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_modbus_connects_total",
			Help: "Connection (or serial port open) attempts by link and result (ok, error).",
		}, []string{"link", "result"}),
		splits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_modbus_splits_total",
			Help: "Merged requests split in two after an illegal data address or value exception.",
		}, []string{"device"}),
		badRanges: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_modbus_bad_ranges",
			Help: "Address ranges learned to be refused by the device (points Bad without asking, or gaps not bridged).",
		}, []string{"device"}),
		planned: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_modbus_planned_requests",
			Help: "Requests one poll of the device makes now (after what fault isolation learned).",
		}, []string{"device"}),
		decodeErr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_modbus_decode_errors_total",
			Help: "Points whose response could not be decoded (short response, NaN or infinite float).",
		}, []string{"device"}),
		reprobes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_modbus_reprobes_total",
			Help: "Polls that tried learned bad ranges again.",
		}, []string{"device"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_modbus_writes_total",
			Help: "Writes by device and result (done, refused, failed, unknown, mismatch: read back differs).",
		}, []string{"device", "result"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.connects, m.splits, m.badRanges, m.planned, m.decodeErr, m.reprobes, m.writes)
	}
	return m
}

// linkMetrics are the series of one link, resolved once.
type linkMetrics struct {
	results  map[string]prometheus.Counter
	duration prometheus.Observer
	connOK   prometheus.Counter
	connErr  prometheus.Counter
}

func (m *Metrics) link(name string) linkMetrics {
	lm := linkMetrics{
		results:  make(map[string]prometheus.Counter, len(results)),
		duration: m.duration.WithLabelValues(name),
		connOK:   m.connects.WithLabelValues(name, "ok"),
		connErr:  m.connects.WithLabelValues(name, "error"),
	}
	for _, r := range results {
		lm.results[r] = m.requests.WithLabelValues(name, r)
	}
	return lm
}

// deviceMetrics are the series of one device, resolved once.
type deviceMetrics struct {
	splits    prometheus.Counter
	badRanges prometheus.Gauge
	planned   prometheus.Gauge
	decodeErr prometheus.Counter
	reprobes  prometheus.Counter
	writes    map[string]prometheus.Counter
}

func (m *Metrics) device(name string) deviceMetrics {
	return deviceMetrics{
		splits:    m.splits.WithLabelValues(name),
		badRanges: m.badRanges.WithLabelValues(name),
		planned:   m.planned.WithLabelValues(name),
		decodeErr: m.decodeErr.WithLabelValues(name),
		reprobes:  m.reprobes.WithLabelValues(name),
		writes:    m.writeSeries(name),
	}
}

// forgetDevice removes the series of device.
func (m *Metrics) forgetDevice(device string) {
	l := prometheus.Labels{"device": device}
	m.splits.DeletePartialMatch(l)
	m.badRanges.DeletePartialMatch(l)
	m.planned.DeletePartialMatch(l)
	m.decodeErr.DeletePartialMatch(l)
	m.reprobes.DeletePartialMatch(l)
	m.writes.DeletePartialMatch(l)
}

// forgetLink removes the series of link.
func (m *Metrics) forgetLink(link string) {
	l := prometheus.Labels{"link": link}
	m.requests.DeletePartialMatch(l)
	m.duration.DeletePartialMatch(l)
	m.connects.DeletePartialMatch(l)
}
