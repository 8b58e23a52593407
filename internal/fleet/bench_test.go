package fleet

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry/internal/testpeer"
)

// BenchmarkFleet runs FERRY_FLEET_AGENTS (default 100) agents, each with
// its own connection and store, against one in-process nats-server. It
// reports, per push of a site-wide bundle (one push reaching every
// gateway), the time from the push until each gateway's status says
// applied (p50, p99, all), and the idle cost of an agent (its watch and
// heartbeat at the default 30s) over FERRY_FLEET_IDLE (default 60s):
// CPU of the whole process (agents and server) per agent per minute, and
// RSS per agent (RSS reuses memory the server freed before: the heap and
// stacks in use are reported too). Run: go test -run '^$' -bench Fleet -benchtime 10x ./internal/fleet
func BenchmarkFleet(b *testing.B) {
	n := envInt("FERRY_FLEET_AGENTS", 100)
	idle := time.Duration(envInt("FERRY_FLEET_IDLE", 60)) * time.Second
	srv := testpeer.NATS(b)
	_, js := srv.Connect()
	ctx := context.Background()
	cfgKV, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: DefaultConfigBucket, History: 8})
	if err != nil {
		b.Fatal(err)
	}
	stKV, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: DefaultStatusBucket})
	if err != nil {
		b.Fatal(err)
	}
	// Every status write, as it arrives.
	type seen struct {
		key string
		st  Status
		at  time.Time
	}
	updates := make(chan seen, 4*n)
	w, err := stKV.WatchAll(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	go func() {
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			var st Status
			if json.Unmarshal(e.Value(), &st) == nil {
				updates <- seen{e.Key(), st, time.Now()}
			}
		}
	}()

	runtime.GC()
	rss0, heap0 := rssKiB(b), heapKiB()
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	for i := range n {
		store, err := OpenStore(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		a, err := New(DefaultConfig(), Options{
			Site: "bench", Gateway: fmt.Sprintf("gw%03d", i),
			Connect: func() (*nats.Conn, error) { return nats.Connect(srv.URL()) },
			Store:   store,
			Hooks: Hooks{
				// Reads the staged files as a loader would.
				Prepare: func(dir string) (func() error, error) {
					if dir != "" {
						if _, err := os.ReadFile(dir + "/" + MainFile); err != nil {
							return nil, err
						}
					}
					return func() error { return nil }, nil
				},
				Gate:   func() func() error { return func() error { return nil } },
				Health: func() Health { return Health{Devices: map[string]int{"connected": 3}} },
			},
		})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = a.Run(runCtx) }()
	}
	up := map[string]bool{}
	for len(up) < n {
		select {
		case s := <-updates:
			up[s.key] = true
		case <-time.After(60 * time.Second):
			b.Fatalf("%d of %d agents reported", len(up), n)
		}
	}

	// Idle: the sleep is the measurement window.
	runtime.GC()
	rss1, heap1 := rssKiB(b), heapKiB()
	cpu0 := cpuTime()
	time.Sleep(idle)
	cpu1 := cpuTime()
	drain(updates)

	var lat []float64
	var all []float64
	b.ResetTimer()
	for round := 1; round <= b.N; round++ {
		v, _ := (&Bundle{Format: BundleFormat, Revision: uint64(round), Files: map[string]string{
			MainFile: fmt.Sprintf("# round %d\nrules: []\n", round),
		}}).Encode()
		t0 := time.Now()
		if _, err := cfgKV.Put(ctx, SiteKey("bench"), v); err != nil {
			b.Fatal(err)
		}
		done := map[string]bool{}
		var last time.Time
		for len(done) < n {
			select {
			case s := <-updates:
				if !done[s.key] && s.st.Last.State == StateApplied && s.st.Last.SiteRevision == uint64(round) {
					done[s.key] = true
					lat = append(lat, s.at.Sub(t0).Seconds()*1000)
					last = s.at
				}
			case <-time.After(60 * time.Second):
				b.Fatalf("round %d: %d of %d applied", round, len(done), n)
			}
		}
		all = append(all, last.Sub(t0).Seconds()*1000)
	}
	b.StopTimer()
	sort.Float64s(lat)
	sort.Float64s(all)
	b.ReportMetric(pct(lat, 50), "p50-ms")
	b.ReportMetric(pct(lat, 99), "p99-ms")
	b.ReportMetric(pct(all, 50), "all-applied-p50-ms")
	b.ReportMetric(pct(all, 100), "all-applied-max-ms")
	b.ReportMetric((cpu1-cpu0).Seconds()*1000/float64(n)/idle.Minutes(), "idle-cpu-ms/agent/min")
	b.ReportMetric(float64(rss1-rss0)/float64(n), "rss-KiB/agent")
	b.ReportMetric(float64(heap1-heap0)/float64(n), "heap+stack-KiB/agent")
	b.ReportMetric(float64(n), "agents")
}

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

func drain[T any](c chan T) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// heapKiB is the heap and the goroutine stacks in use.
func heapKiB() int64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse+m.StackInuse) / 1024
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rssKiB(b *testing.B) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
