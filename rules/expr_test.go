package rules

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/expr-lang/expr"

	"github.com/ferry-edge/ferry"
)

// exprGen generates random expressions over the points a.x, a.y (numbers),
// a.b (a bool) and a.s (a string).
type exprGen struct{ rng *rand.Rand }

func (g *exprGen) pick(xs ...string) string { return xs[g.rng.IntN(len(xs))] }

func (g *exprGen) num(d int) string {
	if d <= 0 || g.rng.IntN(3) == 0 {
		switch g.rng.IntN(5) {
		case 0:
			return fmt.Sprint(g.rng.IntN(10))
		case 1:
			return fmt.Sprintf("%.1f", g.rng.Float64()*20-10)
		case 2:
			return "a.y"
		case 3:
			return "a.b" // a type error when it is a bool
		}
		return "a.x"
	}
	switch g.rng.IntN(6) {
	case 0:
		return "-" + g.num(d-1)
	case 1:
		return fmt.Sprintf("%s(%s)", g.pick("abs", "ceil", "floor", "round"), g.num(d-1))
	case 2:
		return fmt.Sprintf("%s(%s, %s)", g.pick("min", "max"), g.num(d-1), g.num(d-1))
	case 3:
		return fmt.Sprintf("(%s ? %s : %s)", g.boolean(d-1), g.num(d-1), g.num(d-1))
	}
	// Division and powers keep away from an exact zero below: native
	// arithmetic is float64, where an integer zero can be -0 and 1/-0 is
	// -Inf, while expr's integer 0 has no sign (README: arithmetic).
	switch op := g.pick("+", "-", "*", "/", "**", "^"); op {
	case "/":
		return fmt.Sprintf("(%s / (%s + 0.25))", g.num(d-1), g.num(d-1))
	case "**", "^":
		return fmt.Sprintf("(abs(%s) %s %s)", g.num(d-1), op, g.num(d-1))
	default:
		return fmt.Sprintf("(%s %s %s)", g.num(d-1), op, g.num(d-1))
	}
}

func (g *exprGen) boolean(d int) string {
	if d <= 0 || g.rng.IntN(4) == 0 {
		return g.pick("true", "false", "a.b", "a.x") // a.x: a type error unless it holds a bool
	}
	switch g.rng.IntN(6) {
	case 0:
		return fmt.Sprintf("(%s %s %s)", g.boolean(d-1), g.pick("and", "or", "&&", "||"), g.boolean(d-1))
	case 1:
		return g.pick("not ", "!") + g.boolean(d-1)
	case 2:
		return fmt.Sprintf("(%s %s %s)", g.any(d-1), g.pick("==", "!="), g.any(d-1))
	case 3:
		return fmt.Sprintf("(%s ? %s : %s)", g.boolean(d-1), g.boolean(d-1), g.boolean(d-1))
	}
	return fmt.Sprintf("(%s %s %s)", g.num(d-1), g.pick("<", "<=", ">", ">="), g.num(d-1))
}

func (g *exprGen) any(d int) string {
	switch g.rng.IntN(4) {
	case 0:
		return g.pick(`"RUN"`, `"IDLE"`, "a.s")
	case 1:
		return g.boolean(d)
	}
	return g.num(d)
}

// value draws a point value: mostly numbers of every kind, sometimes a
// bool or a string.
func (g *exprGen) value() ferry.Value {
	switch g.rng.IntN(8) {
	case 0:
		return ferry.IntValue(int64(g.rng.IntN(21) - 10))
	case 1:
		// No uints: expr negates a uint64 by wrapping it around, native
		// arithmetic is float64 (README: "arithmetic is float64").
		return ferry.FloatValue(float64(g.rng.IntN(10)))
	case 2:
		return ferry.BoolValue(g.rng.IntN(2) == 0)
	case 3:
		return ferry.StringValue(g.pick("RUN", "IDLE"))
	case 4:
		return ferry.FloatValue(float64(g.rng.IntN(5)))
	}
	return ferry.FloatValue(g.rng.Float64()*20 - 10)
}

