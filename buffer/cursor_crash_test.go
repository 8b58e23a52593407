package buffer

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/codec"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// The cursors' crash test: a child appends scans and two consumers, one
// fast and one slow, take and ack them; the parent kills it with SIGKILL
// at random moments and checks, per consumer, that every accepted scan was
// delivered, and that none was delivered again once its ack was committed.

const cursorChildEnv = "FERRY_BUFFER_CURSOR_CHILD" // data dir

var crashConsumers = []string{"fast", "slow"}

// cursorChild appends and consumes until it is killed. Lines on stdout:
//
//	A <id>                  the scan was accepted (Done(nil))
//	N <consumer> <id>…      Next gave the consumer records holding these scans
//	C <consumer> <id>…      the consumer's ack of them is committed (Flush returned)
func cursorChild(dir string) int {
	base, _ := strconv.ParseUint(os.Getenv(crashBaseEnv), 10, 64)
	b, err := Open(dir, testConfig(), Options{Gateway: "gw1", Consumers: crashConsumers})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		return 3
	}
	type line struct {
		s       string
		flushed chan struct{}
	}
	out := make(chan line, 1<<16)
	go func() {
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
	}()
	say := func(s string) {
		l := line{s: s, flushed: make(chan struct{})}
		out <- l
		<-l.flushed
	}
	for i, name := range crashConsumers {
		cur, _ := b.Cursor(name)
		go func() {
			for {
				recs, err := cur.Next(context.Background(), 16, 1<<20)
				if err != nil {
					return
				}
				var sb strings.Builder
				for _, r := range recs {
					tel, err := codec.DecodeTelemetry(r.Data)
					if err != nil {
						continue
					}
					for _, sc := range tel.Scans {
						sb.WriteString(" " + strconv.FormatUint(sc.Samples[0].Value.Uint64(), 10))
					}
				}
				say("N " + name + sb.String() + "\n")
				if err := cur.Ack(recs...); err != nil {
					return
				}
				if err := b.Flush(context.Background()); err != nil {
					return
				}
				say("C " + name + sb.String() + "\n")
				if i == 1 {
					time.Sleep(20 * time.Millisecond) // the slow consumer's pace: not a wait
				}
			}
		}()
	}
	n := base
	for {
		n++
		id := n
		s := ferry.Scan{Device: "dev" + strconv.Itoa(int(id%3)), Time: time.Unix(0, int64(id)),
			Samples: []ferry.Sample{{Point: "id", Value: ferry.UintValue(id)}}}
		s.Done = func(err error) {
			if err == nil {
				out <- line{s: "A " + strconv.FormatUint(id, 10) + "\n"}
			}
		}
		b.AppendScan(s)
		time.Sleep(200 * time.Microsecond) // paces the appender: not a wait
	}
}

func TestCursorsCrashKill9(t *testing.T) {
	rounds := 10
	if testing.Short() {
		rounds = 4
	}
	dir := t.TempDir()
	accepted := map[uint64]bool{}
	seen := map[string]map[uint64]bool{}      // consumer → scans delivered to it, any round
	committed := map[string]map[uint64]bool{} // consumer → scans whose ack was committed
	for _, c := range crashConsumers {
		seen[c], committed[c] = map[uint64]bool{}, map[uint64]bool{}
	}
	deliver := func(where, c string, id uint64, round map[string]map[uint64]bool) {
		t.Helper()
		if committed[c][id] {
			t.Fatalf("%s: scan %d delivered to %s after its ack was committed", where, id, c)
		}
		if round != nil {
			if round[c][id] {
				t.Fatalf("%s: scan %d delivered twice to %s in one run", where, id, c)
			}
			round[c][id] = true
		}
		seen[c][id] = true
	}
	base := uint64(0)
	child := testpeer.NewChild(t, os.Args[0], "-test.run=^$")
	for round := 0; round < rounds; round++ {
		child.Env = []string{cursorChildEnv + "=" + dir, crashBaseEnv + "=" + strconv.FormatUint(base, 10)}
		child.Start()
		testutil.Eventually(t, 30*time.Second, "the child creating the buffer file", func() error {
			if !child.Running() {
				return fmt.Errorf("child exited: %v\n%s", child.Wait(0), child.RunLog())
			}
			_, err := os.Stat(filepath.Join(dir, fileName))
			return err
		})
		// The random moment of the kill is the thing under test.
		time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond)
		if err := child.Kill(); !testpeer.Killed(err) {
			t.Fatalf("round %d: the child ended (%v) before the kill:\n%s", round, err, child.RunLog())
		}
		ls := strings.Split(child.RunLog(), "\n")[1:]
		if n := len(ls); n > 0 {
			ls = ls[:n-1] // the last line may be cut by the kill
		}
		inRound := map[string]map[uint64]bool{}
		for _, c := range crashConsumers {
			inRound[c] = map[uint64]bool{}
		}
		acks := 0
		for _, l := range ls {
			f := strings.Fields(l)
			if len(f) == 0 {
				continue
			}
			args := f[1:]
			c := ""
			if f[0] == "N" || f[0] == "C" {
				c, args = f[1], f[2:]
			}
			for _, s := range args {
				id, err := strconv.ParseUint(s, 10, 64)
				if err != nil {
					t.Fatalf("round %d: bad line %q", round, l)
				}
				switch f[0] {
				case "A":
					accepted[id] = true
				case "N":
					deliver(fmt.Sprintf("round %d", round), c, id, inRound)
				case "C":
					committed[c][id] = true
					acks++
				}
			}
		}
		t.Logf("round %d: %d accepted so far; delivered this run: fast %d, slow %d; %d acks committed",
			round, len(accepted), len(inRound["fast"]), len(inRound["slow"]), acks)
		base += 1 << 32
	}
	if len(accepted) == 0 {
		t.Fatal("no scan was ever accepted")
	}

	// The file after the last kill: each consumer is offered what it has
	// not acked, and with that has seen every accepted scan.
	b := openT(t, dir, testConfig(), Options{Consumers: crashConsumers})
	for _, c := range crashConsumers {
		cur := cursorT(t, b, c)
		recs := drainCursor(t, cur)
		final := map[string]map[uint64]bool{c: {}}
		for _, r := range recs {
			for _, sc := range decodeScans(t, r).Scans {
				deliver("after the last kill", c, sc.Samples[0].Value.Uint64(), final)
			}
		}
		missing := 0
		for id := range accepted {
			if !seen[c][id] {
				missing++
				if missing < 5 {
					t.Errorf("%s never got accepted scan %d", c, id)
				}
			}
		}
		if missing > 0 {
			t.Fatalf("%s: %d accepted scans never delivered", c, missing)
		}
		if err := cur.Ack(recs...); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d scans left after the last kill, %d delivered in all", c, len(final[c]), len(seen[c]))
	}
	flush(t, b)
	if st := b.Stats(); st.Lanes[ferry.LaneTelemetry].Records != 0 {
		t.Fatalf("%d telemetry records stored after both consumers acked everything", st.Lanes[ferry.LaneTelemetry].Records)
	}
	if n := countMarks(t, b); n != 0 {
		t.Fatalf("%d marks left", n)
	}
}
