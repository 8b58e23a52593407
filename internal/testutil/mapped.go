package testutil

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// MappedRSS returns the resident bytes of each file a process maps, by
// path (/proc/PID/smaps, Linux): the file-backed part of its RSS. pid 0
// is this process.
func MappedRSS(t testing.TB, pid int) map[string]float64 {
	t.Helper()
	name := "/proc/self/smaps"
	if pid != 0 {
		name = fmt.Sprintf("/proc/%d/smaps", pid)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	var file string
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			// A mapping's header: range perms offset dev inode [path].
			file = ""
			if len(f) >= 6 {
				file = f[5]
			}
		case len(f) == 3 && f[0] == "Rss:" && file != "":
			kb, _ := strconv.ParseFloat(f[1], 64)
			out[file] += kb * 1024
		}
	}
	return out
}
