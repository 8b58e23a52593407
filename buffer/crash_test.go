package buffer

import (
	"bufio"
	"context"
	"fmt"
	"hash/crc64"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/codec"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// The crash test re-executes the test binary as a child (TestMain sees
// crashChildEnv) that appends scans at full speed and prints the id of
// every scan whose Done(nil) it got. The parent kills it with SIGKILL at
// random moments, then checks the file.

const (
	crashChildEnv = "FERRY_BUFFER_CRASH_CHILD" // data dir
	crashModeEnv  = "FERRY_BUFFER_CRASH_MODE"  // "append" or "ack"
	crashBaseEnv  = "FERRY_BUFFER_CRASH_BASE"  // first scan id of this run
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		os.Exit(crashChild(dir))
	}
	if dir := os.Getenv(cursorChildEnv); dir != "" {
		os.Exit(cursorChild(dir))
	}
	if dir := os.Getenv(diskChildEnv); dir != "" {
		os.Exit(diskChild(dir))
	}
	os.Exit(m.Run())
}

// crashChild appends scans until it is killed. Each scan carries its id as
// the value of its single sample. Lines on stdout:
//
//	A <id>         the scan was accepted (Done(nil))
//	K <id> <id>…   the reader is about to ack records holding these scans
func crashChild(dir string) int {
	base, _ := strconv.ParseUint(os.Getenv(crashBaseEnv), 10, 64)
	b, err := Open(dir, testConfig(), Options{Gateway: "gw1"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		return 3
	}
	// A K line must be written before its ack: the reader waits for
	// flushed, which the printer closes once the line is out.
	type line struct {
		s       string
		flushed chan struct{}
	}
	out := make(chan line, 1<<16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w := bufio.NewWriterSize(os.Stdout, 1<<16)
		for l := range out {
			w.WriteString(l.s)
			if l.flushed != nil || len(out) == 0 {
				w.Flush()
			}
			if l.flushed != nil {
				close(l.flushed)
			}
		}
		w.Flush()
	}()
	if os.Getenv(crashModeEnv) == "ack" {
		go func() {
			for {
				recs, err := b.Next(context.Background(), 64, 1<<20)
				if err != nil {
					return
				}
				var sb strings.Builder
				sb.WriteString("K")
				for _, r := range recs {
					tel, err := codec.DecodeTelemetry(r.Data)
					if err != nil {
						continue
					}
					for _, sc := range tel.Scans {
						sb.WriteString(" " + strconv.FormatUint(sc.Samples[0].Value.Uint64(), 10))
					}
				}
				sb.WriteString("\n")
				// Printed before the ack: whatever the ack deletes was
				// printed as acked.
				l := line{s: sb.String(), flushed: make(chan struct{})}
				out <- l
				<-l.flushed
				b.Ack(recs...)
			}
		}()
	}
	var id atomicCounter
	id.n = base
	for g := 0; g < 2; g++ {
		go func() {
			for {
				n := id.next()
				s := ferry.Scan{Device: "dev" + strconv.Itoa(int(n%3)), Time: time.Unix(0, int64(n)),
					Samples: []ferry.Sample{{Point: "id", Value: ferry.UintValue(n)}}}
				s.Done = func(err error) {
					if err == nil {
						out <- line{s: "A " + strconv.FormatUint(n, 10) + "\n"}
					}
				}
				b.AppendScan(s)
				if n%64 == 0 {
					time.Sleep(100 * time.Microsecond) // paces the appenders (lets the writer breathe under -race): not a wait
				}
			}
		}()
	}
	select {}
}

type atomicCounter struct {
	mu sync.Mutex
	n  uint64
}

func (c *atomicCounter) next() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return c.n
}

func TestCrashKill9(t *testing.T) {
	for _, mode := range []string{"append", "ack"} {
		t.Run(mode, func(t *testing.T) { crashTest(t, mode) })
	}
}

