package config

import (
	"encoding"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ferry-edge/ferry/internal/setting"
)

// Limits against hostile input. A real configuration is far below each.
const (
	// MaxFileSize is the largest configuration file read.
	MaxFileSize = 4 << 20
	// maxNodes bounds how many YAML nodes one file may expand to, aliases
	// included: an alias bomb trips it long before memory does.
	maxNodes = 1_000_000
	// maxDepth bounds nesting; ferry's schema is a few levels deep.
	maxDepth = 64
	// maxSecretFile is the largest *_file secret read.
	maxSecretFile = 64 << 10
)

// Pos is a place in a file.
type Pos struct {
	File   string
	Line   int
	Column int
}

func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	if p.Column == 0 {
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
}

// Defaulter is implemented by config structs that set their defaults before
// decoding, so that a key the file omits keeps its default.
type Defaulter interface {
	SetDefaults()
}

var (
	durationType        = reflect.TypeOf(time.Duration(0))
	secretType          = reflect.TypeOf(setting.Secret(""))
	nodeType            = reflect.TypeOf(yaml.Node{})
	deviceType          = reflect.TypeOf(Device{})
	textUnmarshalerType = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
	defaulterType       = reflect.TypeOf((*Defaulter)(nil)).Elem()
)

// decoder turns a yaml.v3 node tree into Go values, strictly: an unknown
// key, a duplicate key, a wrong type or an out-of-range number is an error
// at the node's line and column with the field path. It records every
// error instead of stopping at the first, and the position of every path it
// decodes, so that errors found later by Validate can be placed too.
type decoder struct {
	file    string // as shown in errors
	baseDir string // for relative *_file paths
	lookup  func(string) (string, bool)
	errs    *Errors
	pos     map[string]Pos
	nodes   int
	depth   int
	aborted bool
	// protocols are the blocks a device entry may hold besides its fields.
	protocols    []Protocol
	deviceFields map[string]field // Device's fields and the protocols' keys, for suggestions
}

