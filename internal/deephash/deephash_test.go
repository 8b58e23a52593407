package deephash

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"testing"
	"time"
	"unsafe"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/drivers/modbus"
	"github.com/ferry-edge/ferry/drivers/mqtt"
	"github.com/ferry-edge/ferry/drivers/opcua"
)

// kitchen has a field of every kind the digest walks, exported or not.
type kitchen struct {
	B        bool
	I        int
	i8       int8
	U16      uint16
	u64      uint64
	F32      float32
	F        float64
	C        complex128
	S        string
	D        time.Duration
	Bit      *uint8
	Write    *ferry.WriteSpec
	Arr      [2]string
	Sl       []int
	bytes    []byte
	Nested   []inner
	M        map[string]*inner
	mk       map[[2]int]string
	Any      any
	Anys     []any
	PP       **int
	Err      error
	unexpInt inner
}

type inner struct {
	Name  string
	Scale float64
	Tags  map[string]string
	p     *int
}

// TestPropertyOneFieldAtATime fills each spec type with a value in every
// field reachable (every pointer set, two elements in every slice and
// map), then changes one field, element or key at a time in every way its
// kind allows — including ways that leave it deeply equal (a pointer to
// an equal value, a map rebuilt, a value set to itself) — and checks, for
// every two of the variants of one site (the original among them), that
// their digests are equal exactly when reflect.DeepEqual says the values
// are: so nil and empty slices and maps, nil and zero pointers, +0 and -0
// are compared at every depth.
func TestPropertyOneFieldAtATime(t *testing.T) {
	for _, typ := range []reflect.Type{
		reflect.TypeFor[modbus.Device](),
		reflect.TypeFor[opcua.Device](),
		reflect.TypeFor[mqtt.Device](),
		reflect.TypeFor[kitchen](),
		reflect.TypeFor[[]modbus.Device](),
	} {
		t.Run(typ.String(), func(t *testing.T) {
			orig := reflect.New(typ).Elem()
			fill(orig, &filler{})
			other := reflect.New(typ).Elem()
			fill(other, &filler{})
			if Of(orig.Interface()) != Of(other.Interface()) {
				t.Fatal("two values filled alike (with pointers of their own) digest apart")
			}
			sites := count(orig)
			var pairs, equal int
			for site := range sites {
				type variant struct {
					name string
					v    any
				}
				vars := []variant{{"the original", orig.Interface()}}
				for _, m := range mutations {
					c := deepCopy(orig)
					name := ""
					at(c, site, func(v reflect.Value) {
						if m.applies(v) {
							name = m.name + " " + v.Type().String()
							m.do(v)
						}
					})
					if name != "" {
						vars = append(vars, variant{name, c.Interface()})
					}
				}
				for i := range vars {
					for j := i + 1; j < len(vars); j++ {
						a, b := vars[i], vars[j]
						deep := reflect.DeepEqual(a.v, b.v)
						if same := Of(a.v) == Of(b.v); same != deep {
							t.Errorf("site %d: %s and %s: digests equal %v, DeepEqual %v", site, a.name, b.name, same, deep)
						}
						pairs++
						if deep {
							equal++
						}
					}
				}
			}
			t.Logf("%d sites, %d pairs of variants checked, %d of them deeply equal", sites, pairs, equal)
			if pairs < sites || equal == 0 || equal == pairs {
				t.Fatalf("the walk checked too little: %d sites, %d pairs, %d equal", sites, pairs, equal)
			}
		})
	}
}

