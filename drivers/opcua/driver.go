package opcua

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/backoff"
	"github.com/ferry-edge/ferry/internal/devstat"
)

var _ ferry.Driver = (*Driver)(nil)
var _ ferry.StatusReporter = (*Driver)(nil)

// Options are what a Driver needs besides its devices.
type Options struct {
	Logger  *slog.Logger     // already scoped (log.With("driver", "opcua")); nil: discard
	Metrics *Metrics         // OPC UA series; nil: unregistered
	Devices *devstat.Metrics // shared device series; nil: unregistered
	Now     func() time.Time // nil: time.Now
	// DataDir holds the PKI (<DataDir>/pki). Required.
	DataDir string
	// ApplicationURI is ferry's OPC UA application URI, written into the
	// generated certificate. Default "urn:ferry:<Gateway>".
	ApplicationURI string
	// Gateway is the gateway id, used in the default ApplicationURI, the
	// certificate's subject and the session names.
	Gateway string
}

// Driver reads the devices of one group (one device: GroupKey is the
// device name) over OPC UA.
type Driver struct {
	opts   Options
	log    *slog.Logger
	pki    *PKI
	appURI string
	devs   []*device

	idMu sync.Mutex
	id   *Identity

	// sink receives condition events (events.go); nil: none.
	sink EventSink
}

// GroupKey returns the key cmd/ferry groups devices by: every OPC UA
// device runs in its own Driver, with its own session.
func GroupKey(d *Device) string { return d.Name }

// New validates the devices and returns a Driver. It does no I/O.
func New(devices []Device, opts Options) (*Driver, error) {
	if len(devices) == 0 {
		return nil, errors.New("opcua: no devices")
	}
	if opts.DataDir == "" {
		return nil, errors.New("opcua: Options.DataDir is required (the PKI lives in <data_dir>/pki)")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.Devices == nil {
		opts.Devices = devstat.NewMetrics(nil)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	appURI := opts.ApplicationURI
	if appURI == "" {
		name := opts.Gateway
		if name == "" {
			name, _ = os.Hostname()
		}
		if name == "" {
			name = "gateway"
		}
		appURI = "urn:ferry:" + name
	}
	d := &Driver{opts: opts, log: opts.Logger, pki: NewPKI(opts.DataDir), appURI: appURI}
	d.pki.Now = opts.Now
	seen := map[string]bool{}
	for i := range devices {
		dev := devices[i]
		if err := dev.Validate(); err != nil {
			return nil, fmt.Errorf("opcua: device %s: %w", dev.Name, err)
		}
		if dev.Name == "" || seen[dev.Name] {
			return nil, fmt.Errorf("opcua: device name %q is empty or repeated", dev.Name)
		}
		seen[dev.Name] = true
		d.devs = append(d.devs, newDevice(d, dev))
	}
	return d, nil
}

// Run connects every device and emits its scans until ctx ends. It
// returns nil then; it never gives up on a device.
func (d *Driver) Run(ctx context.Context, emit ferry.EmitFunc) error {
	for _, dv := range d.devs {
		if dv.cfg.Config.SecurityPolicy != "None" {
			// Make the application certificate at the first start, so
			// that it can be given to the servers' administrators. A
			// failure is reported by the connect that needs it.
			_, _ = d.identity()
			break
		}
	}
	var wg sync.WaitGroup
	for _, dv := range d.devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dv.run(ctx, emit)
		}()
	}
	wg.Wait()
	return nil
}

// DeviceStatus reports every device's state.
func (d *Driver) DeviceStatus() []ferry.DeviceStatus {
	out := make([]ferry.DeviceStatus, len(d.devs))
	for i, dv := range d.devs {
		out[i] = dv.st.Status()
	}
	return out
}

// identity returns the gateway's certificate, creating it on first use.
func (d *Driver) identity() (*Identity, error) {
	d.idMu.Lock()
	defer d.idMu.Unlock()
	if d.id != nil {
		return d.id, nil
	}
	id, err := d.pki.Own(d.appURI, d.opts.Gateway)
	if err != nil {
		return nil, fmt.Errorf("%w in %s: %w", errOwnCert, d.pki.Dir, err)
	}
	if id.ApplicationURI != d.appURI {
		d.log.Warn("application certificate has another application URI; keeping it (the servers trust it). Remove the pki/own directory to make a new one",
			"cert", id.Path, "cert_uri", id.ApplicationURI, "configured_uri", d.appURI)
	}
	if left := id.NotAfter.Sub(d.opts.Now()); left < 60*24*time.Hour {
		d.log.Warn("application certificate expires soon; remove the pki/own directory to make a new one and trust it on the servers again",
			"cert", id.Path, "not_after", id.NotAfter)
	}
	d.id = id
	return id, nil
}

// point is one configured point and its state in the current session.
type point struct {
	name     string
	id       NodeID
	index    int // array element, -1 for a scalar
	deadband Deadband
	// failed is why the point cannot be read in this session (node
	// unresolved or refused by the server); "" when it can.
	failed string
	// logged is the last node problem logged, so that it is logged once.
	logged string
	// writable is set when the point has a write: spec.
	writable bool
}

