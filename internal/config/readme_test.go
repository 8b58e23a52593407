package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadmeExamples loads every complete configuration shown in the
// parts' READMEs, so that the docs cannot drift from the loader. A fenced
// ```yaml block whose first line is "# ferry.yaml" is a complete
// configuration; other yaml blocks are fragments and are not loaded. Each
// driver README must hold at least one complete example.
func TestReadmeExamples(t *testing.T) {
	readmes, _ := filepath.Glob("../../drivers/*/README.md")
	others, _ := filepath.Glob("../../*/README.md")
	readmes = append(readmes, others...)
	readmes = append(readmes, "../../internal/reduce/README.md")
	readmes = append(readmes, "../../docs/upstreams.md")
	for _, r := range readmes {
		data, err := os.ReadFile(r)
		if err != nil {
			t.Fatal(err)
		}
		blocks := completeYAMLBlocks(string(data))
		if len(blocks) == 0 && strings.Contains(r, "/drivers/") {
			t.Errorf("%s has no complete example (a ```yaml block starting with \"# ferry.yaml\")", r)
		}
		for i, b := range blocks {
			dir := t.TempDir()
			p := filepath.Join(dir, "ferry.yaml")
			if err := os.WriteFile(p, []byte(b), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := load(p); err != nil {
				t.Errorf("%s: example %d does not load:\n%v\n--- example:\n%s", r, i+1, err, b)
			}
		}
	}
}

func completeYAMLBlocks(md string) []string {
	var out []string
	lines := strings.Split(md, "\n")
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```yaml" {
			continue
		}
		var b strings.Builder
		j := i + 1
		for ; j < len(lines) && strings.TrimSpace(lines[j]) != "```"; j++ {
			b.WriteString(lines[j])
			b.WriteByte('\n')
		}
		if i+1 < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[i+1]), "# ferry.yaml") {
			out = append(out, b.String())
		}
		i = j
	}
	return out
}
