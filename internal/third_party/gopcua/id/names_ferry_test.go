// ferry patch: tests of the lazily built name tables (README.ferry.md).

package id

import (
	"os"
	"os/exec"
	"runtime"
	"testing"
)

// TestNameTablesLazy: importing the package builds no name table (about
// 1.4 MB of heap in every ferry before the patch); the first Name call
// builds them. Measured in a fresh process: in this one an earlier test
// (or -count) may have built them already.
func TestNameTablesLazy(t *testing.T) {
	if os.Getenv("FERRY_ID_LAZY_CHILD") == "1" {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		if got := Name(Server_ServerStatus); got != "Server_ServerStatus" {
			t.Fatalf("Name(%d) = %q", Server_ServerStatus, got)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew < 512<<10 {
			t.Fatalf("the first Name call grew the heap by %d bytes: the tables were built before it (at init)", grew)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestNameTablesLazy$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "FERRY_ID_LAZY_CHILD=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the child process: %v\n%s", err, out)
	}
}

// TestNames: the names are upstream's, whichever table holds them.
func TestNames(t *testing.T) {
	for id, want := range map[uint32]string{
		Boolean:                  "Boolean",                  // a data type, looked up first
		HasComponent:             "HasComponent",             // a reference type
		BaseEventType:            "BaseEventType",            // an object type
		Server:                   "Server",                   // an object
		Server_ServerStatus:      "Server_ServerStatus",      // a variable
		Server_GetMonitoredItems: "Server_GetMonitoredItems", // a method
		4000000000:               "4000000000",               // none of them
	} {
		if got := Name(id); got != want {
			t.Errorf("Name(%d) = %q, want %q", id, got, want)
		}
	}
}
