package rules

import (
	"errors"
	"fmt"
	"math"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	exprconf "github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// maxExprLen bounds one expression; a real rule is a line.
const maxExprLen = 16 << 10

// ref is one device.point an expression reads.
type ref struct {
	Device, Point string
	at            int // rune offset of the first use, for errors
}

func (r ref) String() string { return r.Device + "." + r.Point }

// parsed is an expression that parsed, with every point it reads.
type parsed struct {
	src  string
	tree *parser.Tree
	refs []ref
}

// exprError is a problem with an expression, at a rune offset.
type exprError struct {
	src string
	at  int // rune offset, -1 if unknown
	msg string
}

func (e *exprError) Error() string {
	src := e.src
	if r := []rune(src); len(r) > 80 {
		src = string(r[:77]) + "..."
	}
	if e.at < 0 {
		return fmt.Sprintf("%s in %q", e.msg, src)
	}
	return fmt.Sprintf("%s at column %d of %q", e.msg, e.at+1, src)
}

// fromExprErr turns an expr error into an exprError with its column.
func fromExprErr(src string, err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		return &exprError{src: src, at: fe.From, msg: fe.Message}
	}
	return &exprError{src: src, at: -1, msg: err.Error()}
}

// parseExpr parses src, finds the points it reads and checks them with
// known (nil accepts any), then compiles it with expr to check types and
// builtins. A point is written device.point, device["point"] or
// $env["device"]["point"] (for names expr cannot spell: "press-3").
func parseExpr(src string, known func(string) bool) (*parsed, error) {
	if len(src) > maxExprLen {
		return nil, fmt.Errorf("expression is longer than %d bytes", maxExprLen)
	}
	cfg := exprconf.CreateNew()
	tree, err := parser.ParseWithConfig(src, cfg)
	if err != nil {
		return nil, fromExprErr(src, err)
	}
	p := &parsed{src: src, tree: tree}
	f := &refFinder{bases: map[*ast.IdentifierNode]bool{}, vars: map[string]bool{}}
	ast.Walk(&tree.Node, f)
	idx := map[string]bool{}
	for _, r := range f.refs {
		if !idx[r.String()] {
			idx[r.String()] = true
			p.refs = append(p.refs, r)
		}
	}
	for _, id := range f.idents {
		if f.bases[id] || f.vars[id.Value] {
			continue
		}
		if id.Value == "$env" {
			return nil, &exprError{src: src, at: id.Location().From, msg: `$env must be used as $env["device"]["point"]`}
		}
		return nil, &exprError{src: src, at: id.Location().From, msg: fmt.Sprintf("%q is not a point (write device.point)", id.Value)}
	}
	for _, r := range p.refs {
		if known != nil && !known(r.String()) {
			return nil, &exprError{src: src, at: r.at, msg: fmt.Sprintf("unknown point %q", r.String())}
		}
	}
	if _, err := compileExpr(p); err != nil {
		return nil, err
	}
	// A condition must be a bool. expr cannot tell for untyped points
	// (`press3.oil_temp + 1` passes its checker), the native compiler can.
	dummy := &point{}
	nc := &nativeCompiler{slot: func(ref) *point { return dummy }}
	if t, err := nc.compile(tree.Node); err == nil && (t.t == tNum || t.t == tStr) {
		what := "a number"
		if t.t == tStr {
			what = "a string"
		}
		return nil, &exprError{src: src, at: -1, msg: "is " + what + ", not a condition (compare it, e.g. > 80)"}
	}
	return p, nil
}

// refFinder collects the point references and identifiers of a tree.
type refFinder struct {
	refs   []ref
	idents []*ast.IdentifierNode
	bases  map[*ast.IdentifierNode]bool // identifiers that are part of a ref
	vars   map[string]bool              // let-declared names
}

func (f *refFinder) Visit(n *ast.Node) {
	switch n := (*n).(type) {
	case *ast.IdentifierNode:
		f.idents = append(f.idents, n)
	case *ast.VariableDeclaratorNode:
		f.vars[n.Name] = true
	case *ast.MemberNode:
		if r, base, ok := refOf(n); ok {
			f.refs = append(f.refs, r)
			f.bases[base] = true
		}
	}
}

