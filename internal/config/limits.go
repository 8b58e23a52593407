package config

import (
	"fmt"
	"os"

	"go.yaml.in/yaml/v3"

	"github.com/ferry-edge/ferry/internal/setting"
)

// Bounds on the whole configuration: the main file and every device map
// of devices_dir together. A configuration beyond one of them is refused
// with an error that names the limit, before more is read or decoded, so
// that a runaway generator (or a hostile pushed bundle) cannot make the
// gateway spend its memory validating 100,000 device files. Each file is
// also bounded by MaxFileSize, and its YAML by the node and depth limits.
//
// The limits are set well above any plant one gateway serves (the 10,000
// tag benchmark uses a tenth of MaxPoints) and cost, at their worst,
// about 300 MB of memory while loading.
const (
	// MaxDeviceFiles is the most *.yaml/*.yml files devices_dir may hold.
	MaxDeviceFiles = 1000
	// MaxConfigBytes is the most bytes the main file and the device maps
	// may hold together.
	MaxConfigBytes = 32 << 20
	// MaxDevices is the most devices the configuration may hold.
	MaxDevices = 2000
	// MaxPoints is the most points all devices together may hold.
	MaxPoints = 100_000
)

// limits counts what the loader has read against the bounds.
type limits struct {
	bytes  int
	points int
	// over is set once the bytes are over: no more files are read.
	over bool
	// pointsOver is set once the points error is reported.
	pointsOver bool
}

// checkFiles reports, at devices_dir of the main file, a devices_dir with
// more than MaxDeviceFiles device maps, or whose files are together (with
// the main file's mainBytes) over MaxConfigBytes by their size on disk;
// then none of them is read.
func (l *loader) checkFiles(main *decoder, dir string, names []string, mainBytes int) []string {
	if len(names) > MaxDeviceFiles {
		l.bound(main.position("devices_dir"), "devices_dir", fmt.Sprintf("%s holds %d device files; at most %d are read (split the devices over several gateways, or merge files: each may hold many devices)", dir, len(names), MaxDeviceFiles))
		return nil
	}
	total := int64(mainBytes)
	for _, n := range names {
		if fi, err := os.Stat(n); err == nil {
			total += fi.Size()
		}
	}
	if total > MaxConfigBytes {
		l.bound(main.position("devices_dir"), "devices_dir", fmt.Sprintf("%s holds %d MiB of device files: the configuration (main file and devices_dir together) may hold at most %d MiB", dir, total>>20, MaxConfigBytes>>20))
		return nil
	}
	return names
}

// checkBytes counts n bytes read from the file shown; it reports the file
// that takes the total over MaxConfigBytes (files that grew after
// checkFiles saw their size) and returns false for it and every later
// one.
func (l *loader) checkBytes(shown string, n int) bool {
	if l.lim.over {
		return false
	}
	l.lim.bytes += n
	if l.lim.bytes <= MaxConfigBytes {
		return true
	}
	l.lim.over = true
	l.bound(Pos{File: shown}, "", fmt.Sprintf("the configuration is over %d MiB with this file (main file and devices_dir together); the rest is not read", MaxConfigBytes>>20))
	return false
}

// checkDeviceCount reports the device past MaxDevices and returns the
// devices to validate: the first MaxDevices.
func (l *loader) checkDeviceCount(c *Config, fileIndex []int) ([]Device, []int) {
	if len(c.Devices) <= MaxDevices {
		return c.Devices, fileIndex
	}
	dev := &c.Devices[MaxDevices]
	if d := l.decs[dev.File]; d != nil {
		p := setting.Index("devices", fileIndex[MaxDevices])
		l.bound(d.position(p), p, fmt.Sprintf("is device %d of %d: a configuration holds at most %d devices", MaxDevices+1, len(c.Devices), MaxDevices))
	}
	return c.Devices[:MaxDevices], fileIndex[:MaxDevices]
}

// pointCount returns how many points the points node n holds (an alias
// counts what it stands for).
func pointCount(n *yaml.Node) int {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.SequenceNode {
		return 0
	}
	return len(n.Content)
}

// bound records a limit's error. Like the alias-bomb and nesting bounds it
// is listed first, ahead of what the partial load found (the duplicate
// names of a generator gone wild, say).
func (l *loader) bound(pos Pos, path, msg string) {
	l.errs.fatal = append(l.errs.fatal, &Error{Pos: pos, Path: path, Msg: msg})
}

// checkPoints counts the n points of the device at path; it reports the
// device whose points take the total over MaxPoints and returns false
// from then on.
func (l *loader) checkPoints(d *decoder, path string, n int) bool {
	if l.lim.pointsOver {
		return false
	}
	l.lim.points += n
	if l.lim.points <= MaxPoints {
		return true
	}
	l.lim.pointsOver = true
	l.bound(d.position(path), path, fmt.Sprintf("takes the configuration to %d points or more: it holds at most %d points", l.lim.points, MaxPoints))
	return false
}
