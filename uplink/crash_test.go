package uplink

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
	"github.com/ferry-edge/ferry/internal/setting"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// The kill -9 test re-executes the test binary as a child (TestMain sees
// killChildEnv) that opens a real buffer, appends numbered scans, and runs
// the uplink against the parent's nats-server with batching on, until a
// test hook kills it with SIGKILL at the moment under test. The parent
// restarts it and, at the end, counts every scan in the stream.

const (
	killChildEnv = "FERRY_UPLINK_KILL_CHILD" // buffer data dir
	killURLEnv   = "FERRY_UPLINK_KILL_URL"   // nats-server URL
	killModeEnv  = "FERRY_UPLINK_KILL_MODE"  // "sealed", "published" or "drain"
	killBaseEnv  = "FERRY_UPLINK_KILL_BASE"  // scan ids of this run are base+1..base+count
	killCountEnv = "FERRY_UPLINK_KILL_COUNT"
	killBatchEnv = "FERRY_UPLINK_KILL_BATCH" // batch.max_bytes of this run

	// killAt is the hook call that kills the child: the second batch
	// sealed (or acknowledged by the stream), so that one went before.
	killAt = 2
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(killChildEnv); dir != "" {
		os.Exit(killChild(dir))
	}
	os.Exit(m.Run())
}

// killChild runs one life of the gateway. Lines on stdout:
//
//	A <first> <last>      the scans with these ids were committed to the buffer
//	L <batch id> <seq>…   a seal found in the buffer at start (left by the last run)
//	S <batch id>          the batch is sealed and not published: killed now
//	P <batch id>          the stream acknowledged the batch, the buffer did not: killed now
//
// Mode "drain" runs until the buffer is empty and its seals are gone, and
// exits 0.
func killChild(dir string) int {
	mode := os.Getenv(killModeEnv)
	base, _ := strconv.ParseUint(os.Getenv(killBaseEnv), 10, 64)
	count, _ := strconv.ParseUint(os.Getenv(killCountEnv), 10, 64)
	maxBytes, _ := strconv.Atoi(os.Getenv(killBatchEnv))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	var bcfg buffer.Config
	bcfg.SetDefaults()
	b, err := buffer.Open(dir, bcfg, buffer.Options{Gateway: "gw1", Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: open buffer:", err)
		return 3
	}
	// The seals the last run left, before the uplink loads (and prunes)
	// them.
	err = b.ForEach(sealBucket, func(k, v []byte) error {
		s, err := decodeSeal(k, v)
		if err != nil {
			return err
		}
		line := "L " + s.id
		for _, q := range s.seqs {
			line += " " + strconv.FormatUint(q, 10)
		}
		fmt.Println(line)
		return nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: read seals:", err)
		return 3
	}

	// Every scan is committed before the uplink starts: the parent knows
	// exactly which ids the buffer accepted.
	var wg sync.WaitGroup
	var refused atomic.Int64
	for i := uint64(1); i <= count; i++ {
		n := base + i
		// Many devices: a commit makes many small records, several to a
		// batch.
		dev := "dev" + strconv.FormatUint(n%60, 10)
		s := ferry.Scan{Device: dev, Time: time.Unix(1772352000, 0).Add(time.Duration(n) * time.Millisecond),
			Samples: make([]ferry.Sample, 4)}
		s.Samples[0] = ferry.Sample{Point: "id", Value: ferry.UintValue(n)}
		for j := 1; j < len(s.Samples); j++ {
			s.Samples[j] = ferry.Sample{Point: "p" + strconv.Itoa(j), Value: ferry.FloatValue(float64(n) + float64(j)/8)}
		}
		wg.Add(1)
		s.Done = func(err error) {
			if err != nil {
				refused.Add(1)
			}
			wg.Done()
		}
		b.AppendScan(s)
	}
	wg.Wait()
	if n := refused.Load(); n > 0 {
		fmt.Fprintf(os.Stderr, "child: the buffer refused %d scans\n", n)
		return 3
	}
	if count > 0 {
		fmt.Printf("A %d %d\n", base+1, base+count)
	}

	var calls atomic.Int64
	kill := func(tag string) func(string) {
		return func(id string) {
			if calls.Add(1) != killAt {
				return
			}
			fmt.Printf("%s %s\n", tag, id) // unbuffered: out before the kill
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	switch mode {
	case "sealed":
		testHookSealed = kill("S")
	case "published":
		testHookPublished = kill("P")
	case "drain":
	default:
		fmt.Fprintln(os.Stderr, "child: unknown mode", mode)
		return 3
	}

	cfg := testConfig(os.Getenv(killURLEnv))
	cfg.Batch.MaxBytes = setting.Size(maxBytes)
	cfg.Batch.MaxDelay = 20 * time.Millisecond
	u, err := New(cfg, b, Options{Gateway: "gw1", Site: "lyon", Version: "1.2.3", Logger: log, Registerer: prometheus.NewRegistry()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: uplink:", err)
		return 3
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()

	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			fmt.Fprintln(os.Stderr, "child: uplink stopped:", err)
			return 4
		case <-time.After(20 * time.Millisecond): // polls the buffer's state
		}
		if mode != "drain" || !drained(b) {
			continue
		}
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "child: uplink:", err)
			return 4
		}
		if err := b.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "child: close buffer:", err)
			return 4
		}
		return 0
	}
	fmt.Fprintf(os.Stderr, "child: mode %s: not done after 30s: %+v\n", mode, b.Stats())
	return 5
}

