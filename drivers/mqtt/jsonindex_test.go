package mqtt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
)

// indexLookup is what decodeJSON does for point i: the top-level index,
// then the rest of the path.
func indexLookup(doc []byte, x *topIndex, starts []int, i int, p jsonPath) ([]byte, error) {
	if x == nil || x.pointSlot[i] < 0 {
		return lookup(doc, p)
	}
	at := starts[x.pointSlot[i]]
	if at < 0 {
		return nil, errMissingPath
	}
	return lookupAt(doc, at, p[1:])
}

// checkIndex compares, for every path, the indexed lookup with lookup on
// doc (which must be valid JSON).
func checkIndex(t *testing.T, doc []byte, paths []jsonPath) {
	t.Helper()
	x := newTopIndex(paths)
	var starts []int
	if x != nil {
		starts = x.fill(doc, nil)
	}
	for i, p := range paths {
		want, wantErr := lookup(doc, p)
		got, err := indexLookup(doc, x, starts, i, p)
		if !bytes.Equal(got, want) || !errors.Is(err, wantErr) || (err == nil) != (wantErr == nil) {
			t.Fatalf("doc %q path %s: index gave %q, %v; lookup gave %q, %v", doc, p, got, err, want, wantErr)
		}
	}
}

func mustPaths(t testing.TB, srcs ...string) []jsonPath {
	var ps []jsonPath
	for _, s := range srcs {
		p, err := parsePath(s)
		if err != nil {
			t.Fatalf("parsePath(%q): %v", s, err)
		}
		ps = append(ps, p)
	}
	return ps
}

func TestTopIndexMatchesLookup(t *testing.T) {
	paths := mustPaths(t, "a", "b", "c.d", "e[1]", "[0]", `["x.y"]`, "dup", `["q\"k"]`, "é", "missing", "a.b", "n")
	for _, doc := range []string{
		`{"a":1,"b":"two","c":{"d":true},"e":[0,{"f":1}],"x.y":null,"dup":1,"dup":2,"q\"k":3,"\u00e9":4,"n":{"a":1}}`,
		`{}`, `[]`, `[1,2]`, `"a"`, `12`, `null`,
		` { "b" : [ ] , "a" : { } } `,
		`{"\u0061":1,"a":2}`, // an escaped key equals its plain twin; the first wins
		`{"c":1,"c":{"d":2}}`,
		`{"e":[1]}`,
		`{"a":"\ud800"}`,
	} {
		if !json.Valid([]byte(doc)) {
			t.Fatalf("test doc %q is not valid JSON", doc)
		}
		checkIndex(t, []byte(doc), paths)
	}
}

// TestDecodeJSONIndexed decodes one payload with the index and point by
// point with lookup: the same samples and problems.
func TestDecodeJSONIndexed(t *testing.T) {
	d := benchDevice("tcp://127.0.0.1:1", 1)
	d.Points = append(d.Points, Point{Name: "gone", Path: "nothere"}, Point{Name: "obj", Path: "env"}, Point{Name: "dup", Path: "temp"})
	drv, err := New([]Device{d}, Options{Gateway: "g"})
	if err != nil {
		t.Fatal(err)
	}
	dv := drv.devices[0]
	if dv.top == nil {
		t.Fatal("no top-level index for a json device")
	}
	now := time.Unix(1700000000, 0)
	var starts []int
	for _, payload := range []string{benchPayload, `{"temp":"hot","env":[1]}`, `[1]`, `{"temp":1e400}`} {
		got, gotProbs := dv.decodeJSON([]byte(payload), "bench", now, nil, &starts)
		plain := *dv
		plain.top = nil
		want, wantProbs := plain.decodeJSON([]byte(payload), "bench", now, nil, &starts)
		if fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprint(gotProbs) != fmt.Sprint(wantProbs) {
			t.Errorf("payload %s:\nindexed %v %v\nplain   %v %v", payload, got, gotProbs, want, wantProbs)
		}
		if len(got) != len(d.Points) {
			t.Errorf("payload %s: %d samples for %d points", payload, len(got), len(d.Points))
		}
	}
}

// FuzzTopIndex checks the indexed lookup against lookup on every valid
// JSON document and set of paths (one a line).
func FuzzTopIndex(f *testing.F) {
	f.Add([]byte(benchPayload), "temp\nenv.co2\nreadings[0].value\nstate\nnothere")
	f.Add([]byte(`{"a":1,"a":2,"\u0062":3}`), "a\nb\n[0]")
	f.Add([]byte(`[{"a":1}]`), "[0].a\na")
	f.Add([]byte(`{"x.y":{"z":[1,2]}}`), `["x.y"].z[1]`+"\nx")
	f.Fuzz(func(t *testing.T, doc []byte, srcs string) {
		if !json.Valid(doc) {
			return
		}
		var paths []jsonPath
		for _, s := range strings.Split(srcs, "\n") {
			if p, err := parsePath(s); err == nil {
				paths = append(paths, p)
			}
		}
		checkIndex(t, doc, paths)
	})
}

// BenchmarkDecodeJSON50 decodes the cost bench's message (50 numeric
// fields and seq) into its 51 samples, with the top-level index and with
// a lookup from the start for each point (as before the index).
func BenchmarkDecodeJSON50(b *testing.B) {
	d := jsonDevice("bench", "tcp://127.0.0.1:1", "bench/t", Point{Name: "seq", Path: "seq"})
	payload := []byte(`{"seq":12345`)
	for i := range 50 {
		name := fmt.Sprintf("f%02d", i)
		d.Points = append(d.Points, Point{Name: name, Path: name})
		payload = fmt.Appendf(payload, `,"%s":%.3f`, name, 100*float64(i+1)+0.123)
	}
	payload = append(payload, '}')
	drv, err := New([]Device{d}, Options{Gateway: "g"})
	if err != nil {
		b.Fatal(err)
	}
	indexed := drv.devices[0]
	plain := *indexed
	plain.top = nil
	for _, c := range []struct {
		name string
		dv   *device
	}{{"indexed", indexed}, {"lookup", &plain}} {
		b.Run(c.name, func(b *testing.B) {
			now := time.Now()
			var starts []int
			dst := make([]ferry.Sample, 0, len(c.dv.points))
			b.ReportAllocs()
			for b.Loop() {
				var probs []problem
				dst, probs = c.dv.decodeJSON(payload, "bench", now, dst[:0], &starts)
				if len(probs) > 0 || len(dst) != 51 {
					b.Fatalf("%d samples, problems %v", len(dst), probs)
				}
			}
		})
	}
}
