package buffer

import (
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
)

type metrics struct {
	b *Buffer

	appended, acked [ferry.NumLanes]prometheus.Counter
	droppedVec      *prometheus.CounterVec
	deduplicated    prometheus.Counter
	commits         prometheus.Counter
	batchSamples    prometheus.Histogram
	commitDuration  prometheus.Histogram
	fileBytes       prometheus.Gauge
	clockSteps      prometheus.Counter

	records, bytes, oldest *prometheus.Desc
	queueDesc              *prometheus.Desc

	collectors []prometheus.Collector
}

func newMetrics(b *Buffer) *metrics {
	m := &metrics{b: b}
	appended := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_buffer_appended_total", Help: "Records committed to the buffer, by lane."}, []string{"lane"})
	acked := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_buffer_acked_total", Help: "Records deleted after the upstream acknowledged them, by lane."}, []string{"lane"})
	for l := ferry.Lane(0); l < ferry.NumLanes; l++ {
		m.appended[l] = appended.WithLabelValues(l.String())
		m.acked[l] = acked.WithLabelValues(l.String())
	}
	m.droppedVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ferry_buffer_dropped_total",
		Help: "Records (or, for queue_full and disk_error, scans and alerts) dropped, by lane and reason: size, age, queue_full, corrupt, disk_error, closed.",
	}, []string{"lane", "reason"})
	for l := ferry.Lane(0); l < ferry.NumLanes; l++ {
		for _, r := range []string{reasonSize, reasonAge, reasonQueueFull, reasonCorrupt, reasonDiskError} {
			m.droppedVec.WithLabelValues(l.String(), r)
		}
	}
	m.deduplicated = prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_buffer_deduplicated_total", Help: "Redelivered scans dropped because their key was committed within dedupe_window."})
	m.commits = prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_buffer_commits_total", Help: "bbolt transactions committed (each one fsync'd)."})
	m.batchSamples = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "ferry_buffer_commit_batch_samples", Help: "Samples per commit.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 10),
	})
	m.commitDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "ferry_buffer_commit_duration_seconds", Help: "Time to write and fsync one commit.",
		Buckets: prometheus.ExponentialBuckets(0.00025, 2, 14),
	})
	m.clockSteps = prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_buffer_clock_steps_total", Help: "Forward steps of the wall clock (over a minute beyond the monotonic clock) whose records' ages were corrected."})
	m.fileBytes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "ferry_buffer_file_bytes", Help: "Size of buffer.db."})
	m.records = prometheus.NewDesc("ferry_buffer_records", "Records stored, by lane.", []string{"lane"}, nil)
	m.bytes = prometheus.NewDesc("ferry_buffer_bytes", "Stored size of the records, by lane.", []string{"lane"}, nil)
	m.oldest = prometheus.NewDesc("ferry_buffer_oldest_age_seconds", "Age of the oldest stored record, by lane (0 when empty).", []string{"lane"}, nil)
	m.queueDesc = prometheus.NewDesc("ferry_buffer_queue_length", "Samples waiting for the writer.", nil, nil)
	m.collectors = []prometheus.Collector{appended, acked, m.droppedVec, m.deduplicated, m.commits, m.batchSamples, m.commitDuration, m.fileBytes, m.clockSteps, (*laneCollector)(m)}
	return m
}

func (m *metrics) dropped(l ferry.Lane, reason string, n int) {
	m.droppedVec.WithLabelValues(l.String(), reason).Add(float64(n))
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, d := range m.collectors[:i] {
				reg.Unregister(d)
			}
			return err
		}
	}
	return nil
}

func (m *metrics) unregister(reg prometheus.Registerer) {
	for _, c := range m.collectors {
		reg.Unregister(c)
	}
}

// laneCollector reports the gauges read from the index at scrape time.
type laneCollector metrics

func (c *laneCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.records
	ch <- c.bytes
	ch <- c.oldest
	ch <- c.queueDesc
}

func (c *laneCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.b
	now := b.now()
	b.mu.Lock()
	type row struct {
		records, bytes int64
		oldest         int64
	}
	var rows [ferry.NumLanes]row
	for l := range b.lanes {
		li := &b.lanes[l]
		rows[l] = row{int64(li.live), li.bytes, li.oldest()}
	}
	b.mu.Unlock()
	for l, r := range rows {
		lane := ferry.Lane(l).String()
		age := 0.0
		if r.oldest != 0 {
			age = max(0, now.Sub(time.Unix(0, r.oldest)).Seconds())
		}
		ch <- prometheus.MustNewConstMetric(c.records, prometheus.GaugeValue, float64(r.records), lane)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(r.bytes), lane)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age, lane)
	}
	b.qmu.Lock()
	q := b.queued
	b.qmu.Unlock()
	ch <- prometheus.MustNewConstMetric(c.queueDesc, prometheus.GaugeValue, float64(q))
}

func (b *Buffer) fileSize() int64 {
	fi, err := os.Stat(b.path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