// drained reports whether the buffer holds no record, nothing waits for
// its writer, and no seal is left.
func drained(b *buffer.Buffer) bool {
	st := b.Stats()
	if st.QueueLength != 0 {
		return false
	}
	for _, l := range st.Lanes {
		if l.Records != 0 || l.InFlight != 0 {
			return false
		}
	}
	seals := 0
	if err := b.ForEach(sealBucket, func(_, _ []byte) error { seals++; return nil }); err != nil {
		return false
	}
	return seals == 0
}

// TestBatchKill9: the gateway is killed with SIGKILL (a) right after a
// batch's seal is committed and before its publish, then (b) after the
// stream stored a batch and before the PubAck reached the buffer, and
// restarted each time with more scans and a larger batch.max_bytes (a
// batch built afresh would hold other records). Every scan the buffer
// accepted is in the stream exactly once, in exactly one record, and every
// record of a batch sealed before a kill arrived in that batch, under its
// id.
func TestBatchKill9(t *testing.T) {
	srv := testpeer.NATS(t)
	dir := t.TempDir()
	child := testpeer.NewChild(t, os.Args[0], "-test.run=^$")
	runs := []struct {
		mode     string
		count    uint64
		maxBytes int
	}{
		{"sealed", 300, 4 << 10},
		{"published", 300, 8 << 10},
		{"drain", 100, 16 << 10},
	}
	var base uint64
	var hookIDs []string            // batch ids the hooks killed at, run by run
	sealed := map[string][]uint64{} // batch id → member seqs, of every seal a run found at start
	var found [][]string            // batch ids of the seals found at start, run by run
	for i, r := range runs {
		child.Env = []string{
			killChildEnv + "=" + dir, killURLEnv + "=" + srv.URL(), killModeEnv + "=" + r.mode,
			killBaseEnv + "=" + strconv.FormatUint(base, 10), killCountEnv + "=" + strconv.FormatUint(r.count, 10),
			killBatchEnv + "=" + strconv.Itoa(r.maxBytes),
		}
		child.Start()
		err := child.Wait(60 * time.Second)
		if r.mode == "drain" {
			if err != nil {
				t.Fatalf("run %d (%s): %v\n%s", i, r.mode, err, child.RunLog())
			}
		} else if !testpeer.Killed(err) {
			t.Fatalf("run %d (%s): the child ended (%v), not by its SIGKILL:\n%s", i, r.mode, err, child.RunLog())
		}
		var ids []string
		accepted, hook := false, ""
		for _, l := range strings.Split(child.RunLog(), "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			switch f[0] {
			case "A":
				if len(f) != 3 || f[1] != strconv.FormatUint(base+1, 10) || f[2] != strconv.FormatUint(base+r.count, 10) {
					t.Fatalf("run %d: bad line %q", i, l)
				}
				accepted = true
			case "L":
				for _, s := range f[2:] {
					q, err := strconv.ParseUint(s, 10, 64)
					if err != nil {
						t.Fatalf("run %d: bad line %q", i, l)
					}
					sealed[f[1]] = append(sealed[f[1]], q)
				}
				ids = append(ids, f[1])
			case "S", "P":
				hook = f[1]
			}
		}
		if !accepted {
			t.Fatalf("run %d: the child did not report its scans committed:\n%s", i, child.RunLog())
		}
		if r.mode != "drain" && hook == "" {
			t.Fatalf("run %d: killed, but not by the %s hook:\n%s", i, r.mode, child.RunLog())
		}
		hookIDs = append(hookIDs, hook)
		found = append(found, ids)
		base += r.count
	}
	// The batch each kill interrupted was sealed, and its seal survived.
	for i := range runs[:len(runs)-1] {
		if !strings.Contains(" "+strings.Join(found[i+1], " ")+" ", " "+hookIDs[i]+" ") {
			t.Errorf("run %d was killed at batch %s, whose seal run %d did not find (found %v)", i, hookIDs[i], i+1, found[i+1])
		}
	}

	_, js := testpeer.Connect(t, srv.URL())
	msgs := streamMsgs(t, js, "FERRY")
	records := map[string]int{}    // record id → times in the stream
	batchOf := map[string]string{} // record id → the batch it came in
	scans := map[uint64]int{}      // scan id → times in the stream
	for _, m := range msgs {
		if m.Headers().Get(HeaderKind) == KindCatalog {
			continue
		}
		all, err := DecodeAll(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			t.Fatal(err)
		}
		for _, dm := range all {
			records[dm.ID]++
			if dm.Telemetry == nil {
				continue // the buffer's own alerts
			}
			batchOf[dm.ID] = dm.BatchID
			if dm.BatchID == "" {
				t.Errorf("record %s sent alone, not in a batch", dm.ID)
			}
			for _, sc := range dm.Telemetry.Scans {
				if len(sc.Points) == 0 || sc.Points[0].Name != "id" {
					t.Fatalf("record %s: a scan without its id point: %+v", dm.ID, sc.Points)
				}
				scans[uint64(sc.Points[0].Value.Float64())]++
			}
		}
	}
	for id, n := range records {
		if n != 1 {
			t.Errorf("record %s is %d times in the stream", id, n)
		}
	}
	missing := 0
	for n := uint64(1); n <= base; n++ {
		switch scans[n] {
		case 1:
		case 0:
			missing++
			if missing <= 5 {
				t.Errorf("scan %d is not in the stream", n)
			}
		default:
			t.Errorf("scan %d is %d times in the stream", n, scans[n])
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d accepted scans lost", missing, base)
	}
	if len(scans) != int(base) {
		t.Errorf("the stream holds %d distinct scans, %d were accepted", len(scans), base)
	}
	if len(sealed) == 0 {
		t.Fatal("no seal survived a kill")
	}
	for id, seqs := range sealed {
		for _, q := range seqs {
			rid := ferry.RecordID("gw1", ferry.LaneTelemetry, q)
			if got := batchOf[rid]; got != id {
				t.Errorf("record %s, sealed in batch %s before a kill, arrived in batch %q", rid, id, got)
			}
		}
	}
	t.Logf("%d scans in %d records, %d messages; killed at batches %v; %d and %d seals found after the kills", base, len(batchOf), len(msgs), hookIDs[:2], len(found[1]), len(found[2]))
}
