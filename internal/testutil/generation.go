package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// OneGeneration checks that dir holds exactly files files, each starting
// with the same line "# gen N", and returns N: the crash tests of staged
// configurations (internal/fleet, cmd/ferry) write every file of
// generation N with that first line, so a directory that mixes two
// generations, or misses a file, shows a torn write.
func OneGeneration(dir string, files int) (uint64, error) {
	var firsts []string
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		first, _, _ := strings.Cut(string(b), "\n")
		firsts = append(firsts, first)
		return nil
	})
	if err != nil {
		return 0, err
	}
	if len(firsts) != files {
		return 0, fmt.Errorf("%s holds %d files, want %d", dir, len(firsts), files)
	}
	for _, f := range firsts {
		if f != firsts[0] {
			return 0, fmt.Errorf("%s mixes %q and %q", dir, firsts[0], f)
		}
	}
	var gen uint64
	_, err = fmt.Sscanf(firsts[0], "# gen %d", &gen)
	return gen, err
}
