package daemon

import (
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the daemon's own series: what is running and which
// configuration it runs.
type Metrics struct {
	reloadOK   prometheus.Gauge
	reloadTime prometheus.Gauge
	reloads    *prometheus.CounterVec
	configInfo *prometheus.GaugeVec

	mu      sync.Mutex
	version string // the configuration version in configInfo
}

// NewMetrics creates the daemon metrics and registers them with reg (nil:
// not registered). ferry_build_info is set at once; call ConfigLoaded
// after the first load.
func NewMetrics(reg prometheus.Registerer, version, commit string) *Metrics {
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ferry_build_info",
		Help: "Always 1; the labels say which ferry build is running.",
	}, []string{"version", "commit", "goversion"})
	build.WithLabelValues(version, commit, runtime.Version()).Set(1)
	m := &Metrics{
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_config_reload_success",
			Help: "1 when the last configuration load or reload succeeded, 0 when the last reload was refused (the previous configuration keeps running).",
		}),
		reloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_config_reload_timestamp_seconds",
			Help: "Unix time of the last successful configuration load or reload.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_config_reloads_total",
			Help: "Configuration reloads asked for (SIGHUP), by result: success or failure.",
		}, []string{"result"}),
		configInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_config_info",
			Help: "Always 1; the version label is the hash of the running configuration (files and device maps).",
		}, []string{"version"}),
	}
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	if reg != nil {
		reg.MustRegister(build, m.reloadOK, m.reloadTime, m.reloads, m.configInfo)
	}
	return m
}

// ConfigLoaded records that the configuration with the given version is
// now running, loaded at t: at start and after each successful reload.
func (m *Metrics) ConfigLoaded(version string, t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.version != version {
		if m.version != "" {
			m.configInfo.DeleteLabelValues(m.version)
		}
		m.version = version
	}
	m.configInfo.WithLabelValues(version).Set(1)
	m.reloadOK.Set(1)
	m.reloadTime.Set(float64(t.UnixNano()) / 1e9)
}

// Reloaded records a successful reload to version at t.
func (m *Metrics) Reloaded(version string, t time.Time) {
	m.reloads.WithLabelValues("success").Inc()
	m.ConfigLoaded(version, t)
}

// ReloadFailed records a refused reload: the previous configuration keeps
// running, ferry_config_reload_success drops to 0 until the next good
// load.
func (m *Metrics) ReloadFailed() {
	m.reloads.WithLabelValues("failure").Inc()
	m.reloadOK.Set(0)
}

// RegisterRuntime registers the Go runtime (go_*) and process
// (process_*: CPU, memory, open files, start time) collectors with reg.
func RegisterRuntime(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return err
	}
	return reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}