// refOf reports whether n is a point reference: dev.pt, dev["pt"],
// $env["dev"].pt or $env["dev"]["pt"].
func refOf(n *ast.MemberNode) (ref, *ast.IdentifierNode, bool) {
	pt, ok := n.Property.(*ast.StringNode)
	if !ok || pt.Value == "" {
		return ref{}, nil, false
	}
	switch d := n.Node.(type) {
	case *ast.IdentifierNode:
		if d.Value == "$env" {
			return ref{}, nil, false
		}
		return ref{Device: d.Value, Point: pt.Value, at: d.Location().From}, d, true
	case *ast.MemberNode:
		env, ok := d.Node.(*ast.IdentifierNode)
		dev, ok2 := d.Property.(*ast.StringNode)
		if ok && ok2 && env.Value == "$env" && dev.Value != "" {
			return ref{Device: dev.Value, Point: pt.Value, at: env.Location().From}, env, true
		}
	}
	return ref{}, nil, false
}

// compileExpr compiles p with expr against an environment holding its
// points, so that expr's checker sees every name. The result must be a
// bool at run time.
func compileExpr(p *parsed) (*vm.Program, error) {
	prog, err := expr.Compile(p.src, expr.Env(envFor(p.refs)), expr.AsBool())
	if err != nil {
		return nil, fromExprErr(p.src, err)
	}
	return prog, nil
}

// envFor returns an expr environment with every ref set to nil.
func envFor(refs []ref) map[string]any {
	env := map[string]any{}
	for _, r := range refs {
		m, _ := env[r.Device].(map[string]any)
		if m == nil {
			m = map[string]any{}
			env[r.Device] = m
		}
		m[r.Point] = nil
	}
	return env
}

// program is a compiled condition. Native programs are trees of Go
// closures over the engine's point slots: they do not allocate. Anything
// the native compiler does not cover runs on expr's VM, which allocates
// (boxing each point value into its environment).
type program struct {
	src    string
	refs   []*point
	native func() bool

	// expr fallback
	prog *vm.Program
	vm   vm.VM
	env  map[string]any
	devs []map[string]any // env[refs[i].Device], parallel to refs
}

// errNotNative is returned by the native compiler for what it leaves to
// expr.
var errNotNative = errors.New("not native")

// bindProgram binds p to the points given by slot and compiles it:
// natively when it can, else for expr's VM.
func bindProgram(p *parsed, slot func(dev, pt string) *point) (*program, error) {
	pg := &program{src: p.src}
	byRef := map[string]*point{}
	for _, r := range p.refs {
		pt := slot(r.Device, r.Point)
		pg.refs = append(pg.refs, pt)
		byRef[r.String()] = pt
	}
	nc := &nativeCompiler{slot: func(r ref) *point { return byRef[r.String()] }}
	if t, err := nc.compile(p.tree.Node); err == nil {
		if b, err := t.asBool(); err == nil {
			pg.native = b
			return pg, nil
		}
	}
	prog, err := compileExpr(p)
	if err != nil {
		return nil, err
	}
	pg.prog = prog
	pg.env = envFor(p.refs)
	for _, r := range p.refs {
		pg.devs = append(pg.devs, pg.env[r.Device].(map[string]any))
	}
	return pg, nil
}

// eval runs the program. ok is false when a point has no usable value or
// expr failed at run time (err says why).
func (pg *program) eval() (v, ok bool, err error) {
	for _, p := range pg.refs {
		if !p.usable {
			return false, false, nil
		}
	}
	if pg.native != nil {
		return pg.native(), true, nil
	}
	for i, p := range pg.refs {
		pg.devs[i][p.name] = p.val.Any()
	}
	out, err := pg.vm.Run(pg.prog, pg.env)
	if err != nil {
		return false, false, err
	}
	b, isBool := out.(bool)
	if !isBool {
		return false, false, fmt.Errorf("result is %T, not a bool", out)
	}
	return b, true, nil
}

// typ is the static type of a native node. A point is tDyn: its use
// decides whether it is read as a number, a bool or a string.
type typ uint8

const (
	tNum typ = iota
	tBool
	tStr
	tDyn
)

type typed struct {
	t   typ
	num func() float64
	b   func() bool
	s   func() string
	pt  *point   // tDyn
	k   *float64 // a numeric constant (for specialisation)
	ks  *string  // a string constant
	kb  *bool    // a bool constant
}

func (x typed) asNum() (func() float64, error) {
	switch x.t {
	case tNum:
		return x.num, nil
	case tDyn:
		p := x.pt
		return func() float64 {
			if f, ok := p.val.Number(); ok {
				return f
			}
			return math.NaN()
		}, nil
	}
	return nil, errNotNative
}

func (x typed) asBool() (func() bool, error) {
	switch x.t {
	case tBool:
		return x.b, nil
	case tDyn:
		p := x.pt
		return func() bool { return p.val.Bool() }, nil
	}
	return nil, errNotNative
}