func newDecoder(file string, errs *Errors) *decoder {
	return &decoder{
		file:    file,
		baseDir: filepath.Dir(file),
		lookup:  os.LookupEnv,
		errs:    errs,
		pos:     make(map[string]Pos),
	}
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	p := Pos{File: d.file}
	if n != nil {
		p.Line, p.Column = n.Line, n.Column
	}
	d.errs.add(&Error{Pos: p, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// fatalf records the error that stops decoding the file.
func (d *decoder) fatalf(n *yaml.Node, path, format string, args ...any) {
	p := Pos{File: d.file}
	if n != nil {
		p.Line, p.Column = n.Line, n.Column
	}
	d.errs.fatal = append(d.errs.fatal, &Error{Pos: p, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// position returns the position recorded for path or for its closest
// ancestor.
func (d *decoder) position(path string) Pos {
	for {
		if p, ok := d.pos[path]; ok {
			return p
		}
		i := strings.LastIndexAny(path, ".[")
		if i <= 0 {
			if p, ok := d.pos[""]; ok {
				return p
			}
			return Pos{File: d.file}
		}
		path = path[:i]
	}
}

// count counts node n against maxNodes; false when decoding is to stop (the
// document expands to too many nodes: an alias bomb).
func (d *decoder) count(n *yaml.Node, path string) bool {
	if d.aborted {
		return false
	}
	d.nodes++
	if d.nodes > maxNodes {
		d.fatalf(n, path, "document expands to more than %d nodes (alias bomb?)", maxNodes)
		d.aborted = true
		return false
	}
	return true
}

// decode decodes n into v (addressable) at path.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if !d.count(n, path) {
		return
	}
	d.depth++
	defer func() { d.depth-- }()
	if d.depth > maxDepth {
		d.fatalf(n, path, "nested deeper than %d levels", maxDepth)
		d.aborted = true
		return
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return
		}
		d.depth--
		d.nodes--
		d.decode(n.Content[0], v, path)
		d.depth++
		return
	case yaml.AliasNode:
		d.decode(n.Alias, v, path)
		return
	}
	if _, ok := d.pos[path]; !ok {
		d.pos[path] = Pos{File: d.file, Line: n.Line, Column: n.Column}
	}
	t := v.Type()
	if t == nodeType {
		v.Set(reflect.ValueOf(*n))
		return
	}
	if t.Kind() == reflect.Pointer {
		if isNull(n) {
			v.SetZero()
			return
		}
		if v.IsNil() {
			v.Set(newValue(t.Elem()))
		}
		d.decode(n, v.Elem(), path)
		return
	}
	if v.CanAddr() && v.Addr().Type().Implements(textUnmarshalerType) && t != secretType {
		s, ok := d.scalar(n, path, "a "+typeWord(t))
		if !ok {
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			d.errorf(n, path, "%v", err)
		}
		return
	}
	switch {
	case t == durationType:
		s, ok := d.scalar(n, path, "a duration")
		if !ok {
			return
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			if s == "0" {
				dur, err = 0, nil
			} else {
				d.errorf(n, path, "%q is not a duration (want e.g. 500ms, 10s, 5m)", s)
				return
			}
		}
		v.SetInt(int64(dur))
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if lf, ok := listForm(v); ok && n.Kind == yaml.SequenceNode {
			d.decode(n, reflect.ValueOf(lf).Elem(), path)
			return
		}
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		if isNull(n) {
			v.SetZero()
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, path, "expected a list, got %s", nodeWord(n))
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, item := range n.Content {
			e := s.Index(i)
			deepDefaults(e)
			d.decode(item, e, setting.Index(path, i))
		}
		v.Set(s)
	case reflect.Map:
		if isNull(n) {
			v.SetZero()
			return
		}
		if n.Kind != yaml.MappingNode || t.Key().Kind() != reflect.String {
			d.errorf(n, path, "expected a mapping, got %s", nodeWord(n))
			return
		}
		m := reflect.MakeMapWithSize(t, len(n.Content)/2)
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			key, ok := d.scalar(k, path, "a string key")
			if !ok {
				continue
			}
			if seen[key] {
				d.errorf(k, setting.Join(path, key), "duplicate key %q", key)
				continue
			}
			seen[key] = true
			e := reflect.New(t.Elem()).Elem()
			deepDefaults(e)
			d.decode(val, e, setting.Join(path, key))
			m.SetMapIndex(reflect.ValueOf(key).Convert(t.Key()), e)
		}
		v.Set(m)
	case reflect.String:
		s, ok := d.scalar(n, path, "a string")
		if ok {
			v.SetString(s)
		}
	case reflect.Bool:
		s, ok := d.scalar(n, path, "true or false")
		if !ok {
			return
		}
		b, err := strconv.ParseBool(s)
		if err != nil || (n.Tag != "!!bool" && n.Tag != "!!str") {
			d.errorf(n, path, "%q is not a boolean (want true or false)", s)
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		s, ok := d.scalar(n, path, "an integer")
		if !ok {
			return
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 0, 64)
		lo, hi := intRange(t.Bits())
		switch {
		case err != nil && isRangeErr(err):
			d.errorf(n, path, "%s is out of range %d..%d", s, lo, hi)
		case err != nil:
			d.errorf(n, path, "%q is not an integer", s)
		case i < lo || i > hi:
			d.errorf(n, path, "%d is out of range %d..%d", i, lo, hi)
		default:
			v.SetInt(i)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		s, ok := d.scalar(n, path, "an integer")
		if !ok {
			return
		}
		hi := uint64(math.MaxUint64) >> (64 - t.Bits())
		if strings.HasPrefix(s, "-") {
			d.errorf(n, path, "%s is out of range 0..%d", s, hi)
			return
		}
		u, err := strconv.ParseUint(strings.ReplaceAll(s, "_", ""), 0, 64)
		switch {
		case err != nil && isRangeErr(err):
			d.errorf(n, path, "%s is out of range 0..%d", s, hi)
		case err != nil:
			d.errorf(n, path, "%q is not an integer", s)
		case u > hi:
			d.errorf(n, path, "%d is out of range 0..%d", u, hi)
		default:
			v.SetUint(u)
		}
	case reflect.Float32, reflect.Float64:
		s, ok := d.scalar(n, path, "a number")
		if !ok {
			return
		}
		f, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), t.Bits())
		if err != nil {
			switch strings.ToLower(s) {
			case ".inf", "+.inf":
				f, err = math.Inf(1), nil
			case "-.inf":
				f, err = math.Inf(-1), nil
			}
		}
		if err != nil || math.IsNaN(f) {
			d.errorf(n, path, "%q is not a number", s)
			return
		}
		v.SetFloat(f)
	default:
		d.errorf(n, path, "cannot decode into %s (ferry bug)", t)
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, got %s", nodeWord(n))
		return
	}
	fields := structFields(v.Type())
	var dev *Device
	if v.Type() == deviceType {
		dev = v.Addr().Interface().(*Device)
		fields = d.deviceKeys()
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.Tag == "!!merge" {
			d.merge(val, v, path)
			continue
		}
		key, ok := d.scalar(k, path, "a string key")
		if !ok {
			continue
		}
		fpath := setting.Join(path, key)
		if prev, dup := seen[key]; dup {
			if prev.Value == key+"_file" { // password_file came first
				d.errorf(k, fpath, "set either %s or %s, not both", key, prev.Value)
				continue
			}
			d.errorf(k, fpath, "duplicate key %q (first at line %d)", key, prev.Line)
			continue
		}
		seen[key] = k
		if dev != nil && d.block(dev, key, val, fpath) {
			continue
		}
		f, ok := fields[key]
		if ok {
			d.pos[fpath] = Pos{File: d.file, Line: val.Line, Column: val.Column}
			d.decode(val, v.FieldByIndex(f.index), fpath)
			continue
		}
		// `password_file: PATH` sets the Secret field `password`.
		if base, isFile := strings.CutSuffix(key, "_file"); isFile {
			if f, ok := fields[base]; ok && f.typ == secretType {
				if _, both := seen[base]; both {
					d.errorf(k, fpath, "set either %s or %s, not both", base, key)
					continue
				}
				seen[base] = k
				d.pos[setting.Join(path, base)] = Pos{File: d.file, Line: val.Line, Column: val.Column}
				d.secretFile(val, v.FieldByIndex(f.index), fpath)
				continue
			}
		}
		d.errorf(k, fpath, "unknown field %q%s", key, suggest(key, fields))
	}
}

// block decodes a device's protocol block when key names a protocol, as if
// it were a field of type *Config: defaults first, a null value unsets it,
// a second block of the same key (after a merge key) decodes over the
// first. It returns false when key names no protocol.
func (d *decoder) block(dev *Device, key string, n *yaml.Node, path string) bool {
	for _, p := range d.protocols {
		if p.Name != key {
			continue
		}
		b, ok := dev.blocks[key]
		if !ok {
			if dev.blocks == nil {
				dev.blocks = map[string]reflect.Value{}
			}
			b = reflect.New(reflect.TypeOf(p.Block())).Elem() // a nil *Config
			dev.blocks[key] = b
		}
		d.pos[path] = Pos{File: d.file, Line: n.Line, Column: n.Column}
		d.decode(n, b, path)
		return true
	}
	return false
}

// deviceKeys returns the keys a device entry may hold: Device's fields
// and the protocols' names (which decodeStruct hands to block).
func (d *decoder) deviceKeys() map[string]field {
	if d.deviceFields == nil {
		d.deviceFields = map[string]field{}
		for k, f := range structFields(deviceType) {
			d.deviceFields[k] = f
		}
		for _, p := range d.protocols {
			d.deviceFields[p.Name] = field{typ: reflect.TypeOf(p.Block())}
		}
	}
	return d.deviceFields
}

// merge applies a YAML merge key (<<: *defaults) to a struct.
func (d *decoder) merge(n *yaml.Node, v reflect.Value, path string) {
	if !d.count(n, path) {
		return
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		d.decodeStruct(n, v, path)
	case yaml.SequenceNode:
		for _, m := range n.Content {
			d.merge(m, v, path)
		}
	default:
		d.errorf(n, path, "merge key needs a mapping, got %s", nodeWord(n))
	}
}

func (d *decoder) secretFile(n *yaml.Node, v reflect.Value, path string) {
	name, ok := d.scalar(n, path, "a file path")
	if !ok {
		return
	}
	if !filepath.IsAbs(name) {
		name = filepath.Join(d.baseDir, name)
	}
	f, err := os.Open(name)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		d.errorf(n, path, "read %s: %v", name, err)
		return
	}
	if len(b) > maxSecretFile {
		d.errorf(n, path, "%s is larger than %d bytes", name, maxSecretFile)
		return
	}
	v.SetString(strings.TrimRight(string(b), "\r\n"))
}

// scalar returns the value of a scalar node with ${ENV} references
// expanded, or records an error naming what was wanted.
func (d *decoder) scalar(n *yaml.Node, path, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected %s, got %s", want, nodeWord(n))
		return "", false
	}
	if !strings.Contains(n.Value, "$") {
		return n.Value, true
	}
	s, err := expandEnv(n.Value, d.lookup)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return "", false
	}
	return s, true
}

