package testutil

import (
	"os"
	"testing"
)

// WriteFile writes text to path atomically (a reader, such as a reload,
// sees the old file or the new one, never half of one).
func WriteFile(t testing.TB, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
