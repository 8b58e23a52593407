package testpeer

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Series is one sample line of the Prometheus text exposition format.
type Series struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Metrics is a scrape of /metrics: every series, in the order served.
type Metrics []Series

// ParseMetrics parses the Prometheus text exposition format (version
// 0.0.4, what client_golang serves): comments and blank lines are
// skipped, label values are unescaped (\\, \", \n), a timestamp after
// the value is ignored. A line it cannot read is an error naming it.
func ParseMetrics(text string) (Metrics, error) {
	var out Metrics
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parseSeries(line)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d %q: %w", n+1, line, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func parseSeries(line string) (Series, error) {
	s := Series{Labels: map[string]string{}}
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return s, fmt.Errorf("no value")
	}
	s.Name, line = line[:i], line[i:]
	if line[0] == '{' {
		line = line[1:]
		for {
			line = strings.TrimLeft(line, " \t,")
			if line == "" {
				return s, fmt.Errorf("labels not closed")
			}
			if line[0] == '}' {
				line = line[1:]
				break
			}
			eq := strings.IndexByte(line, '=')
			if eq <= 0 || eq+1 >= len(line) || line[eq+1] != '"' {
				return s, fmt.Errorf("label at %q", line)
			}
			name := strings.TrimSpace(line[:eq])
			line = line[eq+2:]
			var val strings.Builder
			j := 0
			for ; j < len(line) && line[j] != '"'; j++ {
				c := line[j]
				if c == '\\' && j+1 < len(line) {
					j++
					switch line[j] {
					case 'n':
						c = '\n'
					default:
						c = line[j] // \\ and \"
					}
				}
				val.WriteByte(c)
			}
			if j == len(line) {
				return s, fmt.Errorf("label %s: value not closed", name)
			}
			s.Labels[name] = val.String()
			line = line[j+1:]
		}
	}
	f := strings.Fields(line)
	if len(f) == 0 || len(f) > 2 {
		return s, fmt.Errorf("want a value and an optional timestamp")
	}
	v, err := strconv.ParseFloat(f[0], 64) // also +Inf, -Inf, NaN
	if err != nil {
		return s, err
	}
	s.Value = v
	return s, nil
}

// Find sums the series of name that have every label given as
// "name=value" (Find(m, "ferry_device_connected", "protocol=modbus"));
// ok is false when no series matches.
func (m Metrics) Find(name string, labels ...string) (sum float64, ok bool) {
	for _, s := range m {
		if s.Name == name && s.Has(labels...) {
			sum += s.Value
			ok = true
		}
	}
	return sum, ok
}

// Sum is Find's sum: 0 when no series matches.
func (m Metrics) Sum(name string, labels ...string) float64 {
	v, _ := m.Find(name, labels...)
	return v
}

// Has reports whether s has every label given as "name=value".
func (s Series) Has(labels ...string) bool {
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		if got, ok := s.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Gather reads a registry into Metrics, as a scrape of it would read: a
// counter, gauge or untyped series is its value; a histogram or summary
// is its observation count (under its own name). It fails the test when
// the registry cannot be gathered.
func Gather(t testing.TB, g prometheus.Gatherer) Metrics {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var out Metrics
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			s := Series{Name: mf.GetName(), Labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				s.Labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.Counter != nil:
				s.Value = m.Counter.GetValue()
			case m.Gauge != nil:
				s.Value = m.Gauge.GetValue()
			case m.Untyped != nil:
				s.Value = m.Untyped.GetValue()
			case m.Histogram != nil:
				s.Value = float64(m.Histogram.GetSampleCount())
			case m.Summary != nil:
				s.Value = float64(m.Summary.GetSampleCount())
			}
			out = append(out, s)
		}
	}
	return out
}
