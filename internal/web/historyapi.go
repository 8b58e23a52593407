package web

import (
	"encoding/csv"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/ferry-edge/ferry"
)

// Historian is what the history API needs of the gateway's local history
// (internal/history, through internal/gateway). Both calls read the disk
// and return what they found; neither waits on the network.
type Historian interface {
	// Query returns one point's history over [From, To) at the
	// resolution the query resolves to (HistoryQuery.Step).
	Query(HistoryQuery) (HistorySeries, error)
	// Alerts returns the alert transitions q matches, newest first.
	Alerts(AlertHistoryQuery) ([]ferry.AlertJSON, error)
}

// HistoryQuery asks for one point over [From, To). Step below a minute
// asks for raw samples, a minute or more for rollups in buckets of Step;
// 0 lets the history choose for the range.
type HistoryQuery struct {
	Device, Point string
	From, To      time.Time
	Step          time.Duration
}

// HistorySeries is one point's answer. Step is 0 for raw samples.
type HistorySeries struct {
	Device, Point string
	Step          time.Duration
	Points        []HistoryPoint
}

// HistoryPoint is one bucket or raw sample; NaN values (Count 0) are a
// gap: the point had only samples with no value (Bad) in it.
type HistoryPoint struct {
	Time                 time.Time
	Min, Max, Mean, Last float64
	Count                uint32
	Quality              ferry.Status
}

// AlertHistoryQuery filters the alert history; empty fields match all.
type AlertHistoryQuery struct {
	Device, Point, Rule, State, Severity, Text string
	From, To                                   time.Time
	Limit                                      int
}

// maxHistoryPoints bounds how many points one /api/history request may
// ask for (several point= parameters).
const maxHistoryPoints = 20

// historyJSON is the JSON form of a series.
type historyJSON struct {
	Device     string             `json:"device"`
	Point      string             `json:"point"`
	Resolution string             `json:"resolution"` // "raw", "1m", "10m", …
	StepSecs   float64            `json:"step_seconds"`
	Points     []historyPointJSON `json:"points"`
}

type historyPointJSON struct {
	Time    time.Time `json:"t"`
	Min     *float64  `json:"min"`
	Max     *float64  `json:"max"`
	Mean    *float64  `json:"mean"`
	Last    *float64  `json:"last"`
	Count   uint32    `json:"count"`
	Quality string    `json:"quality"`
}

func num(f float64) *float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return &f
}

func resolution(step time.Duration) string {
	if step == 0 {
		return "raw"
	}
	s := step.String()
	// "10m0s" -> "10m", "1h0m0s" -> "1h"
	for len(s) > 2 && (s[len(s)-2:] == "0s" || s[len(s)-2:] == "0m") && s[len(s)-3] >= 'a' {
		s = s[:len(s)-2]
	}
	return s
}

// parseTime takes RFC 3339, Unix seconds, or a duration before now ("24h").
func parseTime(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Unix(n, 0), nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, errors.New("want RFC 3339, Unix seconds or a duration before now (24h)")
}

// timeRange reads from= and to= (default: the last 24 hours).
func (s *Server) timeRange(w http.ResponseWriter, r *http.Request, def time.Duration) (from, to time.Time, ok bool) {
	q := r.URL.Query()
	now := s.opts.Now()
	from, to = now.Add(-def), now
	if q.Has("from") || q.Has("to") {
		from, to = time.Time{}, now
	}
	var err error
	if v := q.Get("from"); v != "" {
		if from, err = parseTime(v, now); err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{"from: " + err.Error()})
			return from, to, false
		}
	}
	if v := q.Get("to"); v != "" {
		if to, err = parseTime(v, now); err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{"to: " + err.Error()})
			return from, to, false
		}
	}
	return from, to, true
}