// device is one OPC UA server and its points.
type device struct {
	drv    *Driver
	cfg    Device
	log    *slog.Logger
	st     *devstat.Device
	m      *deviceMetrics
	now    func() time.Time
	points []*point
	names  []string

	warnedInsecure bool
	everConnected  bool
	// readLimit and itemLimit are batch sizes learned from requests the
	// server refused as too large (0: none learned).
	readLimit, itemLimit int

	// live is the session writes and calls use (write.go); methods are
	// the declared methods (call.go).
	live    liveSession
	methods []*method
	// eventsLogged is the event monitoring problem last logged
	// (events_session.go).
	eventsLogged string
	// minWait is the publish wait a server's revised keep-alive period
	// asked for in an earlier session (0: the configured request timeout).
	minWait time.Duration
}

func newDevice(d *Driver, dev Device) *device {
	log := d.log.With("device", dev.Name)
	dv := &device{
		drv: d, cfg: dev, log: log, now: d.opts.Now,
		st: d.opts.Devices.Device("opcua", dev.Name, dev.Config.Endpoint, log, d.opts.Now),
		m:  d.opts.Metrics.device(dev.Name),
	}
	for i := range dev.Points {
		p := &dev.Points[i]
		id, _ := ParseNodeID(p.Node) // validated
		pt := &point{name: p.Name, id: id, index: -1, deadband: dev.Config.Deadband, writable: p.Write != nil}
		if p.Index != nil {
			pt.index = *p.Index
		}
		if p.Deadband != nil {
			pt.deadband = *p.Deadband
		}
		dv.points = append(dv.points, pt)
		dv.names = append(dv.names, p.Name)
	}
	for i := range dev.Config.Methods {
		dv.methods = append(dv.methods, newMethod(&dev.Config.Methods[i]))
	}
	return dv
}

// run keeps a session to the server until ctx ends: connect, read or
// subscribe, and after a failure emit Bad samples at the interval while
// retrying with backoff.
func (dv *device) run(ctx context.Context, emit ferry.EmitFunc) {
	c := &dv.cfg.Config
	if c.SecurityPolicy == "None" {
		dv.warnedInsecure = true
		dv.log.Warn("security policy None: values and credentials travel unsigned and unencrypted (allow_insecure is set)",
			"endpoint", c.Endpoint)
	}
	b := backoff.Backoff{Min: 200 * time.Millisecond, Max: 30 * time.Second}
	for ctx.Err() == nil {
		start := dv.now()
		up, err := dv.guardedSession(ctx, emit)
		if ctx.Err() != nil {
			return
		}
		if up && dv.now().Sub(start) > time.Minute {
			b.Reset() // a session that worked for a while: retry quickly
		}
		reason := dv.fail(err)
		dv.emitBad(emit, reason)
		dv.wait(ctx, &b, emit, reason)
	}
}

// fail records a failed connect or a lost session and returns the reason
// the Bad samples carry.
func (dv *device) fail(err error) string {
	reason := reasonOf(err)
	dv.m.sessionError(reason)
	dv.m.items.Set(0)
	var ce *CertificateError
	if errors.As(err, &ce) {
		dv.m.rejected.Inc()
	}
	dv.st.Lost(reasonedError{err, reason})
	if dv.everConnected && transport(reason) {
		return ferry.ReasonDisconnected
	}
	return reason
}

// wait sleeps for the next backoff delay, emitting Bad samples at the
// interval meanwhile so that stale and quality rules see the device.
func (dv *device) wait(ctx context.Context, b *backoff.Backoff, emit ferry.EmitFunc, reason string) {
	delay := time.NewTimer(b.Next())
	defer delay.Stop()
	tick := time.NewTicker(dv.cfg.Config.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-delay.C:
			return
		case <-tick.C:
			dv.emitBad(emit, reason)
		}
	}
}

func (dv *device) emitBad(emit ferry.EmitFunc, reason string) {
	if len(dv.names) == 0 {
		return
	}
	now := dv.now()
	samples := devstat.BadSamples(make([]ferry.Sample, 0, len(dv.names)), dv.cfg.Name, dv.names, reason, now)
	dv.st.Reported(samples)
	emit(ferry.Scan{Device: dv.cfg.Name, Time: now, Samples: samples})
}

// notePoint logs a node problem of a point once per change; a point that
// recovers is logged at Info.
func (dv *device) notePoint(p *point, q ferry.Quality) {
	reason := ""
	if q.Status != ferry.Good && nodeProblem(q.Reason) {
		reason = q.Reason
	}
	if reason == p.logged {
		return
	}
	switch {
	case reason == "":
		dv.log.Info("point readable again", "point", p.name, "node", p.id.String())
	default:
		dv.log.Warn("point cannot be read; the other points are not affected", "point", p.name, "node", p.id.String(), "reason", reason)
	}
	p.logged = reason
}
