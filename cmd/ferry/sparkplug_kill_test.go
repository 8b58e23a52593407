package main

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink/sparkplug/sphost"
)

// TestSparkplugKill9 runs the real ferry binary as a Sparkplug edge node
// (uplink.sparkplug) against a Modbus server, an MQTT broker and a
// Sparkplug host in this process, and kills it with SIGKILL twice. Each
// time the broker publishes the node's will: an NDEATH whose bdSeq is the
// one of the NBIRTH of that session (the host checks every message); the
// restarted node is born with bdSeq+1 (kept in the buffer's state store
// across the kill) and its data flows again.
func TestSparkplugKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the ferry binary")
	}
	bin := buildFerry(t)
	bank := &testpeer.RegBank{}
	mb := testpeer.ModbusServer(t, bank)
	bk := testpeer.Broker(t)
	host := sphost.New(t, bk.URL(), "scada")
	dir := t.TempDir()
	path := writeConfig(t, dir, mb.Addr(), "{name: counter, table: holding, address: 0, type: uint16}")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "uplink:\n  sparkplug: {brokers: [\"%s\"], group_id: plant, reconnect_max: 200ms}\n", bk.URL())
	f.Close()

	child := testpeer.Child(t, bin, "run", "-config", path)
	value := uint16(0)
	// flows sets the counter to a new value and waits until the host has
	// it in a DDATA.
	flows := func(what string) {
		t.Helper()
		value++
		bank.Set(0, value)
		testutil.WaitFor(t, 30*time.Second, what, func() bool {
			for _, v := range host.Values("press", "counter") {
				if v.Value == uint64(value) || v.Value == int64(value) || v.Value == float64(value) {
					return true
				}
			}
			return false
		})
	}
	born := func(bdSeq uint64) {
		t.Helper()
		testutil.WaitFor(t, 60*time.Second, fmt.Sprintf("NBIRTH with bdSeq %d", bdSeq), func() bool {
			bd, ok := host.BdSeq("plant", "gw1")
			return ok && bd == bdSeq
		})
	}
	born(0)
	flows("data before the first kill")
	for k := range 2 {
		if err := child.Kill(); err != nil && !testpeer.Killed(err) {
			t.Fatalf("kill %d: %v", k+1, err)
		}
		testutil.WaitFor(t, 30*time.Second, "the NDEATH will", func() bool { return len(host.Messages("NDEATH")) == k+1 })
		deaths := host.Messages("NDEATH")
		var bd uint64
		for _, m := range deaths[k].Payload.Metrics {
			if m.GetName() == "bdSeq" {
				bd = m.GetLongValue()
			}
		}
		if bd != uint64(k) {
			t.Errorf("NDEATH %d bdSeq = %d, want %d", k+1, bd, k)
		}
		child.Start()
		born(uint64(k + 1))
		flows(fmt.Sprintf("data after restart %d", k+1))
	}
	for _, v := range host.Violations() {
		t.Errorf("host: %s", v)
	}
}