// serveSeries is GET /api/history?device=&point=[&point=…]&from=&to=&step=[&format=csv].
func (s *Server) serveSeries(w http.ResponseWriter, r *http.Request) {
	h := s.opts.Historian
	if h == nil {
		writeJSON(w, http.StatusNotFound, errorBody{"history is off (history.enabled in the configuration)"})
		return
	}
	q := r.URL.Query()
	dev, points := q.Get("device"), q["point"]
	if dev == "" || len(points) == 0 {
		writeJSON(w, http.StatusBadRequest, errorBody{"want device= and point="})
		return
	}
	if len(points) > maxHistoryPoints {
		writeJSON(w, http.StatusBadRequest, errorBody{"at most " + strconv.Itoa(maxHistoryPoints) + " points at once"})
		return
	}
	from, to, ok := s.timeRange(w, r, 24*time.Hour)
	if !ok {
		return
	}
	if from.IsZero() || !to.After(from) {
		writeJSON(w, http.StatusBadRequest, errorBody{"want from= before to="})
		return
	}
	var step time.Duration
	if v := q.Get("step"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeJSON(w, http.StatusBadRequest, errorBody{"step: want a duration (1m, 1h)"})
			return
		}
		step = d
	}
	var out []HistorySeries
	for _, p := range points {
		series, err := h.Query(HistoryQuery{Device: dev, Point: p, From: from, To: to, Step: step})
		if err != nil {
			s.log.Warn("history query", "device", dev, "point", p, "err", err)
			writeJSON(w, http.StatusInternalServerError, errorBody{"history: " + err.Error()})
			return
		}
		out = append(out, series)
	}
	if q.Get("format") == "csv" {
		writeSeriesCSV(w, out)
		return
	}
	js := make([]historyJSON, len(out))
	for i, se := range out {
		j := historyJSON{Device: se.Device, Point: se.Point, Resolution: resolution(se.Step), StepSecs: se.Step.Seconds(), Points: make([]historyPointJSON, len(se.Points))}
		for k, p := range se.Points {
			j.Points[k] = historyPointJSON{Time: p.Time.UTC(), Min: num(p.Min), Max: num(p.Max), Mean: num(p.Mean), Last: num(p.Last), Count: p.Count, Quality: p.Quality.String()}
		}
		js[i] = j
	}
	writeJSON(w, http.StatusOK, js)
}

// writeSeriesCSV writes one row per point and bucket:
// device,point,time,min,max,mean,last,count,quality (an empty value is a gap).
func writeSeriesCSV(w http.ResponseWriter, series []HistorySeries) {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="history.csv"`)
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"device", "point", "time", "min", "max", "mean", "last", "count", "quality"})
	f := func(v float64) string {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return ""
		}
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	for _, se := range series {
		for _, p := range se.Points {
			_ = cw.Write([]string{se.Device, se.Point, p.Time.UTC().Format(time.RFC3339Nano), f(p.Min), f(p.Max), f(p.Mean), f(p.Last),
				strconv.FormatUint(uint64(p.Count), 10), p.Quality.String()})
		}
	}
	cw.Flush()
}

// serveAlertHistory is GET /api/alerts/history: from the persisted history
// when there is one (filters device, point, rule, state, severity, q,
// from, to, limit), else the last transitions since start, in memory.
func (s *Server) serveAlertHistory(w http.ResponseWriter, r *http.Request) {
	h := s.opts.Historian
	if h == nil {
		s.serveHistory(w, r)
		return
	}
	q := r.URL.Query()
	aq := AlertHistoryQuery{
		Device: q.Get("device"), Point: q.Get("point"), Rule: q.Get("rule"),
		State: q.Get("state"), Severity: q.Get("severity"), Text: q.Get("q"),
	}
	if q.Has("from") || q.Has("to") {
		from, to, ok := s.timeRange(w, r, 0)
		if !ok {
			return
		}
		aq.From, aq.To = from, to
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeJSON(w, http.StatusBadRequest, errorBody{"limit: want a number"})
			return
		}
		aq.Limit = n
	}
	list, err := h.Alerts(aq)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, errorBody{"history: " + err.Error()})
		return
	}
	for i := range list {
		list[i].Gateway = s.opts.Gateway
	}
	writeJSON(w, http.StatusOK, list)
}