// TestEqualsDeepEqual checks chosen pairs, each with what DeepEqual says.
func TestEqualsDeepEqual(t *testing.T) {
	one, one2 := 1, 1
	ch := make(chan int)
	type named int
	cases := []struct {
		name string
		a, b any
	}{
		{"nil and nil", nil, nil},
		{"nil and a typed nil", nil, (*int)(nil)},
		{"int and int64", 1, int64(1)},
		{"int and a named int", 1, named(1)},
		{"nil and empty slice", []int(nil), []int{}},
		{"empty slices", []int{}, make([]int, 0, 5)},
		{"nil and empty map", map[string]int(nil), map[string]int{}},
		{"maps built in other orders", map[string]int{"a": 1, "b": 2, "c": 3}, map[string]int{"c": 3, "b": 2, "a": 1}},
		{"maps with swapped values", map[string]int{"a": 1, "b": 2}, map[string]int{"a": 2, "b": 1}},
		{"pointers to equal ints", &one, &one2},
		{"-0 and +0", math.Copysign(0, -1), 0.0},
		{"interfaces of other types", []any{1}, []any{uint(1)}},
		{"strings split elsewhere", []string{"ab", "c"}, []string{"a", "bc"}},
		{"the same chan", ch, ch},
		{"two chans", ch, make(chan int)},
		{"nil funcs", (func())(nil), (func())(nil)},
		{"a func and itself", t.Fail, t.Fail},
		{"struct with an unexported difference", inner{p: &one}, inner{p: nil}},
		{"durations", time.Second, time.Second + 1},
		{"arrays", [2]int{1, 2}, [2]int{2, 1}},
		{"unexported int8", kitchen{i8: 1}, kitchen{i8: 2}},
		{"unexported uint64", kitchen{u64: 1}, kitchen{u64: 1}},
		{"unexported bytes", kitchen{bytes: []byte("ab")}, kitchen{bytes: []byte("ab")}},
		{"unexported map with array keys", kitchen{mk: map[[2]int]string{{1, 2}: "a"}}, kitchen{mk: map[[2]int]string{{2, 1}: "a"}}},
		{"unexported struct", kitchen{unexpInt: inner{Name: "a"}}, kitchen{unexpInt: inner{Name: "b"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			deep := reflect.DeepEqual(c.a, c.b)
			if same := Of(c.a) == Of(c.b); same != deep {
				t.Errorf("digests equal %v, DeepEqual %v", same, deep)
			}
		})
	}
}

// TestNaN: a NaN digests equal to itself (the documented exception).
func TestNaN(t *testing.T) {
	a := inner{Name: "x", Scale: math.NaN()}
	b := inner{Name: "x", Scale: math.NaN()}
	if reflect.DeepEqual(a, b) {
		t.Fatal("DeepEqual holds NaN equal: the exception is gone, drop it from the package comment")
	}
	if Of(a) != Of(b) {
		t.Error("a NaN field digests apart from an equal NaN: a needless restart on every reload")
	}
	if Of(a) == Of(inner{Name: "x", Scale: 1}) {
		t.Error("NaN digests as 1")
	}
}

type node struct {
	V    int
	Next *node
}

// TestCycles: a cyclic value is digested (no endless walk), equal to one
// of the same shape and apart from one of another.
func TestCycles(t *testing.T) {
	ring := func(vals ...int) *node {
		first := &node{V: vals[0]}
		n := first
		for _, v := range vals[1:] {
			n.Next = &node{V: v}
			n = n.Next
		}
		n.Next = first
		return first
	}
	a, b := ring(1, 2, 3), ring(1, 2, 3)
	if !reflect.DeepEqual(a, b) || Of(a) != Of(b) {
		t.Error("equal rings digest apart")
	}
	if c := ring(1, 2, 4); reflect.DeepEqual(a, c) || Of(a) == Of(c) {
		t.Error("different rings digest alike")
	}
	s := []any{1, nil}
	s[1] = s
	if Of(s) == Of([]any{1, nil}) {
		t.Error("a slice holding itself digests as one holding nil")
	}
	m := map[string]any{"a": 1}
	m["self"] = m
	if d1, d2 := Of(m), Of(m); d1 != d2 {
		t.Error("a map holding itself digests apart from itself")
	}
}

// TestFuncsNeverEqual: DeepEqual holds a non-nil func equal to nothing.
func TestFuncsNeverEqual(t *testing.T) {
	type withFunc struct{ F func() }
	v := withFunc{F: func() {}}
	if d1, d2 := Of(v), Of(v); reflect.DeepEqual(v, v) || d1 == d2 {
		t.Error("a value holding a func digests equal to itself")
	}
	if d1, d2 := Of(withFunc{}), Of(withFunc{}); d1 != d2 {
		t.Error("nil funcs digest apart")
	}
}

// filler fills values with distinct numbers and strings, so that changing
// one leaves every other as it was.
type filler struct{ n int }

func (f *filler) next() int { f.n++; return f.n }

// fill sets every field reachable from v (settable) to a non-zero value:
// pointers point, slices and maps hold two elements, an `any` holds an int.
// Interfaces with methods, funcs and chans stay nil; so does what lies
// deeper than 10 levels (a recursive type).
func fill(v reflect.Value, f *filler) { fillDepth(v, f, 0) }

func fillDepth(v reflect.Value, f *filler, depth int) {
	if depth > 10 {
		return
	}
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(f.next() % 100))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		v.SetUint(uint64(f.next() % 100))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(f.next()) + 0.5)
	case reflect.Complex64, reflect.Complex128:
		v.SetComplex(complex(float64(f.next()), 1))
	case reflect.String:
		v.SetString(fmt.Sprint("s", f.next()))
	case reflect.Array:
		for i := range v.Len() {
			fillDepth(v.Index(i), f, depth+1)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			fillDepth(settable(v.Field(i)), f, depth+1)
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			fillDepth(s.Index(i), f, depth+1)
		}
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fillDepth(p.Elem(), f, depth+1)
		v.Set(p)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for range 2 {
			k := reflect.New(v.Type().Key()).Elem()
			fillDepth(k, f, depth+1)
			e := reflect.New(v.Type().Elem()).Elem()
			fillDepth(e, f, depth+1)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	case reflect.Interface:
		if v.NumMethod() == 0 {
			v.Set(reflect.ValueOf(f.next()))
		}
	}
}

