package web

import (
	"net/http"
	"time"
)

// DevicePlan is how a driver reads one device: for Modbus, the read
// requests of one poll (each "unit 1 holding 100..124 (25 registers) → 6
// points: a, b, …") and the ranges fault isolation found unreadable.
type DevicePlan struct {
	Interval time.Duration `json:"-"`
	Timeout  time.Duration `json:"-"`
	Requests []string      `json:"requests"`
	Bad      []string      `json:"bad,omitempty"`
}

// deviceDetail is the GET /api/devices/{device} body: the row of
// /api/devices, the points configured for the device, and its request
// plan when the driver has one (null: it has none, e.g. OPC UA
// subscriptions and MQTT).
type deviceDetail struct {
	Device
	Plan *devicePlanJSON `json:"plan"`
}

type devicePlanJSON struct {
	IntervalMS float64  `json:"interval_ms"`
	TimeoutMS  float64  `json:"timeout_ms"`
	Requests   []string `json:"requests"`
	Bad        []string `json:"bad,omitempty"`
}

// serveDevice is GET /api/devices/{device}.
func (s *Server) serveDevice(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("device")
	for _, d := range s.Devices() {
		if d.Device != name {
			continue
		}
		out := deviceDetail{Device: d}
		if s.opts.Plan != nil {
			if p := s.opts.Plan(name); p != nil {
				out.Plan = &devicePlanJSON{
					IntervalMS: float64(p.Interval.Microseconds()) / 1000,
					TimeoutMS:  float64(p.Timeout.Microseconds()) / 1000,
					Requests:   p.Requests, Bad: p.Bad,
				}
				if out.Plan.Requests == nil {
					out.Plan.Requests = []string{}
				}
			}
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	writeJSON(w, http.StatusNotFound, errorBody{"unknown device " + quote(name)})
}