// expandEnv replaces ${NAME} and ${NAME:-default} with the environment's
// values; $$ is a literal $. A $ not followed by { or $ is kept as is.
func expandEnv(s string, lookup func(string) (string, bool)) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				// The value is not quoted: it may be a secret.
				return "", errors.New("unterminated ${ (write $$ for a literal $)")
			}
			ref := s[i+2 : i+end]
			name, def, hasDef := strings.Cut(ref, ":-")
			if !validEnvName(name) {
				// The name is not quoted: in a secret it is part of the secret.
				return "", errors.New("${…} does not hold a valid environment variable name (letters, digits and _; write $$ for a literal $)")
			}
			val, ok := lookup(name)
			switch {
			case ok && val != "":
				b.WriteString(val)
			case hasDef:
				b.WriteString(def)
			case ok:
			default:
				return "", fmt.Errorf("environment variable %s is not set", name)
			}
			i += end
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return false
	}
	return true
}

type field struct {
	index []int
	typ   reflect.Type
}

var fieldCache sync.Map // reflect.Type → map[string]field

// structFields maps the YAML names of t's fields (tag `yaml:"name"`,
// `yaml:",inline"` flattens a struct) to their indexes. Fields without a
// yaml tag or tagged "-" are not decoded.
func structFields(t reflect.Type) map[string]field {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]field)
	}
	m := map[string]field{}
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag, ok := sf.Tag.Lookup("yaml")
		if !ok || tag == "-" || !sf.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(opts, "inline") {
			for k, f := range structFields(sf.Type) {
				m[k] = field{index: append([]int{i}, f.index...), typ: f.typ}
			}
			continue
		}
		m[name] = field{index: []int{i}, typ: sf.Type}
	}
	fieldCache.Store(t, m)
	return m
}

