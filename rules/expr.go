package rules

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	exprconf "github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"

	"github.com/ferry-edge/ferry"
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
func parseExpr(src string, known map[string]bool) (*parsed, error) {
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
	if f.err != nil {
		f.err.src = src
		return nil, f.err
	}
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
		if known != nil && !known[r.String()] {
			return nil, &exprError{src: src, at: r.at, msg: fmt.Sprintf("unknown point %q%s", r.String(), suggestPoint(r.String(), known))}
		}
	}
	if _, err := compileExpr(p); err != nil {
		return nil, err
	}
	// A condition must be a bool. expr cannot tell for untyped points
	// (`press3.oil_temp + 1` passes its checker), the native compiler can.
	dummy, bad, punt := &point{}, false, false
	nc := &nativeCompiler{slot: func(ref) *point { return dummy }, bad: &bad, punt: &punt}
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
	err    *exprError
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
		} else if inner, isMember := n.Node.(*ast.MemberNode); isMember && f.err == nil {
			if r, _, ok := refOf(inner); ok {
				f.err = &exprError{at: r.at, msg: fmt.Sprintf("%q is a point; it has no member %s", r.String(), n.Property)}
			}
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
//
// Native programs follow expr's semantics: numbers compare and add as
// numbers whatever their kind (arithmetic is float64), == between values
// of different types is false, and a point used where its value's type
// does not fit (a string in arithmetic, a number after `not`) is an error:
// the rule is not evaluated and ferry_rules_errors_total counts it.
type program struct {
	src    string
	refs   []*point
	native func() bool
	bad    bool // set by native closures on a type error
	punt   bool // set by native closures for a case only expr's VM handles

	// expr fallback
	prog *vm.Program
	vm   vm.VM
	env  map[string]any
	devs []map[string]any // env[refs[i].Device], parallel to refs
}

// errNotNative is returned by the native compiler for what it leaves to
// expr.
var errNotNative = errors.New("not native")

// errType is the run-time error of a native program.
var errType = errors.New("a point's value has the wrong type for the expression")

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
	nc := &nativeCompiler{slot: func(r ref) *point { return byRef[r.String()] }, bad: &pg.bad, punt: &pg.punt}
	if t, err := nc.compile(p.tree.Node); err == nil {
		if b, err := nc.asBool(t); err == nil {
			pg.native = b
		}
	}
	// The VM program is kept for native programs too: a closure may punt
	// a rare case to it (two strings joined with +).
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
// the expression failed at run time (err says why).
func (pg *program) eval() (v, ok bool, err error) {
	for _, p := range pg.refs {
		if !p.usable {
			return false, false, nil
		}
	}
	if pg.native != nil {
		pg.bad, pg.punt = false, false
		v = pg.native()
		switch {
		case pg.punt:
			// fall through to the VM
		case pg.bad:
			return false, false, errType
		default:
			return v, true, nil
		}
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

// numOf returns v as a number when it is one (not a bool or string).
func numOf(v ferry.Value) (float64, bool) {
	switch v.Kind() {
	case ferry.KindFloat, ferry.KindInt, ferry.KindUint:
		f, _ := v.Number()
		return f, true
	}
	return 0, false
}

// valuesEqual is expr's == on two point values: numbers by value, bools
// and strings by value, different types never equal.
func valuesEqual(a, b ferry.Value) bool {
	if x, ok := numOf(a); ok {
		y, ok := numOf(b)
		return ok && x == y
	}
	if a.Kind() != b.Kind() {
		return false
	}
	switch a.Kind() {
	case ferry.KindBool:
		return a.Bool() == b.Bool()
	case ferry.KindString:
		return a.Str() == b.Str()
	}
	return false
}

// typ is the static type of a native node. A point is tDyn: its value's
// kind is only known at run time.
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
	pt  *point   // tDyn
	k   *float64 // a numeric constant
	ks  *string  // a string constant
	kb  *bool    // a bool constant
}

type nativeCompiler struct {
	slot func(ref) *point
	bad  *bool
	punt *bool
}

// asNum reads x as a number; a point holding anything else is a type
// error.
func (c *nativeCompiler) asNum(x typed) (func() float64, error) {
	switch x.t {
	case tNum:
		return x.num, nil
	case tDyn:
		p, bad := x.pt, c.bad
		return func() float64 {
			if f, ok := numOf(p.val); ok {
				return f
			}
			*bad = true
			return math.NaN()
		}, nil
	}
	return nil, errNotNative
}

// asBool reads x as a bool; a point holding anything else is a type
// error.
func (c *nativeCompiler) asBool(x typed) (func() bool, error) {
	switch x.t {
	case tBool:
		return x.b, nil
	case tDyn:
		p, bad := x.pt, c.bad
		return func() bool {
			if p.val.Kind() == ferry.KindBool {
				return p.val.Bool()
			}
			*bad = true
			return false
		}, nil
	}
	return nil, errNotNative
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
		return typed{t: tStr, ks: &v}, nil
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
		if i, ok := n.Node.(*ast.IntegerNode); ok && n.Operator == "-" {
			return constNum(float64(-i.Value)), nil // integer: -0 is 0, not -0.0
		}
		x, err := c.compile(n.Node)
		if err != nil {
			return typed{}, err
		}
		switch n.Operator {
		case "-", "+":
			f, err := c.asNum(x)
			if err != nil {
				return typed{}, err
			}
			if n.Operator == "+" {
				return typed{t: tNum, num: f}, nil
			}
			return typed{t: tNum, num: func() float64 { return -f() }}, nil
		case "!", "not":
			b, err := c.asBool(x)
			if err != nil {
				return typed{}, err
			}
			return typed{t: tBool, b: func() bool { return !b() }}, nil
		}
	case *ast.BinaryNode:
		return c.binary(n)
	case *ast.ConditionalNode:
		return c.conditional(n)
	case *ast.BuiltinNode:
		return c.builtin(n)
	}
	return typed{}, errNotNative
}

func (c *nativeCompiler) conditional(n *ast.ConditionalNode) (typed, error) {
	cond, err := c.compile(n.Cond)
	if err != nil {
		return typed{}, err
	}
	cb, err := c.asBool(cond)
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
	// Only branches of one static type: a point's value in a branch
	// keeps its own type in expr (`c ? 1 : p.b` may be a bool), which
	// the fallback handles.
	switch {
	case a.t == tBool && b.t == tBool:
		fa, fb := a.b, b.b
		return typed{t: tBool, b: func() bool {
			if cb() {
				return fa()
			}
			return fb()
		}}, nil
	case a.t == tNum && b.t == tNum:
		fa, fb := a.num, b.num
		return typed{t: tNum, num: func() float64 {
			if cb() {
				return fa()
			}
			return fb()
		}}, nil
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
		if args[i], err = c.asNum(x); err != nil {
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
		return one(func(x float64) float64 { // as expr's: abs(-0.0) is -0.0
			if x < 0 {
				return -x
			}
			return x
		})
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
		a, err1 := c.asBool(l)
		b, err2 := c.asBool(r)
		if err1 != nil || err2 != nil {
			return typed{}, errNotNative
		}
		if n.Operator == "and" || n.Operator == "&&" {
			return typed{t: tBool, b: func() bool { return a() && b() }}, nil
		}
		return typed{t: tBool, b: func() bool { return a() || b() }}, nil
	case "+", "-", "*", "/", "**", "^":
		// % is left to expr: it is defined on integers only.
		a, err1 := c.asNum(l)
		b, err2 := c.asNum(r)
		if err1 != nil || err2 != nil {
			return typed{}, errNotNative
		}
		var f func() float64
		switch n.Operator {
		case "+":
			if l.t == tDyn && r.t == tDyn {
				// Two strings concatenate in expr: punt that to the VM.
				p, q, bad, punt := l.pt, r.pt, c.bad, c.punt
				f = func() float64 {
					x, ok1 := numOf(p.val)
					y, ok2 := numOf(q.val)
					switch {
					case ok1 && ok2:
						return x + y
					case p.val.Kind() == ferry.KindString && q.val.Kind() == ferry.KindString:
						*punt = true
					default:
						*bad = true
					}
					return math.NaN()
				}
				break
			}
			f = func() float64 { return a() + b() }
		case "-":
			f = func() float64 { return a() - b() }
		case "*":
			f = func() float64 { return a() * b() }
		case "/":
			f = func() float64 { return a() / b() }
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
		if l.t == tStr || r.t == tStr || l.t == tBool || r.t == tBool {
			return typed{}, errNotNative // string ordering or a type error: expr decides
		}
		return c.compare(n.Operator, l, r)
	}
	return typed{}, errNotNative
}

// equal compiles l == r with expr's semantics: values of different types
// are not equal (no error).
func (c *nativeCompiler) equal(l, r typed) (func() bool, error) {
	if r.t == tDyn && l.t != tDyn {
		l, r = r, l
	}
	switch {
	case l.t == tDyn && r.t == tDyn:
		a, b := l.pt, r.pt
		return func() bool { return valuesEqual(a.val, b.val) }, nil
	case l.t == tDyn && r.t == tStr:
		p, k := l.pt, *r.ks
		return func() bool { return p.val.Kind() == ferry.KindString && p.val.Str() == k }, nil
	case l.t == tDyn && r.t == tBool:
		p, b := l.pt, r.b
		// Both sides are evaluated, as expr does: a type error on the
		// right is an error even when the left is of another type.
		return func() bool { k := b(); return p.val.Kind() == ferry.KindBool && p.val.Bool() == k }, nil
	case l.t == tDyn && r.t == tNum:
		p, f := l.pt, r.num
		return func() bool { k := f(); x, ok := numOf(p.val); return ok && x == k }, nil
	case l.t == tStr && r.t == tStr:
		eq := *l.ks == *r.ks
		return func() bool { return eq }, nil
	case l.t == tBool && r.t == tBool:
		a, b := l.b, r.b
		return func() bool { return a() == b() }, nil
	case l.t == tNum && r.t == tNum:
		a, b := l.num, r.num
		return func() bool { return a() == b() }, nil
	}
	return nil, errNotNative // mixed constant types: expr decides
}

// compare compiles a numeric comparison. A point against a constant (the
// common `press3.oil_temp > 80`) becomes one closure.
func (c *nativeCompiler) compare(op string, l, r typed) (typed, error) {
	if l.t == tDyn && r.k != nil {
		return typed{t: tBool, b: cmpPointConst(op, l.pt, *r.k, c.bad)}, nil
	}
	if r.t == tDyn && l.k != nil {
		return typed{t: tBool, b: cmpPointConst(flip(op), r.pt, *l.k, c.bad)}, nil
	}
	if l.t == tDyn && r.t == tDyn {
		return typed{t: tBool, b: cmpPoints(op, l.pt, r.pt, c.bad)}, nil
	}
	a, err1 := c.asNum(l)
	b, err2 := c.asNum(r)
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
	default:
		f = func() bool { return a() >= b() }
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

// cmpPointConst compares a point with a constant; a point that holds no
// number is a type error.
func cmpPointConst(op string, p *point, k float64, bad *bool) func() bool {
	switch op {
	case "<":
		return func() bool {
			if f, ok := numOf(p.val); ok {
				return f < k
			}
			*bad = true
			return false
		}
	case "<=":
		return func() bool {
			if f, ok := numOf(p.val); ok {
				return f <= k
			}
			*bad = true
			return false
		}
	case ">":
		return func() bool {
			if f, ok := numOf(p.val); ok {
				return f > k
			}
			*bad = true
			return false
		}
	}
	return func() bool {
		if f, ok := numOf(p.val); ok {
			return f >= k
		}
		*bad = true
		return false
	}
}

// cmpPoints orders two point values as expr does: numbers by value,
// strings lexically, anything else is a type error.
func cmpPoints(op string, p, q *point, bad *bool) func() bool {
	return func() bool {
		var c int
		if x, ok := numOf(p.val); ok {
			y, ok := numOf(q.val)
			if !ok {
				*bad = true
				return false
			}
			switch {
			case x < y:
				c = -1
			case x > y:
				c = 1
			case x != y: // NaN
				return false
			}
		} else if p.val.Kind() == ferry.KindString && q.val.Kind() == ferry.KindString {
			c = strings.Compare(p.val.Str(), q.val.Str())
		} else {
			*bad = true
			return false
		}
		switch op {
		case "<":
			return c < 0
		case "<=":
			return c <= 0
		case ">":
			return c > 0
		}
		return c >= 0
	}
}
