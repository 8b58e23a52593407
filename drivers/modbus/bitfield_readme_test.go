package modbus_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/drivers/modbus"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/gateway"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestReadmeBitFields: the README's bit-field example loads through the
// config loader, and polled from a server holding 0xABCD gives the values
// its comments say.
func TestReadmeBitFields(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	start := strings.Index(md, "```yaml\n# bit fields")
	if start < 0 {
		t.Fatal("no bit-field example in the README")
	}
	body := md[start+len("```yaml\n"):]
	body = body[:strings.Index(body, "```")]
	srv := testpeer.NewMaskWriteServer(t)
	srv.Set(40, 0xABCD)
	body = strings.Replace(body, "tcp://10.0.0.40:502", srv.URL(), 1)
	c, err := gateway.LoadConfig(writeConfig(t, "gateway: {id: gw}\n"+body))
	if err != nil {
		t.Fatal(err)
	}
	devs := config.DevicesOf[modbus.Device](c)
	devs[0].Config.Interval = 20 * time.Millisecond
	drv, err := modbus.New(devs, modbus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	scans := make(chan ferry.Scan, 100)
	stop := testutil.Run(t, "Run", 10*time.Second, func(ctx context.Context) error {
		return drv.Run(ctx, func(s ferry.Scan) {
			select {
			case scans <- s:
			default:
			}
		})
	})
	defer stop()
	var s ferry.Scan
	select {
	case s = <-scans:
	case <-time.After(10 * time.Second):
		t.Fatal("no scan within 10s")
	}
	want := map[string]ferry.Value{"mode": ferry.UintValue(13), "step": ferry.UintValue(12), "running": ferry.BoolValue(true), "recipe": ferry.FloatValue(42.5)}
	for _, x := range s.Samples {
		if !x.Quality.IsGood() || !x.Value.Equal(want[x.Point]) {
			t.Errorf("%s = %v (%v), want %v", x.Point, x.Value, x.Quality, want[x.Point])
		}
	}
	if len(s.Samples) != len(want) {
		t.Errorf("%d samples, want %d", len(s.Samples), len(want))
	}
}