// settable returns v (a field of an addressable struct) as a settable
// value, exported or not.
func settable(v reflect.Value) reflect.Value {
	if v.CanSet() {
		return v
	}
	return reflect.NewAt(v.Type(), unsafe.Pointer(v.UnsafeAddr())).Elem()
}

// deepCopy returns a copy of v sharing no pointer, slice or map with it.
func deepCopy(v reflect.Value) reflect.Value {
	c := reflect.New(v.Type()).Elem()
	copyInto(c, v)
	return c
}

func copyInto(dst, src reflect.Value) {
	switch src.Kind() {
	case reflect.Array:
		for i := range src.Len() {
			copyInto(dst.Index(i), src.Index(i))
		}
	case reflect.Struct:
		for i := range src.NumField() {
			copyInto(settable(dst.Field(i)), src.Field(i))
		}
	case reflect.Slice:
		if src.IsNil() {
			return
		}
		s := reflect.MakeSlice(src.Type(), src.Len(), src.Len())
		for i := range src.Len() {
			copyInto(s.Index(i), src.Index(i))
		}
		dst.Set(s)
	case reflect.Pointer:
		if src.IsNil() {
			return
		}
		p := reflect.New(src.Type().Elem())
		copyInto(p.Elem(), src.Elem())
		dst.Set(p)
	case reflect.Map:
		if src.IsNil() {
			return
		}
		m := reflect.MakeMap(src.Type())
		it := src.MapRange()
		for it.Next() {
			m.SetMapIndex(deepCopy(it.Key()), deepCopy(it.Value()))
		}
		dst.Set(m)
	case reflect.Interface:
		if src.IsNil() {
			return
		}
		dst.Set(deepCopy(src.Elem()))
	case reflect.Func, reflect.Chan, reflect.UnsafePointer:
		dst.Set(settable(src))
	default:
		dst.Set(reflect.NewAt(src.Type(), addrOf(src)).Elem())
	}
}

