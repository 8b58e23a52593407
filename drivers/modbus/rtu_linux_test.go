//go:build linux

package modbus

import (
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/ferry-edge/ferry"
)

// openPTY opens a pseudo-terminal pair: the driver opens the slave path
// as its serial port, the test's RTU responder serves on the master.
func openPTY(t *testing.T) (*os.File, string) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	rc, err := m.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n uint32
	var ioErr error
	err = rc.Control(func(fd uintptr) {
		var unlock int32
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
			ioErr = e
			return
		}
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
			ioErr = e
		}
	})
	if err != nil || ioErr != nil {
		m.Close()
		t.Skipf("pty setup: %v %v", err, ioErr)
	}
	path := "/dev/pts/" + strconv.Itoa(int(n))
	if _, err := os.Stat(path); err != nil {
		m.Close()
		t.Skipf("pty slave %s: %v", path, err)
	}
	return m, path
}

// TestRTUSerial reads over a serial line (a pty) with RTU framing: two
// units on one port, a hole, a CRC error and a silent unit.
func TestRTUSerial(t *testing.T) {
	master, path := openPTY(t)
	r := &rtuResponder{b: rtuBank()}
	r.b.fill(8, 0, 4, func(a int) uint16 { return 800 + uint16(a) })
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.serve(master)
	}()
	t.Cleanup(func() {
		master.Close()
		wg.Wait()
	})
	s := &Serial{}
	s.SetDefaults()
	s.Baud = 115200
	d7 := dev("meter7", "rtu://"+path, 7, 50*time.Millisecond, rtuPoints()...)
	d7.Config.MaxGap = 20
	d7.Config.Serial = s
	d8 := dev("meter8", "rtu://"+path, 8, 50*time.Millisecond, hr("x", 2, "uint16"))
	d8.Config.Serial = s
	drv := newDriver(t, Options{}, d7, d8)
	if len(drv.links) != 1 {
		t.Fatalf("%d links for one port", len(drv.links))
	}
	col := newCollector()
	stop := run(t, drv, col)
	for i := 0; i < 2; i++ {
		checkRTUScan(t, col.next(t, "meter7"))
	}
	if v := sample(t, col.next(t, "meter8"), "x").Value.Uint64(); v != 802 {
		t.Errorf("meter8 x = %d", v)
	}
	r.setMode("badcrc")
	col.waitFor(t, "meter8", "bad frame", func(s ferry.Scan) bool { return s.Samples[0].Quality.Reason == ReasonBadFrame })
	r.setMode("")
	col.waitFor(t, "meter8", "good again", allGood)
	r.setMode("silent")
	col.waitFor(t, "meter8", "timeout", func(s ferry.Scan) bool { return s.Samples[0].Quality.Reason == ferry.ReasonTimeout })
	r.setMode("")
	col.waitFor(t, "meter8", "good after silence", allGood)
	col.waitFor(t, "meter7", "good after silence", func(s ferry.Scan) bool { return sample(t, s, "a").Quality.IsGood() })
	stop()
	if lp := drv.Plan()[0]; lp.Serial != "115200 8N1" {
		t.Errorf("plan serial %q", lp.Serial)
	}
}

// TestRTUSerialUnplugged: a USB serial adapter is pulled out and put back.
// The port's stable name (a symlink, as udev's /dev/serial/by-id/… is)
// points at a new device afterwards; the driver reports the device lost
// while it is gone and reads again once it is back, without a restart.
func TestRTUSerialUnplugged(t *testing.T) {
	link := t.TempDir() + "/usb-FTDI_FT232R-if00-port0"
	r := &rtuResponder{b: rtuBank()}
	r.b.fill(8, 0, 4, func(a int) uint16 { return 800 + uint16(a) })
	var wg sync.WaitGroup
	plug := func() *os.File {
		master, path := openPTY(t)
		if err := os.Symlink(path, link); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.serve(master)
		}()
		return master
	}
	master := plug()
	t.Cleanup(func() {
		master.Close()
		wg.Wait()
	})
	s := &Serial{}
	s.SetDefaults()
	s.Baud = 115200
	d := dev("meter8", "rtu://"+link, 8, 50*time.Millisecond, hr("x", 2, "uint16"))
	d.Config.Serial = s
	drv := newDriver(t, Options{}, d)
	col := newCollector()
	stop := run(t, drv, col)
	defer stop()
	col.waitFor(t, "meter8", "first reading", allGood)

	// Unplugged: the device and its name are gone.
	master.Close()
	wg.Wait()
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	col.waitFor(t, "meter8", "bad while unplugged", func(s ferry.Scan) bool { return !s.Samples[0].Quality.IsGood() })
	if st := drv.DeviceStatus()[0]; st.Connected {
		t.Errorf("status while unplugged: %+v, want not connected", st)
	}

	// Plugged back: a new tty behind the same name.
	master = plug()
	got := col.waitFor(t, "meter8", "good after replug", allGood)
	if v := sample(t, got, "x").Value.Uint64(); v != 802 {
		t.Errorf("x = %d after replug, want 802", v)
	}
}