// TestNativeMatchesExpr holds the native compiler to expr's semantics:
// for random expressions and values, the native closure and expr's VM
// give the same answer, or both refuse (type error).
func TestNativeMatchesExpr(t *testing.T) {
	seed := uint64(42)
	if s, err := strconv.ParseUint(os.Getenv("FERRY_DIFF_SEED"), 10, 64); err == nil {
		seed = s // explore: FERRY_DIFF_SEED=n go test -run NativeMatchesExpr ./rules
	}
	g := &exprGen{rng: rand.New(rand.NewPCG(seed, seed))}
	n := 4000
	if testing.Short() {
		n = 500
	}
	var native, compared int
	for i := 0; i < n; i++ {
		src := g.boolean(4)
		p, err := parseExpr(src, nil)
		if err != nil {
			continue // expr's checker refused it (mismatched constant types)
		}
		pts := map[string]*point{}
		slot := func(dev, name string) *point {
			k := dev + "." + name
			if pts[k] == nil {
				pts[k] = &point{dev: dev, name: name, usable: true}
			}
			return pts[k]
		}
		nat, err := bindProgram(p, slot)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if nat.native == nil {
			continue
		}
		native++
		// Unoptimised: the optimiser folds `x and false` to false and so
		// skips a type error in x that the language would report.
		prog, err := expr.Compile(p.src, expr.Env(envFor(p.refs)), expr.AsBool(), expr.Optimize(false))
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		vmProg := &program{src: src, refs: nat.refs, prog: prog, env: envFor(p.refs)}
		nat.prog = prog // the native program's punts go to the same VM semantics
		for _, r := range p.refs {
			vmProg.devs = append(vmProg.devs, vmProg.env[r.Device].(map[string]any))
		}
		for j := 0; j < 8; j++ {
			for _, k := range slices.Sorted(maps.Keys(pts)) {
				pts[k].val = g.value()
			}
			v1, ok1, err1 := nat.eval()
			v2, ok2, err2 := vmProg.eval()
			// A native type error is a refusal; expr's VM does not check
			// types at run time everywhere (`true && 3` is 3), so its
			// answer there is not a reference.
			if errors.Is(err1, errType) {
				continue
			}
			if ok1 != ok2 || v1 != v2 {
				var vals []string
				for k, pt := range pts {
					vals = append(vals, fmt.Sprintf("%s=%v(%s)", k, pt.val, pt.val.Kind()))
				}
				t.Fatalf("%s with %s:\n native %v ok=%v err=%v\n expr   %v ok=%v err=%v", src, strings.Join(vals, " "), v1, ok1, err1, v2, ok2, err2)
			}
			compared++
		}
	}
	if native < n/4 || compared < n {
		t.Fatalf("only %d native expressions, %d comparisons: the generator is off", native, compared)
	}
	t.Logf("%d expressions, %d native, %d results compared", n, native, compared)
}

func TestNativeTypeErrorHoldsState(t *testing.T) {
	h := newHarness(t, []Rule{withDefaults(Rule{Name: "hot", When: "p.t > 80"})}, nil)
	h.send("p.t", ferry.FloatValue(90), good)
	if states(h.take()) != "raised" {
		t.Fatal("not raised")
	}
	h.send("p.t", ferry.StringValue("n/a"), good) // a string where a number belongs
	if got := h.take(); len(got) != 0 {
		t.Fatalf("type error changed state: %v", states(got))
	}
	h.send("p.t", ferry.IntValue(20), good)
	if states(h.take()) != "cleared" {
		t.Fatal("not cleared by an int")
	}
}

func TestRefsAndNames(t *testing.T) {
	p, err := parseExpr(`let v = env.hum; press3.oil_temp > 80 and $env["press-3"]["oil-temp"] < 9 and press3["oil_temp"] != 1 and v > 2`, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range p.refs {
		got = append(got, r.String())
	}
	if strings.Join(got, ",") != "env.hum,press3.oil_temp,press-3.oil-temp" {
		t.Fatalf("refs %v", got)
	}
	for src, want := range map[string]string{
		`$env > 1`:          `$env must be used as $env["device"]["point"]`,
		`press3 > 1`:        `"press3" is not a point`,
		`press3.a.b > 1`:    `"press3.a" is a point; it has no member "b"`,
		`press3.oil_temp ?`: `unexpected token`,
	} {
		_, err := parseExpr(src, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", src, err, want)
		}
	}
}
