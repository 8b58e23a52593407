package uplink

import (
	"strconv"
	"strings"
	"time"

	"github.com/ferry-edge/ferry"
)

// compactTime is the time layout of Compact: UTC, milliseconds.
const compactTime = "2006-01-02T15:04:05.000Z"

// Compact returns m in a readable form, one line per scan of a telemetry
// message, one line otherwise, each ending in a newline:
//
//	2025-03-01T10:00:00.123Z press-line-3/press3 oil_temp=81.3 running=true dead=null(bad: timeout)
//	2025-03-01T10:00:02.000Z press-line-3 ALERT critical raised oil_hot press3.oil_temp=81.5 "oil_temp 81.5 > 80"
//	2025-03-01T10:00:00.000Z press-line-3 CATALOG 0123456789ab: 3 devices, 12 points
func (m *Message) Compact() string {
	var b strings.Builder
	switch {
	case m.Batch != nil:
		for i := range m.Batch.Records {
			b.WriteString((&Message{Kind: KindTelemetry, Telemetry: &m.Batch.Records[i].TelemetryMessage}).Compact())
		}
	case m.Telemetry != nil:
		t := m.Telemetry
		for _, sc := range t.Scans {
			b.WriteString(sc.Time.UTC().Format(compactTime))
			b.WriteByte(' ')
			b.WriteString(t.Gateway)
			b.WriteByte('/')
			b.WriteString(t.Device)
			if t.Parts > 0 {
				b.WriteString(" [part " + strconv.Itoa(t.Part) + "/" + strconv.Itoa(t.Parts) + "]")
			}
			for _, p := range sc.Points {
				b.WriteByte(' ')
				b.WriteString(p.Name)
				b.WriteByte('=')
				b.WriteString(compactValue(p.Value))
				if q := (ferry.Quality{Status: p.Quality, Reason: p.Reason}); !q.IsGood() || q.Reason != "" {
					b.WriteString("(" + q.String() + ")")
				}
				// A point's own time is shown when it is not the scan's
				// (a source timestamp), not for the microseconds between
				// the reads of one poll.
				if d := p.Time.Sub(sc.Time); d > time.Second || d < -time.Second {
					b.WriteString("@" + p.Time.UTC().Format(compactTime))
				}
			}
			b.WriteByte('\n')
		}
	case m.Alert != nil:
		a := m.Alert
		b.WriteString(a.Time.UTC().Format(compactTime))
		b.WriteString(" " + a.Gateway + " ALERT " + a.Severity + " " + a.State + " " + a.Rule)
		if a.Device != "" || a.Point != "" {
			b.WriteString(" " + a.Device)
			if a.Point != "" {
				b.WriteString("." + a.Point)
			}
			if !a.Value.IsNone() {
				b.WriteString("=" + compactValue(a.Value))
			}
		}
		if a.Message != "" {
			b.WriteString(" " + strconv.Quote(a.Message))
		}
		b.WriteByte('\n')
	case m.Catalog != nil:
		c := m.Catalog
		points := 0
		for _, d := range c.Devices {
			points += len(d.Points)
		}
		b.WriteString(c.Time.UTC().Format(compactTime))
		b.WriteString(" " + c.Gateway + " CATALOG " + c.ConfigVersion + ": " + strconv.Itoa(len(c.Devices)) + " devices, " + strconv.Itoa(points) + " points\n")
	default:
		b.WriteString(time.Time{}.Format(compactTime) + " " + m.Subject + " (empty)\n")
	}
	return b.String()
}

func compactValue(v ferry.Value) string {
	switch v.Kind() {
	case ferry.KindNone:
		return "null"
	case ferry.KindString:
		return strconv.Quote(v.Str())
	}
	return v.String()
}
