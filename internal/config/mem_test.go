package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/drivers/modbus"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/gateway"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestRetainedBytesPerPoint measures what a loaded configuration of
// 10,000 Modbus points (20 devices of 500, as the system bench's presses)
// keeps on the heap, before and after DropPointSpecs: the running
// gateway's configuration once its drivers are built. After the drop it
// should hold little more than the catalog (Config.Points): one
// ferry.PointInfo per point, its strings (the point's name, its source)
// and the catalog slice's spare capacity.
func TestRetainedBytesPerPoint(t *testing.T) {
	const devices, perDevice = 20, 500
	dir := t.TempDir()
	main := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(main, []byte("gateway: {id: gw}\ndata_dir: "+dir+"\ndevices_dir: devices.d\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "devices.d"), 0o700); err != nil {
		t.Fatal(err)
	}
	for d := range devices {
		var b strings.Builder
		fmt.Fprintf(&b, "devices:\n  - name: press%d\n    modbus: {url: \"tcp://127.0.0.1:%d\", unit: 1, interval: 1s}\n    points:\n", d, 5020+d)
		for i := range perDevice {
			fmt.Fprintf(&b, "      - {name: p%d, table: holding, address: %d, type: float32, unit: bar}\n", i, 2*i)
		}
		if err := os.WriteFile(filepath.Join(dir, "devices.d", fmt.Sprintf("press%d.yaml", d)), []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	heap := testutil.LiveHeap
	before := heap()
	c, err := config.Load(main, gateway.Protocols)
	if err != nil {
		t.Fatal(err)
	}
	loaded := heap()
	c.DropPointSpecs()
	dropped := heap()
	runtime.KeepAlive(c)
	if len(c.Points) != devices*perDevice {
		t.Fatalf("%d points", len(c.Points))
	}
	for _, dev := range config.DevicesOf[modbus.Device](c) {
		if dev.Points != nil || dev.Config.Unit != 1 {
			t.Fatalf("device %s after DropPointSpecs: %d points, unit %d", dev.Name, len(dev.Points), dev.Config.Unit)
		}
	}
	per := func(n uint64) float64 { return float64(n) / (devices * perDevice) }
	full, kept := per(loaded-before), per(dropped-before)
	t.Logf("the configuration holds %.0f bytes per point loaded, %.0f after DropPointSpecs (catalog: %d points, cap %d)",
		full, kept, len(c.Points), cap(c.Points))
	// The bound: the catalog's entry with the spare capacity append may
	// leave (up to a quarter for a slice this large), plus four small
	// strings of the point's own of at most 16 bytes each (name, source
	// such as "holding 998", type, unit). Loaded, it is over 400.
	bound := 1.25*float64(unsafe.Sizeof(ferry.PointInfo{})) + 4*16
	if kept > bound {
		t.Errorf("after DropPointSpecs the configuration holds %.0f bytes per point, want at most %.0f (a PointInfo, its strings and spare capacity)", kept, bound)
	}
	if freed, pt := full-kept, float64(unsafe.Sizeof(modbus.Point{})); freed < pt {
		t.Errorf("DropPointSpecs freed %.0f bytes per point, less than a modbus.Point (%.0f bytes)", freed, pt)
	}
}
