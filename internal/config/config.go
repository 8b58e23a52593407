// Package config loads ferry's configuration: one YAML file plus every
// *.yaml file in its devices_dir, each holding one or more device maps.
//
// Loading is strict. An unknown key, a duplicate key, a wrong type, an
// out-of-range number, a duplicate device or point name, or a rule that
// names an unknown point is an error that names file:line:column and the
// field path:
//
//	devices.d/press3.yaml:14:7: devices[0].points[2].type: "flaot32" is not one of bool, int16, …
//
// Every problem found is reported, not only the first. Defaults are applied
// first, then the file is decoded over them. Durations are written "500ms",
// sizes "1GiB"; any scalar may reference the environment as ${NAME} or
// ${NAME:-default}; a secret field such as `password` may instead be given
// as `password_file: PATH`. Hostile input is refused quickly: files over
// MaxFileSize, alias bombs and deep nesting are errors, and so is a
// configuration beyond MaxDeviceFiles, MaxConfigBytes, MaxDevices or
// MaxPoints (limits.go).
//
// Each part of ferry owns its section's Config type, its defaults
// (SetDefaults) and its Validate method; this package composes them.
//
// This package names no protocol. A device entry holds one protocol block
// (`modbus:`, `opcua:`, …) whose key, block type, point type and typed
// device come from the Protocol table the caller passes to Load and
// Schema: internal/gateway's Protocols, next to the one protocol switch of
// the runtime. The loader decodes the block and the points into that
// protocol's types, strictly and with their defaults, and keeps the typed
// device it built in Device.Spec for the runtime to switch on; once the
// runtime has built its drivers it drops the points from the specs it
// keeps (Config.DropPointSpecs).
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
	"github.com/ferry-edge/ferry/internal/command"
	"github.com/ferry-edge/ferry/internal/fleet"
	"github.com/ferry-edge/ferry/internal/history"
	"github.com/ferry-edge/ferry/internal/reduce"
	"github.com/ferry-edge/ferry/internal/setting"
	"github.com/ferry-edge/ferry/internal/sinks"
	"github.com/ferry-edge/ferry/internal/web"
	"github.com/ferry-edge/ferry/rules"
	"github.com/ferry-edge/ferry/uplink"
)

// DefaultPath is where ferry looks for its configuration.
const DefaultPath = "/etc/ferry/ferry.yaml"

// Config is the whole configuration.
type Config struct {
	Gateway    Gateway       `yaml:"gateway"`
	DataDir    string        `yaml:"data_dir"`
	DevicesDir string        `yaml:"devices_dir"`
	Log        Log           `yaml:"log"`
	Devices    []Device      `yaml:"devices"`
	Rules      []rules.Rule  `yaml:"rules"`
	Reduce     reduce.Config `yaml:"reduce"`
	Alerts     sinks.Config  `yaml:"alerts"`
	Buffer     buffer.Config `yaml:"buffer"`
	Uplink     uplink.Config `yaml:"uplink"`
	HTTP       web.Config    `yaml:"http"`
	Fleet      *fleet.Config `yaml:"fleet" doc:"fleet mode: configuration from a JetStream KV bucket, status to another; omit to configure this gateway by its file alone"`
	// Commands: writes to devices (issue 19), off by default.
	Commands command.Config `yaml:"commands"`

	History history.Config `yaml:"history"`

	// Set by Load.

	// Path is the main file; Files lists it and every device file read.
	Path  string   `yaml:"-"`
	Files []string `yaml:"-"`
	// Version identifies this configuration: a hash of every file's name
	// and content. Records carry it so that the cloud side knows which map
	// produced a value.
	Version string `yaml:"-"`
	// Points describes every configured point, in file order.
	Points []ferry.PointInfo `yaml:"-"`
}

