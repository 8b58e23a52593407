package gateway

import (
	"context"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/codec"
	"github.com/ferry-edge/ferry/uplink"
)

// source is what an upstream drains: the buffer (a single upstream) or
// one of its cursors. Beside uplink.Source it is a ferry.StateStore (the
// uplink keeps its batch seals there) and tells whether it still holds a
// record.
type source interface {
	uplink.Source
	ferry.StateStore
	Stored(lane ferry.Lane, seq uint64) bool
}

// filtered is a source seen through an upstream's filter (uplink.Filter):
// a record the filter excludes is acknowledged at once, for this upstream
// only, and never handed to it; a telemetry record of a device the filter
// takes is handed over with only the points it takes, re-encoded (the
// same bytes at every read, so a replay is identical). Filtering by device
// is per record: a telemetry record holds the scans of one device.
//
// The wrapper hides the buffer's retention of acknowledged records
// (buffer.retain_acked): an upstream with a filter does not use it.
type filtered struct {
	source
	f   uplink.Filter
	enc codec.Encoder // used by Next's caller only (one uplink)
	tr  codec.TelemetryReader
}

func newFiltered(src source, f uplink.Filter) *filtered { return &filtered{source: src, f: f} }

// Next returns the next records the filter takes, acknowledging those it
// excludes on the way.
func (s *filtered) Next(ctx context.Context, max, maxBytes int) ([]ferry.Record, error) {
	for {
		recs, err := s.source.Next(ctx, max, maxBytes)
		if err != nil {
			return nil, err
		}
		var out, skip []ferry.Record
		for _, r := range recs {
			data, keep := s.apply(r)
			if !keep {
				skip = append(skip, r)
				continue
			}
			r.Data = data
			out = append(out, r)
		}
		if len(skip) > 0 {
			if err := s.source.Ack(skip...); err != nil {
				s.source.Release(out...)
				return nil, err
			}
		}
		if len(out) > 0 {
			return out, nil
		}
	}
}

// apply returns the record's data as this upstream gets it, or false when
// the filter excludes the record. A record that cannot be decoded passes
// whole: the uplink counts and reports it as it does without a filter.
func (s *filtered) apply(r ferry.Record) ([]byte, bool) {
	f := &s.f
	switch r.Lane {
	case ferry.LaneAlerts:
		if !f.TakesAlerts() {
			return nil, false
		}
		if len(f.Devices) == 0 && f.PointsAll() {
			return r.Data, true
		}
		_, a, err := codec.DecodeAlert(r.Data)
		if err != nil {
			return r.Data, true
		}
		if (a.Device != "" && !f.Device(a.Device)) || (a.Point != "" && !f.Point(a.Point)) {
			return nil, false
		}
		return r.Data, true
	case ferry.LaneTelemetry:
		if !f.TakesTelemetry() {
			return nil, false
		}
		if len(f.Devices) > 0 {
			if err := s.tr.Reset(r.Data); err != nil {
				return r.Data, true
			}
			if !f.Device(string(s.tr.Device())) {
				return nil, false
			}
		}
		if f.PointsAll() {
			return r.Data, true
		}
		return s.points(r.Data)
	}
	return r.Data, true
}

// points keeps the samples of the points the filter takes; false when
// none is left.
func (s *filtered) points(data []byte) ([]byte, bool) {
	tel, err := codec.DecodeTelemetry(data)
	if err != nil {
		return data, true
	}
	changed := false
	scans := tel.Scans[:0]
	for _, sc := range tel.Scans {
		kept := sc.Samples[:0]
		for _, smp := range sc.Samples {
			if s.f.Point(smp.Point) {
				kept = append(kept, smp)
			}
		}
		changed = changed || len(kept) != len(sc.Samples)
		if len(kept) == 0 {
			continue
		}
		sc.Samples = kept
		scans = append(scans, sc)
	}
	switch {
	case len(scans) == 0:
		return nil, false
	case !changed:
		return data, true
	}
	return s.enc.AppendTelemetry(nil, tel.ConfigVersion, tel.Device, scans), true
}
