package reliability

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

var fuzzFuncRe = regexp.MustCompile(`(?m)^func (Fuzz\w+)\(f \*testing\.F\)`)

// fuzzTarget is one Fuzz function and the package directory holding it.
type fuzzTarget struct{ Dir, Name string }

// fuzzTargets lists every Fuzz function of the module.
func fuzzTargets(t *testing.T) (root string, out []fuzzTarget) {
	t.Helper()
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	root = filepath.Dir(strings.TrimSpace(string(b)))
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "dist") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range fuzzFuncRe.FindAllSubmatch(src, -1) {
			rel, _ := filepath.Rel(root, filepath.Dir(path))
			out = append(out, fuzzTarget{Dir: "./" + rel, Name: string(m[1])})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Dir != out[j].Dir {
			return out[i].Dir < out[j].Dir
		}
		return out[i].Name < out[j].Name
	})
	return root, out
}

// TestFuzzTargets runs every Fuzz function of the repository for
// FERRY_FUZZTIME (default 45s; long profile, or `make fuzz`) and reports
// crashers: 0 expected. A crasher is written by go test to the package's
// testdata/fuzz/FuzzX/ — commit it with the fix.
func TestFuzzTargets(t *testing.T) {
	needProfile(t, long)
	fuzztime := "45s"
	if v := os.Getenv("FERRY_FUZZTIME"); v != "" {
		fuzztime = v
	}
	root, targets := fuzzTargets(t)
	if len(targets) == 0 {
		t.Fatal("no Fuzz functions found")
	}
	var rows []string
	crashers := 0
	for _, ft := range targets {
		t.Run(strings.TrimPrefix(ft.Dir, "./")+"/"+ft.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-fuzz", "^"+ft.Name+"$", "-fuzztime", fuzztime, ft.Dir)
			cmd.Dir = root
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err := cmd.Run()
			execs := ""
			if m := regexp.MustCompile(`execs: (\d+)`).FindAllStringSubmatch(out.String(), -1); len(m) > 0 {
				execs = m[len(m)-1][1]
			}
			status := "0 crashers"
			if err != nil {
				// A crasher is written to testdata/fuzz; any other failure
				// (the package's own test harness, a build error) is
				// reported as such.
				status = "FAILED (no crasher)"
				if m := regexp.MustCompile(`Failing input written to (\S+)`).FindStringSubmatch(out.String()); m != nil {
					crashers++
					status = "CRASHER " + m[1]
				}
				t.Errorf("%s %s: %v\n%s", ft.Dir, ft.Name, err, tail(out.String(), 40))
			}
			rows = append(rows, fmt.Sprintf("%s %s: %s execs in %s, %s", ft.Dir, ft.Name, execs, time.Since(start).Round(time.Second), status))
			t.Log(rows[len(rows)-1])
		})
	}
	t.Logf("fuzz targets:\n%s", strings.Join(rows, "\n"))
	result(t, "fuzzing", fmt.Sprintf("%d Fuzz targets × %s each: crashers %d (%s)", len(rows), fuzztime, crashers, strings.Join(rows, "; ")))
}

// TestFuzzTargetsListed checks in every profile that the runner finds the
// repository's Fuzz functions (a moved or renamed one is still run).
func TestFuzzTargetsListed(t *testing.T) {
	needProfile(t)
	_, targets := fuzzTargets(t)
	var names []string
	for _, ft := range targets {
		names = append(names, ft.Dir+"."+ft.Name)
	}
	if len(targets) < 10 {
		t.Errorf("found only %d Fuzz functions: %v", len(targets), names)
	}
	t.Logf("%d Fuzz functions: %s", len(targets), strings.Join(names, " "))
}
