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

// checkWritable checks the interlock of every writable point: it parses
// and names configured points, of any device (a typo would otherwise
// refuse every command). The rest of a write: block (limits, the table or
// node) is the driver's to check.
func (l *loader) checkWritable(known map[string]bool) {
	for _, w := range l.writable {
		if src := w.info.Write.Interlock; src != "" {
			if _, err := command.ParseInterlock(w.info.Device, src, func(ref string) bool { return known[ref] }); err != nil {
				l.at(w.d, w.path+".write.interlock", err.Error())
			}
		}
	}
}