// Gateway names this gateway. ID and Site become NATS subject tokens and
// record ids.
type Gateway struct {
	ID   string `yaml:"id" doc:"unique name of this gateway; part of record ids and subjects"`
	Site string `yaml:"site" doc:"plant or site name; part of subjects"`
}

// Log configures ferry's own logs.
type Log struct {
	Level  string `yaml:"level" enum:"debug,info,warn,error"`
	Format string `yaml:"format" enum:"text,json"`
}

// Device is one entry of a `devices:` list: a name, exactly one protocol
// block, and the points in that protocol's form. The protocol blocks are
// not fields: the decoder takes their keys and types from the Protocol
// table (see Protocol).
type Device struct {
	Name        string    `yaml:"name"`
	Description string    `yaml:"description"`
	Points      yaml.Node `yaml:"points"`

	// Set by Load.

	// Protocol is the name of the device's protocol: its block's key.
	Protocol string `yaml:"-"`
	File     string `yaml:"-"`
	// Pos and Path place the device's protocol block ("devices[2].modbus"
	// in its file), for what only a driver finds (ferry validate).
	Pos  Pos    `yaml:"-"`
	Path string `yaml:"-"`
	// Spec is the typed device its Protocol built from the block and the
	// points (a modbus.Device, …), validated. DropPointSpecs leaves it
	// without its points.
	Spec any `yaml:"-"`

	// withoutPoints is the Protocol's WithoutPoints, for DropPointSpecs.
	withoutPoints func(spec any) any

	// blocks holds the protocol blocks as decoded, by protocol name: each
	// an addressable *Config, nil when the file wrote `modbus: null`.
	// Load drops it once Spec is built.
	blocks map[string]reflect.Value
}

// Protocol tells the loader about one protocol a device may speak. The
// table of them is internal/gateway's Protocols; NewProtocol builds an
// entry from a driver package's types.
type Protocol struct {
	// Name is the block's key in a device entry: "modbus".
	Name string
	// Block returns a new zero block (a *modbus.Config). Its type is what
	// counts: the loader decodes the device's block into a new value of it
	// as into any pointer field (SetDefaults first, nested structs too,
	// then strictly), and the JSON Schema is generated from it.
	Block func() any
	// Points returns a new empty points slice (a *[]modbus.Point) that the
	// device's points decode into; its element type feeds the JSON Schema.
	Points func() any
	// Device builds the typed device (a modbus.Device) from the decoded
	// block and points and validates it. infos describes each point in
	// order (Point is the point's name; the loader fills Device); err holds
	// setting field errors with paths relative to the device entry
	// ("modbus.url", "points[2].type").
	Device func(name string, block, points any) (dev any, infos []ferry.PointInfo, err error)
	// WithoutPoints returns a copy of a typed device that Device built,
	// without its points (Config.DropPointSpecs).
	WithoutPoints func(dev any) any
}

// NewProtocol returns the Protocol of a driver package whose block is C,
// whose points are P and whose device D, built by build: the points' Info
// describes them and D's Validate checks the device. D is a struct that
// holds the points in a field of type []P, which WithoutPoints sets to
// nil; NewProtocol panics when D has none (the running gateway would keep
// the points of its devices).
func NewProtocol[C, P, D any, PP interface {
	*P
	Info() ferry.PointInfo
}, DP interface {
	*D
	Validate() error
}](name string, build func(name string, block C, points []P) D) Protocol {
	pointsFields := fieldsOf[D, []P]()
	if len(pointsFields) == 0 {
		panic(fmt.Sprintf("config.NewProtocol(%q): %v holds its points in no field of type %v", name, reflect.TypeFor[D](), reflect.TypeFor[[]P]()))
	}
	return Protocol{
		Name:   name,
		Block:  func() any { return new(C) },
		Points: func() any { return new([]P) },
		Device: func(devName string, block, points any) (any, []ferry.PointInfo, error) {
			pts := *points.(*[]P)
			d := build(devName, *block.(*C), pts)
			return d, pointInfos[P, PP](pts), DP(&d).Validate()
		},
		WithoutPoints: func(dev any) any {
			d := dev.(D)
			v := reflect.ValueOf(&d).Elem()
			for _, i := range pointsFields {
				v.Field(i).SetZero()
			}
			return d
		},
	}
}

