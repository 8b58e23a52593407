package modbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/backoff"
	"github.com/ferry-edge/ferry/internal/devstat"
	"github.com/ferry-edge/ferry/internal/setting"
)

var _ ferry.Driver = (*Driver)(nil)
var _ ferry.StatusReporter = (*Driver)(nil)

// ErrRunning is returned by Run when the Driver is already running.
var ErrRunning = errors.New("modbus: driver is already running")

// Options are what a Driver needs besides its devices.
type Options struct {
	// Logger is already scoped (log.With("driver", "modbus")); nil discards.
	Logger *slog.Logger
	// Metrics are the Modbus series shared by every Driver; nil: private,
	// unregistered series.
	Metrics *Metrics
	// Devices are the per-device series shared by every driver; nil:
	// private, unregistered series.
	Devices *devstat.Metrics
	// Now is the clock for timestamps and schedules (default time.Now).
	Now func() time.Time
	// Backoff is the template of each link's reconnect backoff; the zero
	// value uses the defaults of internal/backoff (100ms doubling to 30s).
	Backoff backoff.Backoff
}

// Driver polls the Modbus devices of one or more links. Devices sharing a
// link (GroupKey) are served by one goroutine that serialises their
// requests; links run independently of each other.
type Driver struct {
	links   []*link
	devices []*device
	metrics *Metrics
	running atomic.Bool
}

// GroupKey returns the device's link, the normalized URL
// ("tcp://10.0.0.21:502", "rtu:///dev/ttyUSB0"): devices with the same key
// share a connection or serial port and must run in one Driver.
func GroupKey(d *Device) string {
	lk, err := parseLink(d.Config.URL)
	if err != nil {
		return d.Config.URL
	}
	return lk.String()
}

// withDefaults fills what o leaves unset: a discarding logger, private
// metrics, time.Now.
func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.Devices == nil {
		o.Devices = devstat.NewMetrics(nil)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// New validates devices and prepares their links and request plans. It
// does no I/O.
func New(devices []Device, opts Options) (*Driver, error) {
	opts = opts.withDefaults()
	var errs setting.Errors
	names := map[string]bool{}
	byKey := map[string]*link{}
	drv := &Driver{metrics: opts.Metrics}
	for i := range devices {
		dev := devices[i]
		at := dev.Name
		if at == "" {
			at = fmt.Sprintf("devices[%d]", i)
		}
		if err := dev.Validate(); err != nil {
			errs.Merge(at, err)
			continue
		}
		if names[dev.Name] {
			errs.Add(at, "duplicate device name")
			continue
		}
		names[dev.Name] = true
		lk, _ := parseLink(dev.Config.URL)
		key := lk.String()
		serial := Serial{}
		serial.SetDefaults()
		if dev.Config.Serial != nil {
			serial = *dev.Config.Serial
		}
		l := byKey[key]
		if l == nil {
			l = newLink(lk, dev.Name, serial, opts)
			byKey[key] = l
			drv.links = append(drv.links, l)
		} else if lk.scheme == schemeRTU && l.serial != serial {
			errs.Add(at+".modbus.serial", "%s differs from %s of device %s on the same port %s", serial, l.serial, l.devs[0].name, key)
			continue
		} else if other := l.unitOwner(dev.Config.Unit); other != "" && lk.scheme != schemeTCP {
			// On an RS-485 bus (rtu://, or rtuovertcp:// to a
			// converter) both would answer each request: garbled
			// frames. Behind tcp:// one device may be split in two.
			errs.Add(at+".modbus.unit", "unit %d is also device %s's on the same bus %s: two devices on one RS-485 bus cannot share a unit id", dev.Config.Unit, other, key)
			continue
		}
		d := newDevice(dev, l, opts)
		l.devs = append(l.devs, d)
		drv.devices = append(drv.devices, d)
	}
	if err := errs.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ferry.ErrInvalidConfig, err)
	}
	return drv, nil
}

// Run polls every device until ctx ends, emitting one scan per device and
// poll. It returns nil after ctx ends and every link is closed; a request
// in flight then is allowed to finish or time out first (the Modbus library
// cannot abandon one), so Run returns within the longest device timeout.
func (d *Driver) Run(ctx context.Context, emit ferry.EmitFunc) error {
	if !d.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer d.running.Store(false)
	var wg sync.WaitGroup
	for _, l := range d.links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run(ctx, emit)
		}()
	}
	wg.Wait()
	return nil
}

// DeviceStatus reports how each device is doing, in configuration order.
func (d *Driver) DeviceStatus() []ferry.DeviceStatus {
	out := make([]ferry.DeviceStatus, len(d.devices))
	for i, dev := range d.devices {
		out[i] = dev.stat.Status()
	}
	return out
}

// Forget removes the metric series of the driver's devices and links, for
// devices a reload removed. Call it after Run has returned.
func (d *Driver) Forget() {
	for _, dev := range d.devices {
		dev.stat.Forget()
		d.metrics.forgetDevice(dev.name)
	}
	for _, l := range d.links {
		d.metrics.forgetLink(l.name)
	}
}

// Plan returns the requests one poll of each device makes now: before Run
// the plan from the configuration, while running the plan after what fault
// isolation learned (Bad lists those ranges).
func (d *Driver) Plan() []LinkPlan {
	out := make([]LinkPlan, 0, len(d.links))
	for _, l := range d.links {
		lp := LinkPlan{Link: l.addr.String()}
		if l.addr.scheme == schemeRTU {
			lp.Serial, lp.Baud = l.serial.String(), l.serial.Baud
		}
		for _, dev := range l.devs {
			lp.Devices = append(lp.Devices, dev.planSnapshot())
		}
		out = append(out, lp)
	}
	return out
}
