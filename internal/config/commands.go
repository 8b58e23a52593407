package config

import (
	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/command"
)

// writablePoint is a point with a `write:` block, where the file has it.
type writablePoint struct {
	d    *decoder
	path string // devices[i].points[j]
	info ferry.PointInfo
}

// checkWritable checks the interlock of every writable point against the
// known points (a typo would otherwise refuse every command, or worse,
// read nothing), and its bounds: min not above max.
func (l *loader) checkWritable(known map[string]bool) {
	for _, w := range l.writable {
		spec := w.info.Write
		if spec.Interlock != "" {
			if _, err := command.ParseInterlock(w.info.Device, spec.Interlock, func(ref string) bool { return known[ref] }); err != nil {
				l.at(w.d, w.path+".write.interlock", err.Error())
			}
		}
		if spec.Min != nil && spec.Max != nil && *spec.Min > *spec.Max {
			l.at(w.d, w.path+".write.min", "is above write.max")
		}
		if spec.RateLimit < 0 {
			l.at(w.d, w.path+".write.rate_limit", "must not be negative")
		}
	}
}