// fieldsOf returns the indexes of the exported fields of struct type S
// whose type is F.
func fieldsOf[S, F any]() []int {
	s, f := reflect.TypeFor[S](), reflect.TypeFor[F]()
	if s.Kind() != reflect.Struct {
		return nil
	}
	var out []int
	for i := range s.NumField() {
		if fd := s.Field(i); fd.IsExported() && fd.Type == f {
			out = append(out, i)
		}
	}
	return out
}

// DevicesOf returns the typed devices of c whose Spec is a T (the
// modbus.Device values, say), in file order; without their points once
// DropPointSpecs has run.
func DevicesOf[T any](c *Config) []T {
	var out []T
	for _, dev := range c.Devices {
		if t, ok := dev.Spec.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// DropPointSpecs removes the points from every device's Spec: each keeps
// its name and its protocol block (a modbus.Device with its Config and no
// Points). Points, the catalog of every point, stays.
//
// A running gateway calls it once it has built the drivers of c: the
// drivers hold what they need of the points, and the typed points (a few
// hundred bytes each) are then dead weight in the configuration it keeps.
// Nothing may build drivers from c afterwards (ferry read, plan and
// validate load a configuration of their own). DropPointSpecs changes c in
// place: call it before c is shared with other goroutines.
func (c *Config) DropPointSpecs() {
	for i := range c.Devices {
		dev := &c.Devices[i]
		if dev.Spec != nil && dev.withoutPoints != nil {
			dev.Spec = dev.withoutPoints(dev.Spec)
		}
	}
}

// SetDefaults sets the defaults applied before decoding.
func (c *Config) SetDefaults() {
	c.DataDir = "/var/lib/ferry"
	c.Log = Log{Level: "info", Format: "text"}
}

// Summary is the one line `ferry validate` prints.
func (c *Config) Summary() string {
	return fmt.Sprintf("%d devices, %d points, %d rules (version %s)", len(c.Devices), len(c.Points), len(c.Rules), c.Version)
}

// Load reads and validates the configuration at path and the device maps
// of its devices_dir; a device may speak any of protocols. On failure the
// error is an *Errors listing every problem; it wraps
// ferry.ErrInvalidConfig.
func Load(path string, protocols []Protocol) (*Config, error) {
	l := &loader{errs: &Errors{order: map[string]int{}}, decs: map[string]*decoder{}, protocols: protocols}
	c := l.load(path)
	if err := l.errs.err(); err != nil {
		return nil, err
	}
	return c, nil
}

type loader struct {
	errs      *Errors
	decs      map[string]*decoder // by file as shown
	files     []string
	protocols []Protocol
	// overlay is set when loading a fleet bundle (LoadFleet).
	overlay *overlay
	lim     limits // see limits.go
	// writable: the points with a write: block, for checkWritable.
	writable []writablePoint
}

var tokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func (l *loader) load(path string) *Config {
	c := &Config{Path: path}
	deepDefaults(reflect.ValueOf(c).Elem())
	h := sha256.New()
	d := l.decodeFile(path, path, c, h)
	if d == nil {
		return c
	}
	main := d
	for i := range c.Devices {
		c.Devices[i].File = path
	}
	devIndex := make([]int, len(c.Devices)) // index within its own file
	for i := range devIndex {
		devIndex[i] = i
	}
	if c.DevicesDir != "" {
		dir := c.DevicesDir
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(filepath.Dir(path), dir)
		}
		names, err := deviceFiles(dir)
		if err != nil {
			l.errs.add(&Error{Pos: main.position("devices_dir"), Path: "devices_dir", Msg: err.Error()})
		}
		names = l.checkFiles(main, c.DevicesDir, names, l.lim.bytes)
		mainInfo, _ := os.Stat(path)
		for _, name := range names {
			// devices_dir may be the main file's own directory
			// (devices_dir: /etc/ferry): the main file is not a device map.
			if fi, err := os.Stat(name); err == nil && mainInfo != nil && os.SameFile(fi, mainInfo) {
				continue
			}
			var df struct {
				Devices []Device `yaml:"devices"`
			}
			shown := name
			if rel, err := filepath.Rel(filepath.Dir(path), name); err == nil && !strings.HasPrefix(rel, "..") {
				shown = rel
			}
			if l.decodeFile(name, shown, &df, h) == nil {
				continue
			}
			for i := range df.Devices {
				df.Devices[i].File = shown
				devIndex = append(devIndex, i)
			}
			c.Devices = append(c.Devices, df.Devices...)
		}
	}
	l.applyOverlay(c)
	c.Files = l.files
	c.Version = hex.EncodeToString(h.Sum(nil))[:12]

	l.checkGateway(c, main)
	c.Devices, devIndex = l.checkDeviceCount(c, devIndex)
	known := l.checkDevices(c, devIndex)
	l.validate(main, "rules", rules.Validate(c.Rules, known))
	l.validate(main, "reduce", c.Reduce.Validate())
	l.checkReduce(c, main)
	l.validate(main, "alerts", c.Alerts.Validate())
	l.validate(main, "buffer", c.Buffer.Validate())
	l.validate(main, "uplink", c.Uplink.Validate())
	l.checkSubjects(c, main)
	l.validate(main, "http", c.HTTP.Validate())
	l.checkFleet(c, main)
	l.validate(main, "commands", c.Commands.Validate())
	l.checkWritable(known)
	l.validate(main, "history", c.History.Validate())
	if err := setting.OneOf(c.Log.Level, "debug", "info", "warn", "error"); err != nil {
		l.at(main, "log.level", err.Error())
	}
	if err := setting.OneOf(c.Log.Format, "text", "json"); err != nil {
		l.at(main, "log.format", err.Error())
	}
	if c.DataDir == "" {
		l.at(main, "data_dir", "is required")
	}
	return c
}

// decodeFile reads, parses and decodes one file into v. It returns nil
// when the file could not be read or parsed at all.
func (l *loader) decodeFile(name, shown string, v any, h io.Writer) *decoder {
	l.errs.order[shown] = len(l.errs.order)
	data, err := readLimited(name)
	if err != nil {
		l.errs.add(&Error{Pos: Pos{File: shown}, Msg: err.Error()})
		return nil
	}
	if !l.checkBytes(shown, len(data)) {
		return nil
	}
	l.files = append(l.files, name)
	// The version depends on content, not on how the path was spelled
	// (ferry.yaml, ./ferry.yaml, /etc/ferry/ferry.yaml): file names
	// without their directory.
	fmt.Fprintf(h, "%s\x00%d\x00", filepath.Base(shown), len(data))
	h.Write(data)
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		l.errs.add(parseError(shown, data, err))
		return nil
	}
	d := newDecoder(shown, l.errs)
	d.baseDir = filepath.Dir(name)
	d.protocols = l.protocols
	l.decs[shown] = d
	if _, isMain := v.(*Config); isMain && l.overlay != nil {
		l.overlay.patch(l, d, &root, h)
	}
	if root.Kind == 0 {
		return d // no document: an empty or comments-only file
	}
	if len(root.Content) > 0 && root.Content[0].Kind != yaml.MappingNode && !isNull(root.Content[0]) {
		d.errorf(root.Content[0], "", "expected a mapping at the top of the file, got %s", nodeWord(root.Content[0]))
		return nil
	}
	d.decode(&root, reflect.ValueOf(v).Elem(), "")
	return d
}