// addrOf returns the address of a copy of the scalar src (which may be an
// unexported field, whose value Interface refuses).
func addrOf(src reflect.Value) unsafe.Pointer {
	if src.CanAddr() {
		return src.Addr().UnsafePointer()
	}
	c := reflect.New(src.Type())
	switch src.Kind() {
	case reflect.Bool:
		c.Elem().SetBool(src.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		c.Elem().SetInt(src.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		c.Elem().SetUint(src.Uint())
	case reflect.Float32, reflect.Float64:
		c.Elem().SetFloat(src.Float())
	case reflect.Complex64, reflect.Complex128:
		c.Elem().SetComplex(src.Complex())
	case reflect.String:
		c.Elem().SetString(src.String())
	default:
		panic("addrOf: " + src.Kind().String())
	}
	return c.UnsafePointer()
}

// walk calls fn on v and on every value reachable from it, in a fixed
// order (map entries by their printed key), each settable: a map entry's
// value is walked as a copy that is then stored back.
func walk(v reflect.Value, fn func(reflect.Value)) {
	fn(v)
	switch v.Kind() {
	case reflect.Array, reflect.Slice:
		for i := range v.Len() {
			walk(v.Index(i), fn)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			walk(settable(v.Field(i)), fn)
		}
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return
		}
		if v.Kind() == reflect.Pointer {
			walk(v.Elem(), fn)
			return
		}
		e := deepCopy(v.Elem())
		walk(e, fn)
		v.Set(e)
	case reflect.Map:
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		for _, k := range keys {
			e := deepCopy(v.MapIndex(k))
			walk(e, fn)
			v.SetMapIndex(k, e)
		}
	}
}

// count returns how many values walk visits.
func count(v reflect.Value) int {
	n := 0
	walk(v, func(reflect.Value) { n++ })
	return n
}

// at calls fn on the site'th value walk visits.
func at(v reflect.Value, site int, fn func(reflect.Value)) {
	n := 0
	walk(v, func(x reflect.Value) {
		if n == site {
			fn(x)
		}
		n++
	})
}

type mutation struct {
	name    string
	applies func(v reflect.Value) bool
	do      func(v reflect.Value)
}

func kinds(ks ...reflect.Kind) func(reflect.Value) bool {
	return func(v reflect.Value) bool {
		for _, k := range ks {
			if v.Kind() == k {
				return true
			}
		}
		return false
	}
}

var (
	ints   = []reflect.Kind{reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64}
	uints  = []reflect.Kind{reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr}
	floats = []reflect.Kind{reflect.Float32, reflect.Float64}
)

// mutations are the changes tried at each site: most make the value
// differ, some leave it deeply equal.
var mutations = []mutation{
	{"set to itself", func(v reflect.Value) bool { return v.Kind() != reflect.Func }, func(v reflect.Value) { v.Set(deepCopy(v)) }},
	{"flip", kinds(reflect.Bool), func(v reflect.Value) { v.SetBool(!v.Bool()) }},
	{"zero", func(v reflect.Value) bool { return !v.IsZero() }, func(v reflect.Value) { v.SetZero() }},
	{"+1", kinds(ints...), func(v reflect.Value) { v.SetInt(v.Int() + 1) }},
	{"+1", kinds(uints...), func(v reflect.Value) { v.SetUint(v.Uint() + 1) }},
	{"+1", kinds(floats...), func(v reflect.Value) { v.SetFloat(v.Float() + 1) }},
	{"-0", kinds(floats...), func(v reflect.Value) { v.SetFloat(math.Copysign(0, -1)) }},
	{"+1i", kinds(reflect.Complex64, reflect.Complex128), func(v reflect.Value) { v.SetComplex(v.Complex() + 1i) }},
	{"append x", kinds(reflect.String), func(v reflect.Value) { v.SetString(v.String() + "x") }},
	{"empty, not nil", kinds(reflect.Slice), func(v reflect.Value) { v.Set(reflect.MakeSlice(v.Type(), 0, 0)) }},
	{"one more element", kinds(reflect.Slice), func(v reflect.Value) {
		v.Set(reflect.Append(v, reflect.New(v.Type().Elem()).Elem()))
	}},
	{"one element less", func(v reflect.Value) bool { return v.Kind() == reflect.Slice && v.Len() > 0 }, func(v reflect.Value) { v.Set(v.Slice(0, v.Len()-1)) }},
	{"swap the first two", func(v reflect.Value) bool {
		return (v.Kind() == reflect.Slice || v.Kind() == reflect.Array) && v.Len() > 1
	}, func(v reflect.Value) {
		a, b := deepCopy(v.Index(0)), deepCopy(v.Index(1))
		v.Index(0).Set(b)
		v.Index(1).Set(a)
	}},
	{"a new zero value", kinds(reflect.Pointer), func(v reflect.Value) { v.Set(reflect.New(v.Type().Elem())) }},
	{"empty, not nil", kinds(reflect.Map), func(v reflect.Value) { v.Set(reflect.MakeMap(v.Type())) }},
	{"one entry less", func(v reflect.Value) bool { return v.Kind() == reflect.Map && v.Len() > 0 }, func(v reflect.Value) {
		v.SetMapIndex(v.MapKeys()[0], reflect.Value{})
	}},
	{"rebuilt in reverse order", kinds(reflect.Map), func(v reflect.Value) {
		if v.IsNil() {
			return
		}
		keys := v.MapKeys()
		m := reflect.MakeMap(v.Type())
		for i := len(keys) - 1; i >= 0; i-- {
			m.SetMapIndex(keys[i], v.MapIndex(keys[i]))
		}
		v.Set(m)
	}},
	{"values swapped", func(v reflect.Value) bool { return v.Kind() == reflect.Map && v.Len() > 1 }, func(v reflect.Value) {
		keys := v.MapKeys()
		a, b := deepCopy(v.MapIndex(keys[0])), deepCopy(v.MapIndex(keys[1]))
		v.SetMapIndex(keys[0], b)
		v.SetMapIndex(keys[1], a)
	}},
	{"another dynamic type", func(v reflect.Value) bool { return v.Kind() == reflect.Interface && v.NumMethod() == 0 }, func(v reflect.Value) {
		v.Set(reflect.ValueOf(int64(0)))
	}},
}

// BenchmarkOfPress digests one device of 513 points, as the system bench's
// presses: a reload digests every group of the new configuration.
func BenchmarkOfPress(b *testing.B) {
	dev := modbus.Device{Name: "press1", Config: modbus.Config{URL: "tcp://127.0.0.1:502", Unit: 1, Interval: time.Second}}
	for i := range 513 {
		dev.Points = append(dev.Points, modbus.Point{Name: fmt.Sprint("p", i), Table: "holding", Address: uint16(2 * i), Type: "float32", Unit: "bar", Scale: 0.1})
	}
	b.ReportAllocs()
	for b.Loop() {
		Of(dev)
	}
}
