package command

import (
	"fmt"
	"sync"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"

	"github.com/ferry-edge/ferry"
)

// An interlock is an expression in the rules' language (expr-lang) that
// must be true for a write to go ahead. It names points as device.point,
// device["point"] or $env["device"]["point"], as rules do, or, for a point
// of the device being written, by its bare name: `line_speed == 0`.

// maxInterlockLen bounds one interlock expression.
const maxInterlockLen = 4 << 10

// Ref is one point an interlock reads.
type Ref struct{ Device, Point string }

func (r Ref) String() string { return r.Device + "." + r.Point }

// interlock is a compiled interlock of one point.
type interlock struct {
	src  string
	refs []Ref
	// bare[i] is set when refs[i] was written by its bare name.
	bare []bool
	// progs holds the program compiled for each combination of the
	// refs' value kinds (expr checks types at compile time).
	mu    sync.Mutex
	progs map[string]*vm.Program
}

// ParseInterlock parses src, the interlock of a point of device, and
// returns the points it reads. known, when not nil, checks each
// ("device.point"). It is what config validation calls.
func ParseInterlock(device, src string, known func(string) bool) ([]Ref, error) {
	il, err := compileInterlock(device, src, known)
	if err != nil {
		return nil, err
	}
	return il.refs, nil
}

func compileInterlock(device, src string, known func(string) bool) (*interlock, error) {
	if len(src) > maxInterlockLen {
		return nil, fmt.Errorf("interlock is longer than %d bytes", maxInterlockLen)
	}
	tree, err := parser.Parse(src)
	if err != nil {
		return nil, fmt.Errorf("interlock %q: %w", src, err)
	}
	f := &refWalker{device: device, seen: map[Ref]bool{}, bases: map[ast.Node]bool{}}
	ast.Walk(&tree.Node, f)
	if f.err != nil {
		return nil, fmt.Errorf("interlock %q: %w", src, f.err)
	}
	for _, id := range f.idents {
		if f.bases[id] {
			continue
		}
		r := Ref{device, id.Value}
		if !f.seen[r] {
			f.seen[r] = true
			f.refs = append(f.refs, r)
			f.bare = append(f.bare, true)
		}
	}
	il := &interlock{src: src, refs: f.refs, bare: f.bare}
	for _, r := range il.refs {
		if known != nil && !known(r.String()) {
			return nil, fmt.Errorf("interlock %q: unknown point %q", src, r.String())
		}
	}
	il.progs = map[string]*vm.Program{}
	return il, nil
}

// env builds the expression's environment with each ref's value.
func (il *interlock) env(val func(Ref) any) map[string]any {
	env := map[string]any{}
	for i, r := range il.refs {
		v := val(r)
		if il.bare[i] {
			env[r.Point] = v
			continue
		}
		m, _ := env[r.Device].(map[string]any)
		if m == nil {
			m = map[string]any{}
			env[r.Device] = m
		}
		m[r.Point] = v
	}
	return env
}

// eval runs the interlock over the current values: ok is false, with a
// reason, when it is false or cannot be evaluated.
func (il *interlock) eval(value func(device, point string) (ferry.Sample, bool)) (ok bool, reason string) {
	for _, r := range il.refs {
		s, have := value(r.Device, r.Point)
		switch {
		case !have:
			return false, fmt.Sprintf("interlock %q: %s has no value yet", il.src, r)
		case !s.Quality.IsGood():
			return false, fmt.Sprintf("interlock %q: %s is %s", il.src, r, s.Quality)
		}
	}
	kinds := make([]byte, 0, len(il.refs))
	env := il.env(func(r Ref) any {
		s, _ := value(r.Device, r.Point)
		kinds = append(kinds, byte(s.Value.Kind()))
		return s.Value.Any()
	})
	prog, err := il.program(string(kinds), env)
	if err != nil {
		return false, fmt.Sprintf("interlock %q: %v", il.src, err)
	}
	out, err := expr.Run(prog, env)
	if err != nil {
		return false, fmt.Sprintf("interlock %q: %v", il.src, err)
	}
	if b, _ := out.(bool); !b {
		return false, fmt.Sprintf("interlock %q is false", il.src)
	}
	return true, ""
}

// program returns the program for values of the given kinds, compiling
// it on first use (the types the values have decide what expr accepts:
// `door && speed == 0` needs door to be a bool).
func (il *interlock) program(kinds string, env map[string]any) (*vm.Program, error) {
	il.mu.Lock()
	defer il.mu.Unlock()
	if p, ok := il.progs[kinds]; ok {
		return p, nil
	}
	p, err := expr.Compile(il.src, expr.Env(env), expr.AsBool())
	if err != nil {
		return nil, err
	}
	if len(il.progs) >= 16 {
		clear(il.progs)
	}
	il.progs[kinds] = p
	return p, nil
}

// refWalker collects the point references of an expression.
type refWalker struct {
	device string
	refs   []Ref
	bare   []bool
	seen   map[Ref]bool
	idents []*ast.IdentifierNode
	bases  map[ast.Node]bool // identifiers that are part of a device.point
	err    error
}

func (f *refWalker) Visit(n *ast.Node) {
	switch n := (*n).(type) {
	case *ast.IdentifierNode:
		if n.Value == "$env" {
			f.bases[n] = true
			return
		}
		f.idents = append(f.idents, n)
	case *ast.MemberNode:
		pt, ok := n.Property.(*ast.StringNode)
		if !ok {
			return
		}
		var dev string
		switch d := n.Node.(type) {
		case *ast.IdentifierNode:
			if d.Value == "$env" {
				return
			}
			dev = d.Value
			f.bases[d] = true
		case *ast.MemberNode:
			env, ok1 := d.Node.(*ast.IdentifierNode)
			ds, ok2 := d.Property.(*ast.StringNode)
			if !ok1 || !ok2 || env.Value != "$env" {
				return
			}
			dev = ds.Value
		default:
			return
		}
		r := Ref{dev, pt.Value}
		if !f.seen[r] {
			f.seen[r] = true
			f.refs = append(f.refs, r)
			f.bare = append(f.bare, false)
		}
	}
}

// interlocks caches compiled interlocks by device and source; a reload
// that changes an interlock compiles the new one on its first use.
type interlocks struct {
	mu sync.Mutex
	m  map[[2]string]*interlock
}

// maxCachedInterlocks bounds the cache (it is cleared when full).
const maxCachedInterlocks = 4096

func (c *interlocks) get(device, src string) (*interlock, error) {
	k := [2]string{device, src}
	c.mu.Lock()
	defer c.mu.Unlock()
	if il, ok := c.m[k]; ok {
		return il, nil
	}
	il, err := compileInterlock(device, src, nil)
	if err != nil {
		return nil, err
	}
	if c.m == nil || len(c.m) >= maxCachedInterlocks {
		c.m = map[[2]string]*interlock{}
	}
	c.m[k] = il
	return il, nil
}
