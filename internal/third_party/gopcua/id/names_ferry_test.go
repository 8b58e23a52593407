// ferry patch: tests of the lazily built name tables (README.ferry.md).

package id

import (
	"runtime"
	"testing"
)

// TestNameTablesLazy: importing the package builds no name table (about
// 1.4 MB of heap in every ferry before the patch); the first Name call
// builds them, and the names are upstream's.
func TestNameTablesLazy(t *testing.T) {
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