// checkSubjects checks the uplink's subject templates against the gateway
// section; a missing site, which every default template needs, is one
// error at gateway.site rather than one per template.
func (l *loader) checkSubjects(c *Config, d *decoder) {
	missingSite := false
	for _, fe := range setting.Flatten(c.Uplink.ValidateGateway(c.Gateway.ID, c.Gateway.Site)) {
		if strings.Contains(fe.Msg, "gateway.site is not set") {
			missingSite = true
			continue
		}
		if strings.Contains(fe.Msg, "gateway.id is not a valid token") {
			continue // checkGateway reports the id itself
		}
		l.at(d, setting.Join("uplink", fe.Path), fe.Msg)
	}
	if missingSite {
		l.at(d, "gateway.site", "is required: the uplink's NATS subjects use {site} (set gateway.site, or write subject templates without {site})")
	}
}

// checkReduce reports a reduce.points entry whose match fits no
// configured point: a typo would otherwise reduce nothing, silently.
func (l *loader) checkReduce(c *Config, d *decoder) {
	for i, e := range c.Reduce.Points {
		if e.Match == "" {
			continue // Validate reports it
		}
		if _, err := path.Match(e.Match, ""); err != nil {
			continue // Validate reports it
		}
		found := false
		for _, p := range c.Points {
			if ok, _ := path.Match(e.Match, p.Device+"."+p.Point); ok {
				found = true
				break
			}
		}
		if !found {
			l.at(d, setting.Index("reduce.points", i)+".match", fmt.Sprintf("%q matches no configured point (device.point)", e.Match))
		}
	}
}

