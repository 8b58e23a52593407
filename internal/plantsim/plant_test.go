package plantsim

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	mbclient "github.com/simonvetter/modbus"
)

func startPlant(t *testing.T, opts Options) *Plant {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p, err := Start(ctx, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); p.Close() })
	return p
}

func TestPressServesRegisterMap(t *testing.T) {
	p := startPlant(t, Options{Rate: 50 * time.Millisecond})
	c, err := mbclient.NewClient(&mbclient.ClientConfiguration{URL: "tcp://" + p.Presses[0].Addr, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetUnitId(PressUnit)
	abcd, err := c.ReadFloat32(HROilTemp, mbclient.HOLDING_REGISTER)
	if err != nil {
		t.Fatal(err)
	}
	if abcd < 50 || abcd > 100 {
		t.Errorf("oil temp %v out of the plausible range", abcd)
	}
	c.SetEncoding(mbclient.BIG_ENDIAN, mbclient.LOW_WORD_FIRST)
	cdab, err := c.ReadFloat32(HROilTempCDAB, mbclient.HOLDING_REGISTER)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(float64(cdab-abcd)) > 2 {
		t.Errorf("CDAB copy %v far from ABCD value %v", cdab, abcd)
	}
	// The hole answers "illegal data address", also for a range that
	// only touches it.
	for _, r := range []struct{ addr, n uint16 }{{HRHoleStart, 1}, {HRStatus, 12}, {HRHoleEnd, 2}} {
		if _, err := c.ReadRegisters(r.addr, r.n, mbclient.HOLDING_REGISTER); !errors.Is(err, mbclient.ErrIllegalDataAddress) {
			t.Errorf("read %d+%d: err = %v, want illegal data address", r.addr, r.n, err)
		}
	}
	name, err := c.ReadRegisters(HRName, HRNameLen, mbclient.HOLDING_REGISTER)
	if err != nil || name[0] != 'P'<<8|'R' {
		t.Errorf("name registers %v, %v", name, err)
	}
	if coils, err := c.ReadCoils(CoilRunning, 2); err != nil || !coils[0] {
		t.Errorf("coils %v, %v", coils, err)
	}
	if p.Presses[0].Requests() < 7 || p.Presses[0].Exceptions() != 3 {
		t.Errorf("requests %d, exceptions %d", p.Presses[0].Requests(), p.Presses[0].Exceptions())
	}
}

func TestFaultCycle(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	m := &Model{Start: now, Cycle: 100 * time.Second, Faults: true, Now: func() time.Time { return now }}
	at := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	if d := m.OilTemp(1, at(30)) - m.OilTemp(2, at(30)); d < 20 {
		t.Errorf("press1 not overheating at 30%% of the cycle: diff %v", d)
	}
	if m.OilTemp(1, at(60)) > 70 {
		t.Errorf("press1 still hot at 60%%: %v", m.OilTemp(1, at(60)))
	}
	if m.EnvHumidity(1, at(35)) != m.EnvHumidity(1, at(65)) {
		t.Error("humidity not stuck inside the stuck window")
	}
	if m.EnvHumidity(1, at(10)) == m.EnvHumidity(1, at(20)) {
		t.Error("humidity stuck outside the window")
	}
	now = now.Add(at(60))
	if !m.Press2Silent() {
		t.Error("press2 not silent at 60%")
	}
	m.Faults = false
	if m.Press2Silent() || m.overheat(at(30)) != 0 {
		t.Error("faults active while disabled")
	}
}

func TestBrokerAndNATS(t *testing.T) {
	p := startPlant(t, Options{Rate: 20 * time.Millisecond, NATSDir: t.TempDir()})
	got := make(chan []byte, 1)
	err := p.MQTT.srv.Subscribe("sensors/+/env", 1, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
		select {
		case got <- pk.Payload:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		var v struct{ Temp, Hum float64 }
		if err := json.Unmarshal(b, &v); err != nil || v.Temp == 0 || v.Hum == 0 {
			t.Fatalf("payload %s: %v", b, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no sensor message")
	}
	nc, err := nats.Connect(p.NATS.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(context.Background(), StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if s.CachedInfo().Config.Duplicates != DuplicateWindow {
		t.Errorf("duplicate window %v", s.CachedInfo().Config.Duplicates)
	}
	// A restart keeps the address and the stream.
	port := p.NATS.Port
	p.NATS.Shutdown()
	if err := p.NATS.Start(); err != nil {
		t.Fatal(err)
	}
	if p.NATS.Port != port {
		t.Fatalf("port changed from %d to %d", port, p.NATS.Port)
	}
}
