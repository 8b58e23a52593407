package gateway

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/buffer"
	"github.com/ferry-edge/ferry/internal/codec"
	"github.com/ferry-edge/ferry/uplink"
)

// The filter hands an upstream only what it takes, acknowledges the rest
// for that upstream alone, and cuts telemetry records to its points, the
// same bytes at every read.
func TestFilteredSource(t *testing.T) {
	b, err := buffer.Open(t.TempDir(), bufferConfig(), buffer.Options{Gateway: "gw1", Consumers: []string{"all", "some"}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	at := time.Unix(1700000000, 0)
	for _, dev := range []string{"press1", "oven1"} {
		done := make(chan error, 1)
		b.AppendScan(ferry.Scan{Device: dev, Time: at, Done: func(err error) { done <- err }, Samples: []ferry.Sample{
			{Device: dev, Point: "oil_temp", Value: ferry.FloatValue(1), Time: at},
			{Device: dev, Point: "speed", Value: ferry.IntValue(2), Time: at},
		}})
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	b.AppendAlert(ferry.Alert{ID: "a1", Rule: "hot", Device: "press1", Point: "oil_temp", Time: at})
	b.AppendAlert(ferry.Alert{ID: "a2", Rule: "gateway", Time: at})
	if err := b.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	no := false
	some, _ := b.Cursor("some")
	all, _ := b.Cursor("all")
	f := newFiltered(some, uplink.Filter{Devices: []string{"press*"}, Points: []string{"oil_*"}, Alerts: &no})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := f.Next(ctx, 100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Lane != ferry.LaneTelemetry {
		t.Fatalf("got %d records (%v), want press1's telemetry only", len(got), got)
	}
	tel, err := codec.DecodeTelemetry(got[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	if tel.Device != "press1" || len(tel.Scans) != 1 || len(tel.Scans[0].Samples) != 1 || tel.Scans[0].Samples[0].Point != "oil_temp" {
		t.Fatalf("record holds %+v, want press1 oil_temp only", tel)
	}
	// The excluded records are acknowledged for this upstream only.
	if st := some.Stats(); st.Pending() != 1 {
		t.Fatalf("some has %d pending, want the 1 it was handed", st.Pending())
	}
	if st := all.Stats(); st.Pending() != 4 {
		t.Fatalf("all has %d pending, want 4", st.Pending())
	}
	// A second read (after Release) gives the same bytes.
	f.Release(got...)
	again, err := f.Next(ctx, 100, 1<<20)
	if err != nil || len(again) != 1 || !bytes.Equal(again[0].Data, got[0].Data) || again[0].ID != got[0].ID {
		t.Fatalf("second read %v %v differs from the first", again, err)
	}
	// Nothing the filter takes is left: Next waits.
	if err := f.Ack(again...); err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if recs, err := f.Next(short, 100, 1<<20); err == nil {
		t.Fatalf("Next returned %v with nothing left for the filter", recs)
	}
}

func bufferConfig() buffer.Config {
	var c buffer.Config
	c.SetDefaults()
	return c
}