func (x typed) asStr() (func() string, error) {
	switch x.t {
	case tStr:
		return x.s, nil
	case tDyn:
		p := x.pt
		return func() string { return p.val.Str() }, nil
	}
	return nil, errNotNative
}

type nativeCompiler struct {
	slot func(ref) *point
}

func constNum(f float64) typed {
	return typed{t: tNum, num: func() float64 { return f }, k: &f}
}

func (c *nativeCompiler) compile(n ast.Node) (typed, error) {
	switch n := n.(type) {
	case *ast.IntegerNode:
		return constNum(float64(n.Value)), nil
	case *ast.FloatNode:
		return constNum(n.Value), nil
	case *ast.BoolNode:
		v := n.Value
		return typed{t: tBool, b: func() bool { return v }, kb: &v}, nil
	case *ast.StringNode:
		v := n.Value
		return typed{t: tStr, s: func() string { return v }, ks: &v}, nil
	case *ast.MemberNode:
		r, _, ok := refOf(n)
		if !ok {
			return typed{}, errNotNative
		}
		p := c.slot(r)
		if p == nil {
			return typed{}, errNotNative
		}
		return typed{t: tDyn, pt: p}, nil
	case *ast.UnaryNode:
		x, err := c.compile(n.Node)
		if err != nil {
			return typed{}, err
		}
		switch n.Operator {
		case "-":
			f, err := x.asNum()
			if err != nil {
				return typed{}, err
			}
			return typed{t: tNum, num: func() float64 { return -f() }}, nil
		case "+":
			f, err := x.asNum()
			if err != nil {
				return typed{}, err
			}
			return typed{t: tNum, num: f}, nil
		case "!", "not":
			b, err := x.asBool()
			if err != nil {
				return typed{}, err
			}
			return typed{t: tBool, b: func() bool { return !b() }}, nil
		}
	case *ast.BinaryNode:
		return c.binary(n)
	case *ast.ConditionalNode:
		cond, err := c.compile(n.Cond)
		if err != nil {
			return typed{}, err
		}
		cb, err := cond.asBool()
		if err != nil {
			return typed{}, err
		}
		a, err := c.compile(n.Exp1)
		if err != nil {
			return typed{}, err
		}
		b, err := c.compile(n.Exp2)
		if err != nil {
			return typed{}, err
		}
		if a.t == tBool || b.t == tBool {
			fa, err1 := a.asBool()
			fb, err2 := b.asBool()
			if err1 != nil || err2 != nil {
				return typed{}, errNotNative
			}
			return typed{t: tBool, b: func() bool {
				if cb() {
					return fa()
				}
				return fb()
			}}, nil
		}
		fa, err1 := a.asNum()
		fb, err2 := b.asNum()
		if err1 != nil || err2 != nil {
			return typed{}, errNotNative
		}
		return typed{t: tNum, num: func() float64 {
			if cb() {
				return fa()
			}
			return fb()
		}}, nil
	case *ast.BuiltinNode:
		return c.builtin(n)
	}
	return typed{}, errNotNative
}

func (c *nativeCompiler) builtin(n *ast.BuiltinNode) (typed, error) {
	args := make([]func() float64, len(n.Arguments))
	for i, a := range n.Arguments {
		x, err := c.compile(a)
		if err != nil {
			return typed{}, err
		}
		if args[i], err = x.asNum(); err != nil {
			return typed{}, err
		}
	}
	one := func(fn func(float64) float64) (typed, error) {
		if len(args) != 1 {
			return typed{}, errNotNative
		}
		a := args[0]
		return typed{t: tNum, num: func() float64 { return fn(a()) }}, nil
	}
	switch n.Name {
	case "abs":
		return one(math.Abs)
	case "ceil":
		return one(math.Ceil)
	case "floor":
		return one(math.Floor)
	case "round":
		return one(math.Round)
	case "min", "max":
		if len(args) < 1 {
			return typed{}, errNotNative
		}
		isMax := n.Name == "max"
		return typed{t: tNum, num: func() float64 {
			m := args[0]()
			for _, a := range args[1:] {
				v := a()
				if isMax && v > m || !isMax && v < m {
					m = v
				}
			}
			return m
		}}, nil
	}
	return typed{}, errNotNative
}

