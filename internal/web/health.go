package web

import (
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Status is what the gateway reports about itself for /api/status and the
// health page. The server adds rates, drops and latencies from the
// metrics.
type Status struct {
	// Version and Commit are filled by the server from Options.
	Version string    `json:"version"`
	Commit  string    `json:"commit,omitempty"`
	Gateway string    `json:"gateway"`
	Site    string    `json:"site,omitempty"`
	Started time.Time `json:"started,omitzero"`
	// UptimeSeconds is filled by the console.
	UptimeSeconds float64      `json:"uptime_seconds"`
	Config        ConfigStatus `json:"config"`
	Buffer        BufferStatus `json:"buffer"`
	Uplink        UplinkStatus `json:"uplink"`
	// Upstreams is each upstream, when there are several (uplink as a
	// list); Uplink is then the first one's.
	Upstreams []UpstreamStatus `json:"upstreams,omitempty"`
	Fleet     *FleetStatus     `json:"fleet,omitempty"`
}

// ConfigStatus is the running configuration and the last reload.
type ConfigStatus struct {
	File    string   `json:"file"`
	Files   []string `json:"files,omitempty"`
	Version string   `json:"version"`
	// Loaded is when the running configuration was loaded.
	Loaded time.Time `json:"loaded,omitzero"`
	// Reload is the result of the last reload; nil when there was none.
	Reload *Reload `json:"reload,omitempty"`
}

// Reload is the result of one configuration reload.
type Reload struct {
	Time time.Time `json:"time"`
	OK   bool      `json:"ok"`
	// Error says why a refused reload was refused (the running
	// configuration stayed).
	Error string `json:"error,omitempty"`
}

// BufferStatus is the store-and-forward buffer now.
type BufferStatus struct {
	Lanes       []LaneStatus `json:"lanes"`
	FileBytes   int64        `json:"file_bytes"`
	FreeBytes   int64        `json:"free_bytes"`
	QueueLength int          `json:"queue_length"`
	// Error is the buffer's disk problem now ("" when none).
	Error string `json:"error,omitempty"`
	// Dropped counts, by lane and reason, what the buffer dropped since
	// start (filled by the console; only reasons with drops).
	Dropped      map[string]map[string]uint64 `json:"dropped,omitempty"`
	DroppedTotal uint64                       `json:"dropped_total"`
}

// LaneStatus is one lane of the buffer.
type LaneStatus struct {
	Lane     string    `json:"lane"`
	Records  int       `json:"records"`
	Bytes    int64     `json:"bytes"`
	Oldest   time.Time `json:"oldest,omitzero"`
	InFlight int       `json:"in_flight"`
	// OldestAgeSeconds is filled by the console (0 when the lane is empty).
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
}

// UplinkStatus is the upstream link.
type UplinkStatus struct {
	Configured bool   `json:"configured"`
	Connected  bool   `json:"connected"`
	Error      string `json:"error,omitempty"`
}

// UpstreamStatus is one of several upstreams: its link and what it has
// not yet acknowledged of the buffer (its cursor).
type UpstreamStatus struct {
	Name             string  `json:"name"`
	Kind             string  `json:"kind"`
	Connected        bool    `json:"connected"`
	Error            string  `json:"error,omitempty"`
	Pending          int     `json:"pending"`
	PendingBytes     int64   `json:"pending_bytes"`
	InFlight         int     `json:"in_flight"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
}

// Health is the answer of GET /api/health.
type Health struct {
	Time time.Time `json:"time"`
	Status
	Pipeline PipelineHealth `json:"pipeline"`
	Traffic  UplinkTraffic  `json:"traffic"`
	// Durability is nil without an uplink.
	Durability *Durability `json:"durability,omitempty"`
}

// PipelineHealth is what goes between the drivers and the buffer.
type PipelineHealth struct {
	DroppedScans     uint64   `json:"dropped_scans"`
	SamplesPerSecond *float64 `json:"samples_per_second"`
}

// UplinkTraffic is the uplink's throughput over the rate window (null
// until two readings at least a second apart exist).
type UplinkTraffic struct {
	WindowSeconds      float64  `json:"window_seconds"`
	PublishedPerSecond *float64 `json:"published_per_second"`
	AckedPerSecond     *float64 `json:"acked_per_second"`
	SamplesPerSecond   *float64 `json:"samples_per_second"`
	BytesPerSecond     *float64 `json:"bytes_per_second"`
	AckLatencyMeanMS   *float64 `json:"ack_latency_mean_ms"`
	AckLatencyP95MS    *float64 `json:"ack_latency_p95_ms"`
	Published          uint64   `json:"published"`
	Acked              uint64   `json:"acked"`
	InFlight           uint64   `json:"in_flight"`
	// LagSeconds is how far behind upstream is: the larger of the last
	// acknowledged record's age and the oldest waiting record's.
	LagSeconds float64           `json:"lag_seconds"`
	Reconnects uint64            `json:"reconnects"`
	Errors     map[string]uint64 `json:"errors,omitempty"`
}

// The rate window: readings older than rateWindow are forgotten; readings
// closer than rateMinGap to the last kept one are not kept.
const (
	rateWindow = 60 * time.Second
	rateMinGap = time.Second
)

// reading is the counters the health page derives rates from, at one time.
type reading struct {
	at                                         time.Time
	published, acked, samples, bytes, pipeSamp float64
	latCount, latSum                           float64
	latBuckets                                 []latBucket
}

type latBucket struct{ upper, cumulative float64 }

// meter turns successive metric readings into rates.
type meter struct {
	g   prometheus.Gatherer
	mu  sync.Mutex
	buf []reading // oldest first, within rateWindow
}

// read gathers the metrics and fills the counters of h, then the rates
// from the oldest kept reading to this one.
func (m *meter) read(h *Health, now time.Time) {
	if m.g == nil {
		return
	}
	mfs, _ := m.g.Gather() // a failing collector leaves the others
	cur := reading{at: now}
	var waiting float64 // age of the oldest record waiting in the buffer
	for _, mf := range mfs {
		ms := mf.GetMetric()
		switch mf.GetName() {
		case "ferry_uplink_published_total":
			cur.published = sumCounter(ms)
			h.Traffic.Published = uint64(cur.published)
		case "ferry_uplink_acked_total":
			cur.acked = sumCounter(ms)
			h.Traffic.Acked = uint64(cur.acked)
		case "ferry_uplink_samples_total":
			cur.samples = sumCounter(ms)
		case "ferry_uplink_bytes_total":
			cur.bytes = sumCounter(ms)
		case "ferry_pipeline_samples_total":
			cur.pipeSamp = sumCounter(ms)
		case "ferry_pipeline_dropped_scans_total":
			h.Pipeline.DroppedScans = uint64(sumCounter(ms))
		case "ferry_uplink_inflight":
			h.Traffic.InFlight = uint64(sumGauge(ms))
		case "ferry_uplink_lag_seconds":
			h.Traffic.LagSeconds = max(h.Traffic.LagSeconds, sumGauge(ms))
		case "ferry_buffer_oldest_age_seconds":
			for _, mt := range ms {
				waiting = max(waiting, mt.GetGauge().GetValue())
			}
		case "ferry_uplink_reconnects_total":
			h.Traffic.Reconnects = uint64(sumCounter(ms))
		case "ferry_uplink_errors_total":
			h.Traffic.Errors = byLabel(ms, "reason")
		case "ferry_buffer_dropped_total":
			for _, mt := range ms {
				n := uint64(mt.GetCounter().GetValue())
				if n == 0 {
					continue
				}
				lane, reason := label(mt, "lane"), label(mt, "reason")
				if h.Buffer.Dropped == nil {
					h.Buffer.Dropped = map[string]map[string]uint64{}
				}
				if h.Buffer.Dropped[lane] == nil {
					h.Buffer.Dropped[lane] = map[string]uint64{}
				}
				h.Buffer.Dropped[lane][reason] += n
				h.Buffer.DroppedTotal += n
			}
		case "ferry_uplink_ack_latency_seconds":
			for _, mt := range ms {
				hg := mt.GetHistogram()
				cur.latCount += float64(hg.GetSampleCount())
				cur.latSum += hg.GetSampleSum()
				for i, b := range hg.GetBucket() {
					if i < len(cur.latBuckets) {
						cur.latBuckets[i].cumulative += float64(b.GetCumulativeCount())
					} else {
						cur.latBuckets = append(cur.latBuckets, latBucket{b.GetUpperBound(), float64(b.GetCumulativeCount())})
					}
				}
			}
		}
	}
	// The lag is how far behind upstream is: the age of the last record
	// acknowledged, or of the oldest one still waiting when that is older
	// — so it grows while the link is down instead of showing the last
	// acknowledgement's.
	h.Traffic.LagSeconds = max(h.Traffic.LagSeconds, waiting)

	m.mu.Lock()
	for len(m.buf) > 0 && now.Sub(m.buf[0].at) > rateWindow {
		m.buf = m.buf[1:]
	}
	var prev *reading
	if len(m.buf) > 0 {
		p := m.buf[0]
		prev = &p
	}
	if len(m.buf) == 0 || now.Sub(m.buf[len(m.buf)-1].at) >= rateMinGap {
		m.buf = append(m.buf, cur)
	}
	m.mu.Unlock()

	if prev == nil {
		return
	}
	dt := now.Sub(prev.at).Seconds()
	if dt < rateMinGap.Seconds() {
		return
	}
	t := &h.Traffic
	t.WindowSeconds = math.Round(dt*10) / 10
	t.PublishedPerSecond = rate(cur.published, prev.published, dt)
	t.AckedPerSecond = rate(cur.acked, prev.acked, dt)
	t.SamplesPerSecond = rate(cur.samples, prev.samples, dt)
	t.BytesPerSecond = rate(cur.bytes, prev.bytes, dt)
	h.Pipeline.SamplesPerSecond = rate(cur.pipeSamp, prev.pipeSamp, dt)
	if n := cur.latCount - prev.latCount; n > 0 {
		mean := (cur.latSum - prev.latSum) / n * 1000
		t.AckLatencyMeanMS = &mean
		if q, ok := quantile(0.95, cur.latBuckets, prev.latBuckets, n); ok {
			q *= 1000
			t.AckLatencyP95MS = &q
		}
	}
}

// rate is (cur-prev)/dt, or nil when the counter went back (a reset).
func rate(cur, prev, dt float64) *float64 {
	if cur < prev {
		return nil
	}
	r := (cur - prev) / dt
	return &r
}

// quantile estimates the q-quantile of the observations between two
// readings of a histogram, interpolating linearly inside a bucket as
// Prometheus' histogram_quantile does. n is the observation count.
func quantile(q float64, cur, prev []latBucket, n float64) (float64, bool) {
	if len(cur) == 0 || n <= 0 {
		return 0, false
	}
	rank := q * n
	lower, below := 0.0, 0.0
	for i, b := range cur {
		c := b.cumulative
		if i < len(prev) {
			c -= prev[i].cumulative
		}
		if c >= rank {
			in := c - below
			if in <= 0 {
				return b.upper, true
			}
			return lower + (b.upper-lower)*(rank-below)/in, true
		}
		lower, below = b.upper, c
	}
	// Above the last bound: report the last bound (a floor).
	return cur[len(cur)-1].upper, true
}

func sumCounter(ms []*dto.Metric) float64 {
	var s float64
	for _, m := range ms {
		s += m.GetCounter().GetValue()
	}
	return s
}

func sumGauge(ms []*dto.Metric) float64 {
	var s float64
	for _, m := range ms {
		s += m.GetGauge().GetValue()
	}
	return s
}

func byLabel(ms []*dto.Metric, name string) map[string]uint64 {
	var out map[string]uint64
	for _, m := range ms {
		n := uint64(m.GetCounter().GetValue())
		if n == 0 {
			continue
		}
		if out == nil {
			out = map[string]uint64{}
		}
		out[label(m, name)] += n
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