func crashTest(t *testing.T, mode string) {
	rounds := 20
	if testing.Short() {
		rounds = 5
	}
	dir := t.TempDir()
	accepted := map[uint64]bool{}
	acked := map[uint64]bool{}
	content := map[string]uint64{} // record id → checksum of its data, across rounds
	table := crc64.MakeTable(crc64.ECMA)
	base := uint64(0)
	child := testpeer.NewChild(t, os.Args[0], "-test.run=^$")
	for round := 0; round < rounds; round++ {
		child.Env = []string{crashChildEnv + "=" + dir, crashModeEnv + "=" + mode, crashBaseEnv + "=" + strconv.FormatUint(base, 10)}
		child.Start()
		// Kill at a random moment once the child has created the file
		// (opening included, so some kills land during Open). The random
		// delay is the thing under test, not a wait.
		testutil.Eventually(t, 30*time.Second, "the child creating the buffer file", func() error {
			if !child.Running() {
				return fmt.Errorf("child exited: %v\n%s", child.Wait(0), child.RunLog())
			}
			_, err := os.Stat(filepath.Join(dir, fileName))
			return err
		})
		time.Sleep(time.Duration(rand.IntN(400)) * time.Millisecond)
		if err := child.Kill(); !testpeer.Killed(err) {
			t.Fatalf("round %d: the child ended (%v) before the kill:\n%s", round, err, child.RunLog())
		}
		// The first line is the kit's "start" line.
		ls := strings.Split(child.RunLog(), "\n")[1:]
		// The last line may be cut by the kill: only whole lines count.
		if n := len(ls); n > 0 {
			ls = ls[:n-1]
		}
		got := 0
		for _, l := range ls {
			f := strings.Fields(l)
			if len(f) == 0 {
				continue
			}
			for _, s := range f[1:] {
				n, err := strconv.ParseUint(s, 10, 64)
				if err != nil {
					t.Fatalf("round %d: bad line %q", round, l)
				}
				switch f[0] {
				case "A":
					accepted[n] = true
					got++
				case "K":
					acked[n] = true
				}
			}
		}
		base += 1 << 32 // ids of the next child never meet this one's

		// Check the file as it is after the kill.
		in, err := Inspect(dir)
		if err != nil {
			t.Fatalf("round %d: Inspect: %v", round, err)
		}
		if in.Damaged != nil || in.DamagedRecords != 0 {
			t.Fatalf("round %d: file damaged after kill -9: %v (%d damaged records)", round, in.Damaged, in.DamagedRecords)
		}
		present := map[uint64]int{}
		err = in.Records(ferry.LaneTelemetry, 0, func(r ferry.Record, err error) error {
			if err != nil {
				return fmt.Errorf("record %s: %w", r.ID, err)
			}
			sum := crc64.Checksum(r.Data, table)
			if old, ok := content[r.ID]; ok && old != sum {
				return fmt.Errorf("record id %s was reused for different data", r.ID)
			}
			content[r.ID] = sum
			tel, err := codec.DecodeTelemetry(r.Data)
			if err != nil {
				return fmt.Errorf("record %s: %w", r.ID, err)
			}
			for _, sc := range tel.Scans {
				present[sc.Samples[0].Value.Uint64()]++
			}
			return nil
		})
		in.Close()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for id, n := range present {
			if n > 1 {
				t.Fatalf("round %d: scan %d is stored %d times", round, id, n)
			}
		}
		missing := 0
		for id := range accepted {
			if present[id] == 0 && !acked[id] {
				missing++
				if missing < 5 {
					t.Errorf("round %d: accepted scan %d is missing", round, id)
				}
			}
		}
		if missing > 0 {
			t.Fatalf("round %d: %d accepted scans missing", round, missing)
		}
		t.Logf("round %d: %d accepted this round, %d stored, %d acked so far", round, got, len(present), len(acked))
	}
	if len(accepted) == 0 {
		t.Fatal("no scan was ever accepted")
	}
}
