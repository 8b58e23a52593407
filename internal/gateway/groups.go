package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/drivers/modbus"
	"github.com/ferry-edge/ferry/drivers/mqtt"
	"github.com/ferry-edge/ferry/drivers/opcua"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/deephash"
	"github.com/ferry-edge/ferry/internal/devstat"
	"github.com/ferry-edge/ferry/internal/setting"
)

// This file is the one place that knows the protocols: which blocks a
// device entry may hold (Protocols, for the loader), how devices group
// into drivers, how a group's driver is built, and what a device that is
// gone leaves behind. A new protocol touches drivers/NAME and this file.

// Protocols is the table of the protocols a device may speak, in the order
// the loader names them ("needs one protocol block: modbus, opcua or
// mqtt"): each block's key and the driver's Config, Point and Device
// types. config.Load decodes a device entry with it and keeps the typed
// device in config.Device.Spec, which groupSpecs switches on.
var Protocols = []config.Protocol{
	config.NewProtocol("modbus", func(name string, c modbus.Config, points []modbus.Point) modbus.Device {
		return modbus.Device{Name: name, Config: c, Points: points}
	}),
	config.NewProtocol("opcua", func(name string, c opcua.Config, points []opcua.Point) opcua.Device {
		return opcua.Device{Name: name, Config: c, Points: points}
	}),
	config.NewProtocol("mqtt", func(name string, c mqtt.Config, points []mqtt.Point) mqtt.Device {
		return mqtt.Device{Name: name, Config: c, Points: points}
	}),
}

// LoadConfig loads the configuration at path with every protocol ferry
// speaks: config.Load(path, Protocols).
func LoadConfig(path string) (*config.Config, error) {
	return config.Load(path, Protocols)
}

// group is one running Driver: the devices that share a link (Modbus), a
// connection (MQTT) or a session (OPC UA).
//
// A group keeps the digest of its spec, not the spec: the driver holds
// what it needs of the points, and the configuration the gateway keeps
// has dropped them (config.Config.DropPointSpecs). A reload restarts the
// group when the digest of its new spec differs (deephash: the equality
// of reflect.DeepEqual), a change of one point's scale included.
type group struct {
	key    string
	digest deephash.Digest
	// devices names the group's devices (publishDeviceDrivers).
	devices []string
	drv     ferry.Driver
	run     *runner
}

// newGroup returns the group of spec, with its driver drv (nil: not built).
func newGroup(key string, spec groupSpec, drv ferry.Driver) *group {
	return &group{key: key, digest: deephash.Of(spec), devices: spec.deviceNames(), drv: drv}
}

// groupSpec is the configuration of a group, while the drivers of a
// configuration are built.
type groupSpec struct {
	protocol string
	modbus   []modbus.Device
	opcua    []opcua.Device
	mqtt     []mqtt.Device
}

// deviceNames names the devices of s, in configuration order.
func (s *groupSpec) deviceNames() []string {
	var out []string
	for _, dev := range s.modbus {
		out = append(out, dev.Name)
	}
	for _, dev := range s.opcua {
		out = append(out, dev.Name)
	}
	for _, dev := range s.mqtt {
		out = append(out, dev.Name)
	}
	return out
}

// driverMetrics are the drivers' metrics, one set per protocol, shared by
// every group of that protocol (and kept across reloads).
type driverMetrics struct {
	devices *devstat.Metrics
	modbus  *modbus.Metrics
	opcua   *opcua.Metrics
	mqtt    *mqtt.Metrics
}

func newDriverMetrics(reg prometheus.Registerer) driverMetrics {
	return driverMetrics{
		devices: devstat.NewMetrics(reg),
		modbus:  modbus.NewMetrics(reg),
		opcua:   opcua.NewMetrics(reg),
		mqtt:    mqtt.NewMetrics(reg),
	}
}

