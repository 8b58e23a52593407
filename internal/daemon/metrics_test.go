package daemon

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg, "1.4.0", "abc123def456")
	names := []string{"ferry_build_info", "ferry_config_reload_success", "ferry_config_reload_timestamp_seconds", "ferry_config_reloads_total", "ferry_config_info"}

	compare := func(step, want string) {
		t.Helper()
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
	head := `
# HELP ferry_build_info Always 1; the labels say which ferry build is running.
# TYPE ferry_build_info gauge
ferry_build_info{commit="abc123def456",goversion="` + runtime.Version() + `",version="1.4.0"} 1
# HELP ferry_config_reloads_total Configuration reloads asked for (SIGHUP), by result: success or failure.
# TYPE ferry_config_reloads_total counter
`
	reload := func(ok, ts string) string {
		return `# HELP ferry_config_reload_success 1 when the last configuration load or reload succeeded, 0 when the last reload was refused (the previous configuration keeps running).
# TYPE ferry_config_reload_success gauge
ferry_config_reload_success ` + ok + `
# HELP ferry_config_reload_timestamp_seconds Unix time of the last successful configuration load or reload.
# TYPE ferry_config_reload_timestamp_seconds gauge
ferry_config_reload_timestamp_seconds ` + ts + `
`
	}
	info := func(v string) string {
		return `# HELP ferry_config_info Always 1; the version label is the hash of the running configuration (files and device maps).
# TYPE ferry_config_info gauge
ferry_config_info{version="` + v + `"} 1
`
	}

	m.ConfigLoaded("aaaaaaaaaaaa", time.Unix(1700000000, 0))
	compare("start", head+`ferry_config_reloads_total{result="failure"} 0
ferry_config_reloads_total{result="success"} 0
`+reload("1", "1.7e+09")+info("aaaaaaaaaaaa"))

	m.ReloadFailed()
	compare("bad reload", head+`ferry_config_reloads_total{result="failure"} 1
ferry_config_reloads_total{result="success"} 0
`+reload("0", "1.7e+09")+info("aaaaaaaaaaaa"))

	m.Reloaded("bbbbbbbbbbbb", time.Unix(1700000100, 0))
	compare("good reload", head+`ferry_config_reloads_total{result="failure"} 1
ferry_config_reloads_total{result="success"} 1
`+reload("1", "1.7000001e+09")+info("bbbbbbbbbbbb"))
}

func TestRegisterRuntime(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := RegisterRuntime(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
	}
	for _, n := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_start_time_seconds", "process_open_fds", "process_resident_memory_bytes"} {
		if !have[n] {
			t.Errorf("%s not registered", n)
		}
	}
	if err := RegisterRuntime(reg); err == nil {
		t.Error("registering twice did not fail")
	}
	if err := RegisterRuntime(nil); err != nil {
		t.Error(err)
	}
}
