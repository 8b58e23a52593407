//go:build soak

package soak

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// smapsRollup reads Rss, Anonymous and shared memory of pid from
// /proc/PID/smaps_rollup, in bytes.
func smapsRollup(pid int) (rss, anon, shmem float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	return parseSmapsRollup(b)
}

// fileSizes is the sum of the sizes of the files that exist among paths.
func fileSizes(paths ...string) float64 {
	var n float64
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			n += float64(fi.Size())
		}
	}
	return n
}

// mappedSize is the size of what ferry maps from files: its binary and
// the bbolt files in its data directory.
func mappedSize(bin, data string) float64 {
	dbs, _ := filepath.Glob(filepath.Join(data, "*.db"))
	return fileSizes(append(dbs, bin)...)
}

func verdictShort(judged, flat bool) string {
	switch {
	case !judged:
		return "not judged"
	case flat:
		return "flat"
	}
	return "NOT flat"
}

// artifactDir is where the soak keeps its series, table and heap
// profiles: $FERRY_SOAK_ARTIFACTS (scripts/soak.sh sets it), or nowhere.
type artifactDir struct{ dir string }

func artifacts(t *testing.T) artifactDir {
	dir := os.Getenv("FERRY_SOAK_ARTIFACTS")
	if dir == "" {
		return artifactDir{}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("artifacts: %v", err)
		return artifactDir{}
	}
	return artifactDir{dir: dir}
}

// write appends s to the artifact name (the series is written as it
// grows, so that a run cut short keeps what it measured).
func (a artifactDir) write(name, s string) {
	if a.dir == "" {
		return
	}
	fh, err := os.OpenFile(filepath.Join(a.dir, name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	fh.WriteString(s)
	fh.Close()
}

// heapProfile saves ferry's heap profile (http.pprof is on in the soak).
func (a artifactDir) heapProfile(t *testing.T, base, name string) {
	if a.dir == "" {
		return
	}
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(base + "/debug/pprof/heap")
	if err != nil {
		t.Logf("heap profile: %v", err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Logf("heap profile: %s %v", resp.Status, err)
		return
	}
	if err := os.WriteFile(filepath.Join(a.dir, name), b, 0o644); err != nil {
		t.Logf("heap profile: %v", err)
	}
}

// heapDiff logs what the heap in use gained from one profile to the
// other (go tool pprof -top -base), and keeps it beside them.
func (a artifactDir) heapDiff(t *testing.T, from, to string) {
	if a.dir == "" {
		return
	}
	cmd := exec.Command("go", "tool", "pprof", "-sample_index=inuse_space", "-top", "-nodecount=25",
		"-base", filepath.Join(a.dir, from), filepath.Join(a.dir, to))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Logf("pprof: %v\n%s", err, out)
		return
	}
	a.write("heap-diff.txt", string(out))
	t.Logf("heap in use, end against warm-up (go tool pprof -top -base):\n%s", out)
}

// loadAvg is the machine's 1-minute load average (the soak shares it).
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
