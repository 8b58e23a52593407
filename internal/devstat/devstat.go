// Package devstat is what every driver shares about the devices it reads:
// connection state logged once per change (connected, lost, back), failure
// counts by reason, poll durations, points by quality, and the
// [ferry.DeviceStatus] the console and the health endpoint show.
//
// One [Metrics] is created by cmd/ferry and shared by every driver, so a
// driver restarted on reload does not register its series again. Each
// driver asks it for one [Device] per configured device.
//
// The logging rule of the house: a state change is logged once at Info or
// Warn; a failure that repeats every poll goes to a counter and to Debug.
package devstat

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/label"
)

// Metrics are the device series every driver reports, labelled by
// protocol and device.
type Metrics struct {
	connected *prometheus.GaugeVec
	duration  *prometheus.HistogramVec
	errs      *prometheus.CounterVec
	points    *prometheus.GaugeVec
	overruns  *prometheus.CounterVec
	scans     *prometheus.CounterVec
}

// NewMetrics creates the device metrics and registers them with reg (nil:
// not registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_device_connected", Help: "1 when the device answers, 0 when it does not.",
		}, []string{"protocol", "device"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ferry_device_poll_duration_seconds",
			Help:    "Time to read every point of a device once (a poll, or a notification's processing).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"protocol", "device"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_device_errors_total", Help: "Failures reading a device, by reason (a snake_case code: timeout, connection_refused, bad_user_access_denied, …).",
		}, []string{"protocol", "device", "reason"}),
		points: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_device_points", Help: "Points of a device by the quality of their last sample.",
		}, []string{"protocol", "device", "quality"}),
		overruns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_device_poll_overruns_total", Help: "Polls skipped because the previous one took longer than the interval.",
		}, []string{"protocol", "device"}),
		scans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_device_scans_total", Help: "Scans emitted by a device.",
		}, []string{"protocol", "device"}),
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.duration, m.errs, m.points, m.overruns, m.scans)
	}
	return m
}

// Device tracks one device. It is safe for concurrent use.
type Device struct {
	m        *Metrics
	log      *slog.Logger
	now      func() time.Time
	protocol string
	name     string

	connected prometheus.Gauge
	duration  prometheus.Observer
	overruns  prometheus.Counter
	scans     prometheus.Counter
	quality   [3]prometheus.Gauge

	mu     sync.Mutex
	st     ferry.DeviceStatus
	known  bool // a first state has been seen
	ever   bool // the device has answered at least once
	errors map[string]prometheus.Counter
	// logged are the failure reasons logged during the current outage:
	// each is logged once, however often the reasons alternate.
	logged map[string]bool
}

// maxLoggedReasons bounds the reasons remembered for one outage; past it,
// a new reason is logged at Debug only.
const maxLoggedReasons = 32

// Device returns the tracker of one device. log should already carry the
// device's attributes (log.With("device", name)); now may be nil.
func (m *Metrics) Device(protocol, name, endpoint string, log *slog.Logger, now func() time.Time) *Device {
	if m == nil {
		m = NewMetrics(nil)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	d := &Device{
		m: m, log: log, now: now, protocol: protocol, name: name,
		connected: m.connected.WithLabelValues(protocol, name),
		duration:  m.duration.WithLabelValues(protocol, name),
		overruns:  m.overruns.WithLabelValues(protocol, name),
		scans:     m.scans.WithLabelValues(protocol, name),
		errors:    map[string]prometheus.Counter{},
		st:        ferry.DeviceStatus{Device: name, Protocol: protocol, Endpoint: endpoint, Since: now()},
	}
	for s := ferry.Good; s <= ferry.Bad; s++ {
		d.quality[s] = m.points.WithLabelValues(protocol, name, s.String())
	}
	d.connected.Set(0)
	return d
}

// Forget removes the device's series (a device removed by a reload).
func (d *Device) Forget() { d.m.Forget(d.protocol, d.name) }

// Forget removes the series of the device name of protocol: a device a
// reload removed, whose driver has stopped. A driver created for the same
// name later starts its series again.
func (m *Metrics) Forget(protocol, name string) {
	l := prometheus.Labels{"protocol": protocol, "device": name}
	m.connected.DeletePartialMatch(l)
	m.duration.DeletePartialMatch(l)
	m.errs.DeletePartialMatch(l)
	m.points.DeletePartialMatch(l)
	m.overruns.DeletePartialMatch(l)
	m.scans.DeletePartialMatch(l)
}

// Connected records that the device answers. The first time, and after it
// was lost, it logs once at Info ("connected" / "connection back").
func (d *Device) Connected() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.known && d.st.Connected {
		d.st.LastError = ""
		d.st.Reason = ""
		return
	}
	wasUp := d.ever
	d.known, d.ever = true, true
	d.st.Connected = true
	d.st.Since = d.now()
	d.st.LastError = ""
	d.st.Reason = ""
	clear(d.logged)
	d.connected.Set(1)
	if wasUp {
		d.log.Info("connection back", "endpoint", d.st.Endpoint)
	} else {
		d.log.Info("connected", "endpoint", d.st.Endpoint)
	}
}

