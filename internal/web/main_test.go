package web

import (
	"os"
	"testing"

	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestMain fails the run when goroutines started by the tests outlive
// them: every goroutine must have an owner that waits for it.
func TestMain(m *testing.M) { os.Exit(testutil.CheckLeaks(m)) }