// CheckGroups builds (without starting) the driver of every device group,
// as Run would, and reports every group a driver refuses: what only a
// driver can tell, such as devices sharing a serial port that disagree on
// its baud rate (ferry validate).
func CheckGroups(cfg *config.Config) error {
	var errs []error
	for key, spec := range groupSpecs(cfg) {
		if _, err := newGroupDriver(cfg, key, spec, nil, driverMetrics{}, false); err != nil {
			if placed := placeDeviceErrors(cfg, err); placed != nil {
				errs = append(errs, placed...)
				continue
			}
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// placeDeviceErrors gives each field error of a driver ("meter3.modbus.serial:
// …") the file:line:column and path of its device's block, as the loader
// places its own ("devices.d/meters.yaml:9:5: devices[1].modbus.serial:
// …"). It returns nil when err holds a field error of no known device.
func placeDeviceErrors(cfg *config.Config, err error) []error {
	var fes []*setting.FieldError
	var walk func(error)
	walk = func(e error) {
		var fe *setting.FieldError
		if errors.As(e, &fe) && fe == e {
			fes = append(fes, fe)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	var out []error
	for _, fe := range fes {
		placed := false
		for i := range cfg.Devices {
			dev := &cfg.Devices[i]
			block := dev.Name + "." + dev.Protocol
			if dev.Path == "" || (fe.Path != block && !strings.HasPrefix(fe.Path, block+".")) {
				continue
			}
			out = append(out, fmt.Errorf("%s: %s%s: %s", dev.Pos, dev.Path, strings.TrimPrefix(fe.Path, block), fe.Msg))
			placed = true
			break
		}
		if !placed {
			return nil
		}
	}
	return out
}

// groupSpecs groups the configured devices by the drivers' GroupKey. cfg
// must still hold its points (not yet DropPointSpecs).
func groupSpecs(cfg *config.Config) map[string]groupSpec {
	out := map[string]groupSpec{}
	add := func(protocol, key string, f func(s *groupSpec)) {
		k := groupKey(protocol, key)
		s := out[k]
		s.protocol = protocol
		f(&s)
		out[k] = s
	}
	for _, dev := range cfg.Devices {
		switch spec := dev.Spec.(type) {
		case modbus.Device:
			add("modbus", modbus.GroupKey(&spec), func(s *groupSpec) { s.modbus = append(s.modbus, spec) })
		case opcua.Device:
			add("opcua", opcua.GroupKey(&spec), func(s *groupSpec) { s.opcua = append(s.opcua, spec) })
		case mqtt.Device:
			add("mqtt", mqtt.GroupKey(&spec), func(s *groupSpec) { s.mqtt = append(s.mqtt, spec) })
		}
	}
	return out
}

// deviceMethod reports whether the map of device declares a method that
// commands may call (OPC UA `methods:`): the command path's check that a
// call is declared, as `write:` is for a point.
func deviceMethod(cfg *config.Config, device, name string) bool {
	for _, dev := range cfg.Devices {
		if dev.Name != device {
			continue
		}
		if spec, ok := dev.Spec.(opcua.Device); ok {
			for _, m := range spec.Config.Methods {
				if m.Name == name {
					return true
				}
			}
		}
	}
	return false
}

// groupKey prefixes a driver's group key with its protocol, unless the
// driver already did ("mqtt tcp://…").
func groupKey(protocol, key string) string {
	if strings.HasPrefix(key, protocol+" ") {
		return key
	}
	return protocol + " " + key
}

func (d *Gateway) newDriver(key string, spec groupSpec) (ferry.Driver, error) {
	drv, err := newGroupDriver(d.cfg, key, spec, d.log.With("driver", spec.protocol), d.drvM, false)
	if err == nil {
		d.attachAlarms(drv) // OPC UA conditions: alarms.go
	}
	return drv, err
}

// newGroupDriver builds the Driver of one device group: the explicit
// switch over protocols (no registry). A zero m and a nil log build a
// driver for checking only. A probe driver (ferry read) leaves no trace a
// running gateway could trip on: an MQTT probe connects with a client id
// and a clean session of its own.
func newGroupDriver(cfg *config.Config, key string, spec groupSpec, log *slog.Logger, m driverMetrics, probe bool) (ferry.Driver, error) {
	switch spec.protocol {
	case "modbus":
		return modbus.New(spec.modbus, modbus.Options{Logger: log, Metrics: m.modbus, Devices: m.devices})
	case "opcua":
		return opcua.New(spec.opcua, opcua.Options{Logger: log, Metrics: m.opcua, Devices: m.devices,
			DataDir: cfg.DataDir, Gateway: cfg.Gateway.ID})
	case "mqtt":
		return mqtt.New(spec.mqtt, mqtt.Options{Logger: log, Metrics: m.mqtt, Devices: m.devices, Gateway: cfg.Gateway.ID, Probe: probe})
	}
	return nil, fmt.Errorf("group %s: unknown protocol %q", key, spec.protocol)
}

func (d *Gateway) startGroup(ctx context.Context, g *group) {
	log := d.log.With("group", g.key)
	g.run = start(ctx, func(ctx context.Context) error {
		err := g.drv.Run(ctx, d.pipe.Emit)
		if err != nil && ctx.Err() == nil {
			// Run returns an error only when the driver cannot run at
			// all; the other groups carry on.
			log.Error("driver stopped", "err", err)
		}
		return err
	})
}

func (d *Gateway) stopGroup(g *group, timeout time.Duration) {
	if g.run == nil {
		return
	}
	if !g.run.stop(timeout) {
		d.log.Error("driver did not stop in time", "group", g.key, "timeout", timeout)
	}
}

// buildChangedGroups returns the groups of cfg, without starting any: the
// new and changed ones with their driver built, the unchanged ones (same
// digest as the running group) with none. It reads the points of cfg; the
// groups it returns do not keep them.
func (d *Gateway) buildChangedGroups(cfg *config.Config) (map[string]*group, error) {
	next := map[string]*group{}
	for key, spec := range groupSpecs(cfg) {
		g := newGroup(key, spec, nil)
		if running, ok := d.groups[key]; !ok || running.digest != g.digest {
			drv, err := d.newDriver(key, spec)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			g.drv = drv
		}
		next[key] = g
	}
	return next, nil
}

// syncGroups stops the groups that are gone or changed and starts the new
// and changed ones of next (from buildChangedGroups); unchanged groups keep
// running (and connected). The series of devices that are gone are removed
// from /metrics. It reads only the device names of old and cfg, so cfg
// may have dropped its points.
func (d *Gateway) syncGroups(old, cfg *config.Config, next map[string]*group, timeout time.Duration) {
	var stopped, started []string
	for key, g := range d.groups {
		if n, ok := next[key]; ok && n.digest == g.digest {
			continue
		}
		d.stopGroup(g, timeout)
		if _, still := next[key]; !still {
			forgetGroup(g)
		}
		delete(d.groups, key)
		stopped = append(stopped, key)
	}
	// Before the new drivers create their series: a device that moved to
	// another group keeps its name and gets them back.
	d.forgetRemoved(old, cfg)
	for key, g := range next {
		if _, ok := d.groups[key]; ok {
			continue
		}
		d.groups[key] = g
		d.startGroup(d.runCtx, g)
		started = append(started, key)
	}
	d.publishDrivers()
	if len(stopped)+len(started) > 0 {
		sort.Strings(stopped)
		sort.Strings(started)
		d.log.Info("device groups changed", "stopped", stopped, "started", started)
	}
}

// forgetRemoved removes the device series of the devices old has and cfg
// has not, so that a decommissioned PLC does not stay on /metrics (and in
// a FerryDeviceDown alert) forever.
func (d *Gateway) forgetRemoved(old, cfg *config.Config) {
	now := map[string]bool{}
	for _, dev := range cfg.Devices {
		now[dev.Name] = true
	}
	for _, dev := range old.Devices {
		if !now[dev.Name] {
			d.forgetDevice(dev.Protocol, dev.Name)
		}
	}
}

// publishDrivers publishes the running drivers for deviceStatus. Call it
// with d.mu held after d.groups changed.
func (d *Gateway) publishDrivers() {
	keys := make([]string, 0, len(d.groups))
	for k := range d.groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	drivers := make([]ferry.Driver, 0, len(keys))
	for _, k := range keys {
		drivers = append(drivers, d.groups[k].drv)
	}
	d.curDrivers.Store(&drivers)
	d.publishDeviceDrivers()
}

// deviceStatus lists every device's status, sorted by name.
func (d *Gateway) deviceStatus() []ferry.DeviceStatus {
	var out []ferry.DeviceStatus
	if drivers := d.curDrivers.Load(); drivers != nil {
		for _, drv := range *drivers {
			if r, ok := drv.(ferry.StatusReporter); ok {
				out = append(out, r.DeviceStatus()...)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}

// forgetGroup removes the series of a group that is gone: a link that is
// gone takes its Modbus series with it (a changed link keeps them: its new
// driver goes on counting in them).
func forgetGroup(g *group) {
	if drv, ok := g.drv.(*modbus.Driver); ok {
		drv.Forget()
	}
}

// forgetDevice removes the series of a device that is gone.
func (d *Gateway) forgetDevice(protocol, name string) {
	d.drvM.devices.Forget(protocol, name)
	if protocol == "opcua" {
		d.drvM.opcua.Forget(name)
	}
}