// suggest returns ` (did you mean "x"?)` for the closest known key, or the
// list of valid keys when none is close.
func suggest(key string, fields map[string]field) string {
	names := make([]string, 0, len(fields))
	best, bestD := "", 3
	for n := range fields {
		names = append(names, n)
		if dd := setting.EditDistance(key, n); dd < bestD {
			best, bestD = n, dd
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	sort.Strings(names)
	return " (valid: " + strings.Join(names, ", ") + ")"
}

func newValue(t reflect.Type) reflect.Value {
	p := reflect.New(t)
	deepDefaults(p.Elem())
	return p
}

// setDefaults calls SetDefaults on v when its type has one.
func setDefaults(v reflect.Value) {
	if v.CanAddr() && v.Addr().Type().Implements(defaulterType) {
		v.Addr().Interface().(Defaulter).SetDefaults()
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func isRangeErr(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

func intRange(bits int) (int64, int64) {
	return -1 << (bits - 1), 1<<(bits-1) - 1
}

func nodeWord(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	if isNull(n) {
		return "nothing (null)"
	}
	return fmt.Sprintf("%q", n.Value)
}

func typeWord(t reflect.Type) string {
	if t == reflect.TypeOf(setting.Size(0)) {
		return "size"
	}
	return "string"
}

// listFormer is implemented by a section that may also be written as a
// list (`uplink: [...]`): ListForm returns a pointer to the slice the list
// decodes into, with the list's paths (uplink[0].nats.urls).
type listFormer interface {
	ListForm() any
}

// listForm returns v's ListForm when v's type has one.
func listForm(v reflect.Value) (any, bool) {
	if !v.CanAddr() {
		return nil, false
	}
	lf, ok := v.Addr().Interface().(listFormer)
	if !ok {
		return nil, false
	}
	return lf.ListForm(), true
}