func (c *nativeCompiler) binary(n *ast.BinaryNode) (typed, error) {
	l, err := c.compile(n.Left)
	if err != nil {
		return typed{}, err
	}
	r, err := c.compile(n.Right)
	if err != nil {
		return typed{}, err
	}
	switch n.Operator {
	case "and", "&&", "or", "||":
		a, err1 := l.asBool()
		b, err2 := r.asBool()
		if err1 != nil || err2 != nil {
			return typed{}, errNotNative
		}
		if n.Operator == "and" || n.Operator == "&&" {
			return typed{t: tBool, b: func() bool { return a() && b() }}, nil
		}
		return typed{t: tBool, b: func() bool { return a() || b() }}, nil
	case "+", "-", "*", "/", "%", "**", "^":
		a, err1 := l.asNum()
		b, err2 := r.asNum()
		if err1 != nil || err2 != nil {
			return typed{}, errNotNative
		}
		var f func() float64
		switch n.Operator {
		case "+":
			f = func() float64 { return a() + b() }
		case "-":
			f = func() float64 { return a() - b() }
		case "*":
			f = func() float64 { return a() * b() }
		case "/":
			f = func() float64 { return a() / b() }
		case "%":
			f = func() float64 { return math.Mod(a(), b()) }
		default:
			f = func() float64 { return math.Pow(a(), b()) }
		}
		return typed{t: tNum, num: f}, nil
	case "==", "!=":
		b, err := c.equal(l, r)
		if err != nil {
			return typed{}, err
		}
		if n.Operator == "!=" {
			eq := b
			b = func() bool { return !eq() }
		}
		return typed{t: tBool, b: b}, nil
	case "<", "<=", ">", ">=":
		if l.t == tStr || r.t == tStr {
			return typed{}, errNotNative // string ordering: leave to expr
		}
		return c.compare(n.Operator, l, r)
	}
	return typed{}, errNotNative
}

// equal compiles l == r. A string on either side compares strings, a
// bool compares bools, two points compare their values, anything else
// compares numbers.
func (c *nativeCompiler) equal(l, r typed) (func() bool, error) {
	switch {
	case l.t == tStr || r.t == tStr:
		a, err1 := l.asStr()
		b, err2 := r.asStr()
		if err1 != nil || err2 != nil {
			return nil, errNotNative
		}
		if l.t == tDyn && r.ks != nil {
			p, k := l.pt, *r.ks
			return func() bool { return p.val.Str() == k }, nil
		}
		return func() bool { return a() == b() }, nil
	case l.t == tBool || r.t == tBool:
		a, err1 := l.asBool()
		b, err2 := r.asBool()
		if err1 != nil || err2 != nil {
			return nil, errNotNative
		}
		return func() bool { return a() == b() }, nil
	case l.t == tDyn && r.t == tDyn:
		a, b := l.pt, r.pt
		return func() bool {
			x, ok1 := a.val.Number()
			y, ok2 := b.val.Number()
			if ok1 && ok2 {
				return x == y
			}
			return a.val.Equal(b.val)
		}, nil
	}
	cmp, err := c.compare("==", l, r)
	if err != nil {
		return nil, err
	}
	return cmp.b, nil
}

// compare compiles a numeric comparison. A point against a constant (the
// common `press3.oil_temp > 80`) becomes one closure.
func (c *nativeCompiler) compare(op string, l, r typed) (typed, error) {
	if l.t == tDyn && r.k != nil {
		return typed{t: tBool, b: cmpPointConst(op, l.pt, *r.k)}, nil
	}
	if r.t == tDyn && l.k != nil {
		return typed{t: tBool, b: cmpPointConst(flip(op), r.pt, *l.k)}, nil
	}
	a, err1 := l.asNum()
	b, err2 := r.asNum()
	if err1 != nil || err2 != nil {
		return typed{}, errNotNative
	}
	var f func() bool
	switch op {
	case "<":
		f = func() bool { return a() < b() }
	case "<=":
		f = func() bool { return a() <= b() }
	case ">":
		f = func() bool { return a() > b() }
	case ">=":
		f = func() bool { return a() >= b() }
	default:
		f = func() bool { return a() == b() }
	}
	return typed{t: tBool, b: f}, nil
}

// flip mirrors a comparison: k < p is p > k.
func flip(op string) string {
	switch op {
	case "<":
		return ">"
	case "<=":
		return ">="
	case ">":
		return "<"
	case ">=":
		return "<="
	}
	return op
}

// cmpPointConst compares a point with a constant. A point that holds no
// number compares false (like NaN).
func cmpPointConst(op string, p *point, k float64) func() bool {
	switch op {
	case "<":
		return func() bool { f, ok := p.val.Number(); return ok && f < k }
	case "<=":
		return func() bool { f, ok := p.val.Number(); return ok && f <= k }
	case ">":
		return func() bool { f, ok := p.val.Number(); return ok && f > k }
	case ">=":
		return func() bool { f, ok := p.val.Number(); return ok && f >= k }
	}
	return func() bool { f, ok := p.val.Number(); return ok && f == k }
}
