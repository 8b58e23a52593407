package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink"
)

// TestCommandsKill9 runs the real ferry binary as a child process with
// commands enabled against a Modbus server and a NATS JetStream server in
// this process, and kills it with SIGKILL again and again while clients
// send commands, each with its own id and its own value, retrying each
// request (same id) until a final reply comes. Then:
//
//   - the Modbus server saw each value (each id) written at most once;
//   - every id has a final reply, done or unknown (never refused: the
//     deadlines are far), and every done id was written exactly once;
//   - the audit events are upstream exactly once: for every id one
//     "accepted" and one result (done, or unknown when a kill cut the write
//     short), nothing else, none twice.
//
// The normal suite runs 60 commands and 4 kills; FERRY_COMMANDS_KILL=full
// runs the 200 commands and 10 kills (about 30 s on the 2-core VM).
func TestCommandsKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the ferry binary")
	}
	commands, kills := 60, 4
	if os.Getenv("FERRY_COMMANDS_KILL") == "full" {
		commands, kills = 200, 10
	}
	bin := buildFerry(t)
	bank := &testpeer.RegBank{}
	mb := testpeer.ModbusServer(t, bank)
	ns := testpeer.NATS(t)
	dir := t.TempDir()
	path := writeConfig(t, dir, mb.Addr(), "{name: counter, table: holding, address: 0, type: uint16, write: {}}")
	// Upstream to the same NATS server; the command subject is kept out
	// of the stream (docs/commands.md).
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "uplink:\n  nats: {urls: [\"%s\"], stream: CMDKILL, create_stream: true, reconnect_max: 200ms, connect_timeout: 1s}\n", ns.URL())
	f.Close()
	child := testpeer.Child(t, bin, "run", "-config", path)
	nc, _ := ns.Connect()
	const subject = "ferry.test.gw1.cmd"
	up := func() error {
		_, err := nc.Request(subject, []byte(`{}`), 500*time.Millisecond)
		return err
	}
	testutil.Eventually(t, 60*time.Second, "the child to answer commands", up)

	// The clients: each command is asked until it has a final reply.
	replies := make([]ferry.CommandReply, commands)
	var next, answered, retries atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := time.Now().Add(9 * time.Minute)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= commands {
					return
				}
				req, _ := json.Marshal(ferry.CommandRequest{ID: "k" + strconv.Itoa(i), Device: "press", Point: "counter",
					Value: json.RawMessage(strconv.Itoa(1000 + i)), Deadline: deadline})
				for time.Now().Before(deadline) {
					m, err := nc.Request(subject, req, 2*time.Second)
					if err != nil { // the child is down, or died with the request
						retries.Add(1)
						time.Sleep(50 * time.Millisecond) // pacing the retries of a client, not a wait for a condition
						continue
					}
					if err := json.Unmarshal(m.Data, &replies[i]); err != nil {
						t.Errorf("reply %s: %v", m.Data, err)
					}
					break
				}
				answered.Add(1)
			}
		}()
	}

	// The killer: kill -9 at a random moment while commands flow, restart,
	// wait until it answers again.
	for k := range kills {
		if answered.Load() >= int64(commands) {
			t.Logf("all commands answered before kill %d", k+1)
			break
		}
		time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond) // the random moment of the kill
		if err := child.Kill(); err != nil && !testpeer.Killed(err) {
			t.Fatalf("kill %d: %v", k+1, err)
		}
		child.Start()
		testutil.Eventually(t, 60*time.Second, "the child to answer again", up)
	}
	wg.Wait()
	took := time.Since(start)

	// What the server saw: value → writes.
	seen := map[uint16]int{}
	for _, w := range bank.Writes() {
		if len(w.Regs) != 1 || w.Addr != 0 {
			t.Fatalf("unexpected write %+v", w)
		}
		seen[w.Regs[0]]++
	}
	status := map[string]int{}
	for i, r := range replies {
		v := uint16(1000 + i)
		if seen[v] > 1 {
			t.Errorf("k%d: value %d written %d times", i, v, seen[v])
		}
		status[r.Status]++
		switch r.Status {
		case ferry.CommandDone:
			if seen[v] != 1 {
				t.Errorf("k%d done but written %d times", i, seen[v])
			}
		case ferry.CommandUnknown:
		default:
			t.Errorf("k%d: final reply %+v, want done or unknown", i, r)
		}
		if r.ID != "k"+strconv.Itoa(i) {
			t.Errorf("k%d: reply for %q", i, r.ID)
		}
	}

	// Upstream: every id's accepted and result events, once each.
	want := map[string]bool{}
	for i, r := range replies {
		want[fmt.Sprintf("command/k%d/accepted", i)] = true
		want[fmt.Sprintf("command/k%d/%s", i, r.Status)] = true
	}
	var got map[string]int
	testutil.Eventually(t, 60*time.Second, "the audit events upstream", func() error {
		got = map[string]int{}
		testpeer.ReadStream(t, ns.URL(), "CMDKILL", func(m jetstream.Msg) {
			all, err := uplink.DecodeAll(m.Subject(), m.Headers(), m.Data())
			if err != nil {
				t.Fatalf("stream message on %s: %v", m.Subject(), err)
			}
			for _, msg := range all {
				if msg.Kind == uplink.KindAlert && msg.Alert.Rule == "command" {
					got[msg.Alert.ID]++
				}
			}
		})
		for id := range want {
			if got[id] == 0 {
				return fmt.Errorf("%s not upstream (%d of %d events)", id, len(got), len(want))
			}
		}
		return nil
	})
	probes := 0
	for id, n := range got {
		switch {
		case strings.HasPrefix(id, "command/-/"):
			probes++ // the liveness probe's request {} (no id): refused, audited each time
		case !want[id]:
			t.Errorf("audit event %s upstream, not expected", id)
		case n != 1:
			t.Errorf("audit event %s upstream %d times", id, n)
		}
	}
	if err := child.Stop(30 * time.Second); err != nil {
		t.Errorf("ferry after SIGTERM: %v", err)
	}
	t.Logf("RESULT commands kill -9: %d commands, %d kills, %d starts, %v: %d done, %d unknown; %d writes at the server, %d client retries, %d audit events upstream (and %d of the probe)",
		commands, kills, child.Starts(), took.Round(time.Millisecond), status[ferry.CommandDone], status[ferry.CommandUnknown],
		len(bank.Writes()), retries.Load(), len(got)-probes, probes)
}