// checkGateway validates the gateway section.
func (l *loader) checkGateway(c *Config, d *decoder) {
	if c.Gateway.ID == "" {
		l.at(d, "gateway.id", "is required")
	} else if !tokenRE.MatchString(c.Gateway.ID) {
		l.at(d, "gateway.id", fmt.Sprintf("%q may hold only letters, digits, _ and -", c.Gateway.ID))
	}
	if c.Gateway.Site != "" && !tokenRE.MatchString(c.Gateway.Site) {
		l.at(d, "gateway.site", fmt.Sprintf("%q may hold only letters, digits, _ and -", c.Gateway.Site))
	}
}

// checkDevices validates every device, decodes its points into the
// protocol's form, and returns the set of known "device.point" names.
func (l *loader) checkDevices(c *Config, fileIndex []int) map[string]bool {
	known := map[string]bool{}
	type first struct {
		file string
		pos  Pos
	}
	names := map[string]first{}
	for i := range c.Devices {
		dev := &c.Devices[i]
		d := l.decs[dev.File]
		p := setting.Index("devices", fileIndex[i])
		switch {
		case dev.Name == "":
			l.at(d, p+".name", "is required")
		case !tokenRE.MatchString(dev.Name):
			l.at(d, p+".name", fmt.Sprintf("%q may hold only letters, digits, _ and -", dev.Name))
		default:
			if f, dup := names[dev.Name]; dup {
				l.at(d, p+".name", fmt.Sprintf("duplicate device name %q (first at %s)", dev.Name, f.pos))
			} else {
				names[dev.Name] = first{dev.File, d.position(p + ".name")}
			}
		}
		var protos []string
		var proto Protocol
		for _, pr := range l.protocols {
			if b, ok := dev.blocks[pr.Name]; ok && !b.IsNil() {
				protos = append(protos, pr.Name)
				proto = pr
			}
		}
		if len(protos) != 1 {
			if len(protos) == 0 {
				l.at(d, p, "needs one protocol block: "+l.protocolList())
			} else {
				l.at(d, p, "has several protocol blocks ("+strings.Join(protos, ", ")+"); a device speaks one")
			}
			continue
		}
		dev.Protocol = proto.Name
		dev.Pos, dev.Path = d.position(p+"."+proto.Name), p+"."+proto.Name
		pp := p + ".points"
		// Exactly one block is set (checked above): decode the points in
		// that protocol's form, and let the protocol build and validate
		// its device. The runtime's protocol switch is
		// internal/gateway/groups.go.
		if !l.checkPoints(d, pp, pointCount(&dev.Points)) {
			continue
		}
		points := proto.Points()
		l.decodePoints(d, dev, pp, points)
		spec, infos, err := proto.Device(dev.Name, dev.blocks[proto.Name].Interface(), points) // infos[j].Point is the point's name
		dev.Spec, dev.blocks, dev.withoutPoints = spec, nil, proto.WithoutPoints
		l.validate(d, p, err)
		seen := map[string]int{}
		for j := range infos {
			n := infos[j].Point
			np := setting.Index(pp, j) + ".name"
			switch {
			case n == "":
				l.at(d, np, "is required")
			case !tokenRE.MatchString(n):
				l.at(d, np, fmt.Sprintf("%q may hold only letters, digits, _ and -", n))
			default:
				if k, dup := seen[n]; dup {
					l.at(d, np, fmt.Sprintf("duplicate point name %q (first at %s)", n, d.position(setting.Index(pp, k)+".name")))
					continue
				}
				seen[n] = j
				known[dev.Name+"."+n] = true
				infos[j].Device = dev.Name
				if infos[j].Description == "" && len(infos) == 1 {
					infos[j].Description = dev.Description
				}
				c.Points = append(c.Points, infos[j])
				if infos[j].Write != nil {
					l.writable = append(l.writable, writablePoint{d, setting.Index(pp, j), infos[j]})
				}
			}
		}
	}
	return known
}