// Lost records that the device stopped answering (or could not be reached
// at all): it counts the failure under its reason and logs once at Warn per
// change of state. While the device stays unreachable, a failure with a
// reason not yet logged in this outage is a change of state too (the
// server certificate is trusted now, but the password is wrong): it is
// logged once at Warn; repeats go to Debug. Status().Reason is always the
// latest reason. It returns the reason, for the Bad samples the driver
// emits.
func (d *Device) Lost(err error) string {
	reason := Reason(err)
	d.count(reason)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.st.LastError = errString(err)
	changed := reason != d.st.Reason
	d.st.Reason = reason
	if d.known && !d.st.Connected {
		if !changed || d.logged[reason] || len(d.logged) >= maxLoggedReasons {
			d.log.Debug("still not connected", "reason", reason, "err", err)
			return reason
		}
		d.logged[reason] = true
		d.log.Warn("still not connected, for another reason", "endpoint", d.st.Endpoint, "reason", reason, "err", err)
		return reason
	}
	if d.logged == nil {
		d.logged = map[string]bool{}
	}
	clear(d.logged)
	d.logged[reason] = true
	d.known = true
	d.st.Connected = false
	d.st.Since = d.now()
	d.connected.Set(0)
	if d.ever {
		d.log.Warn("connection lost", "endpoint", d.st.Endpoint, "reason", reason, "err", err)
	} else {
		d.log.Warn("cannot connect", "endpoint", d.st.Endpoint, "reason", reason, "err", err)
	}
	return reason
}

// Error counts a failure that does not change the connection state (an
// exception for one request, a payload that does not decode) and logs it
// at Debug.
func (d *Device) Error(reason string, err error) {
	d.count(reason)
	d.mu.Lock()
	d.st.LastError = errString(err)
	d.mu.Unlock()
	d.log.Debug("read error", "reason", reason, "err", err)
}

func (d *Device) count(reason string) {
	d.mu.Lock()
	c, ok := d.errors[reason]
	if !ok {
		// The label is the reason's code ("connection_refused",
		// "bad_user_access_denied"); Status().Errors keeps the reason.
		c = d.m.errs.WithLabelValues(d.protocol, d.name, label.Code(reason))
		d.errors[reason] = c
	}
	if d.st.Errors == nil {
		d.st.Errors = map[string]uint64{}
	}
	d.st.Errors[reason]++
	d.mu.Unlock()
	c.Inc()
}

// Polled records one poll (or notification) that produced samples: its
// start and duration, and the quality of each sample.
func (d *Device) Polled(start time.Time, took time.Duration, samples []ferry.Sample) {
	d.duration.Observe(took.Seconds())
	d.Reported(samples)
	d.mu.Lock()
	d.st.LastPoll = start
	d.st.PollDuration = took
	d.mu.Unlock()
}

// Reported records a scan the driver emits without reading the device —
// the Bad samples of a device it cannot reach: the scan is counted
// (ferry_device_scans_total counts every scan emitted) and the points by
// quality follow it, but no poll duration is observed.
func (d *Device) Reported(samples []ferry.Sample) {
	var n [3]int
	for i := range samples {
		s := samples[i].Quality.Status
		if s > ferry.Bad {
			s = ferry.Bad
		}
		n[s]++
	}
	d.scans.Inc()
	for s := range n {
		d.quality[s].Set(float64(n[s]))
	}
}

// Overrun counts a poll skipped because the previous one ran past its
// slot.
func (d *Device) Overrun() { d.overruns.Inc() }

// Status returns the device's current status (a copy).
func (d *Device) Status() ferry.DeviceStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.st
	if d.st.Errors != nil {
		st.Errors = make(map[string]uint64, len(d.st.Errors))
		for k, v := range d.st.Errors {
			st.Errors[k] = v
		}
	}
	return st
}

// IsConnected reports the current connection state.
func (d *Device) IsConnected() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st.Connected
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Reasoner is implemented by errors that know their own quality reason (an
// OPC UA status, a Modbus exception): Reason uses it before guessing.
type Reasoner interface {
	Reason() string
}

// Reason classifies a connection or request error into one of the shared
// quality reasons: the error's own (see Reasoner), ferry.ReasonTimeout,
// ferry.ReasonConnRefused, ferry.ReasonDisconnected, or "error" for
// anything else.
func Reason(err error) string {
	var ne net.Error
	var r Reasoner
	switch {
	case err == nil:
		return ""
	case errors.As(err, &r) && r.Reason() != "":
		return r.Reason()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return ferry.ReasonTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return ferry.ReasonConnRefused
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNABORTED):
		return ferry.ReasonDisconnected
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return "dns"
	}
	return "error"
}

// BadSamples fills dst (reset to length 0) with one Bad sample per point,
// all with reason and time t: what a driver emits for a device that does
// not answer, so that stale and quality rules see it.
func BadSamples(dst []ferry.Sample, device string, points []string, reason string, t time.Time) []ferry.Sample {
	dst = dst[:0]
	q := ferry.BadQuality(reason)
	for _, p := range points {
		dst = append(dst, ferry.Sample{Device: device, Point: p, Quality: q, Time: t})
	}
	return dst
}