// protocolList names the protocols a device may speak: "modbus, opcua or
// mqtt".
func (l *loader) protocolList() string {
	names := make([]string, len(l.protocols))
	for i, p := range l.protocols {
		names[i] = p.Name
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// pointInfos returns the Info of each point, in order (its Point is the
// point's name; the loader fills in Device).
func pointInfos[P any, PP interface {
	*P
	Info() ferry.PointInfo
}](points []P) []ferry.PointInfo {
	infos := make([]ferry.PointInfo, 0, len(points))
	for j := range points {
		infos = append(infos, PP(&points[j]).Info())
	}
	return infos
}

// decodePoints decodes a device's points node into the protocol's point
// slice (a pointer to []P).
func (l *loader) decodePoints(d *decoder, dev *Device, path string, dst any) {
	n := &dev.Points
	if n.Kind == 0 || isNull(n) {
		return
	}
	d.decode(n, reflect.ValueOf(dst).Elem(), path)
	// The node tree is several times the size of the points decoded
	// from it; a running gateway keeps its Config, not the YAML.
	dev.Points = yaml.Node{}
}

// validate records the FieldErrors of err at their positions in d's file.
func (l *loader) validate(d *decoder, prefix string, err error) {
	for _, fe := range setting.Flatten(err) {
		l.at(d, setting.Join(prefix, fe.Path), fe.Msg)
	}
}

// at records a validation error, unless decoding already reported one at
// the same path (a value that failed to decode is also "missing").
func (l *loader) at(d *decoder, path, msg string) {
	for _, e := range l.errs.List {
		if e.File == d.file && e.Path == path {
			return
		}
	}
	l.errs.add(&Error{Pos: d.position(path), Path: path, Msg: msg})
}

// deviceFiles lists the *.yaml and *.yml files of dir, sorted.
func deviceFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("directory %s does not exist", dir)
		}
		return nil, err
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, ".") {
			continue
		}
		if strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml") {
			out = append(out, filepath.Join(dir, n))
		}
	}
	sort.Strings(out)
	return out, nil
}

func readLimited(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("file is larger than %d bytes", MaxFileSize)
	}
	return data, nil
}

var lineRE = regexp.MustCompile(`line (\d+)(?::(\d+))?: `)

// parseError turns a yaml.v3 syntax error into an Error with a position.
// yaml.v3 names the line only, so the column is found in data: for a flow
// collection that does not close, the bracket that opens it (and, when
// the cause is an unquoted ${VAR} inside it, the $ with a clear message);
// else the line's first character.
func parseError(file string, data []byte, err error) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	e := &Error{Pos: Pos{File: file}}
	if m := lineRE.FindStringSubmatchIndex(msg); m != nil {
		e.Line, _ = strconv.Atoi(msg[m[2]:m[3]])
		if m[4] >= 0 {
			e.Column, _ = strconv.Atoi(msg[m[4]:m[5]])
		}
		msg = msg[:m[0]] + msg[m[1]:]
	}
	e.Msg = strings.TrimSpace(msg)
	lines := strings.Split(string(data), "\n")
	if e.Line < 1 || e.Line > len(lines) || e.Column > 0 {
		return e
	}
	line := lines[e.Line-1]
	if strings.Contains(e.Msg, "did not find expected ',' or") {
		if col, v := unquotedVar(lines[e.Line-1:]); col > 0 {
			e.Line += v.line
			e.Column = col
			e.Msg = fmt.Sprintf("unquoted %s inside a flow collection {…} or […]: YAML reads its { as a nested mapping; quote it: %q", v.text, v.text)
			return e
		}
		if col := openBracket(line); col > 0 {
			e.Column = col
			e.Msg += fmt.Sprintf(" (the %c here is not closed)", line[col-1])
			return e
		}
	}
	e.Column = len(line) - len(strings.TrimLeft(line, " \t")) + 1
	return e
}

// unquoted is a ${VAR} found outside quotes.
type unquoted struct {
	line int // lines after the first
	text string
}

// unquotedVar finds the first ${…} outside quotes in a flow collection
// that starts on lines[0], returning its 1-based column (0 if none).
func unquotedVar(lines []string) (int, unquoted) {
	depth := 0
	for n, line := range lines {
		if n > 20 {
			break
		}
		col, found := 0, unquoted{}
		yamlCode(line, func(i int, c byte) bool {
			switch {
			case c == '$' && depth > 0 && strings.HasPrefix(line[i:], "${"):
				end := strings.IndexByte(line[i:], '}')
				if end < 0 {
					end = len(line) - i - 1
				}
				col, found = i+1, unquoted{line: n, text: line[i : i+end+1]}
				return false
			case c == '{' || c == '[':
				depth++
			case c == '}' || c == ']':
				depth--
			}
			return true
		})
		if col > 0 {
			return col, found
		}
	}
	return 0, unquoted{}
}

// openBracket returns the 1-based column of the first { or [ of line,
// outside quotes and comments, that the line does not close (0 if none).
func openBracket(line string) int {
	var stack []int
	yamlCode(line, func(i int, c byte) bool {
		switch {
		case c == '{' || c == '[':
			stack = append(stack, i)
		case (c == '}' || c == ']') && len(stack) > 0:
			stack = stack[:len(stack)-1]
		}
		return true
	})
	if len(stack) == 0 {
		return 0
	}
	return stack[0] + 1
}

// yamlCode calls fn with each byte of line that is neither inside quotes
// nor in a comment (a quote character itself is not passed), until fn
// returns false.
func yamlCode(line string, fn func(i int, c byte) bool) {
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#' && (i == 0 || line[i-1] == ' '):
			return
		default:
			if !fn(i, c) {
				return
			}
		}
	}
}

// deepDefaults calls SetDefaults on v's nested struct fields (inner first)
// and then on v, so that a section the file omits keeps its defaults.
func deepDefaults(v reflect.Value) {
	if v.Kind() != reflect.Struct || v.Type() == nodeType {
		return
	}
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		if f.Kind() == reflect.Struct && f.CanSet() && v.Type().Field(i).Tag.Get("yaml") != "-" {
			deepDefaults(f)
		}
	}
	setDefaults(v)
}
