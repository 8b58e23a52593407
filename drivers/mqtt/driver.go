package mqtt

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-edge/ferry/internal/tlsfile"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/backoff"
	"github.com/ferry-edge/ferry/internal/devstat"
)

var _ ferry.Driver = (*Driver)(nil)
var _ ferry.StatusReporter = (*Driver)(nil)

// Options configures a Driver.
type Options struct {
	Logger  *slog.Logger     // already scoped, e.g. log.With("driver", "mqtt")
	Metrics *Metrics         // this protocol's series; nil: unregistered ones
	Devices *devstat.Metrics // the shared device series; nil: unregistered ones
	Now     func() time.Time // nil: time.Now
	// Gateway is the gateway id; the default client id is
	// "ferry-<gateway>-<8 hex digits of the broker URL and username>".
	Gateway string
	// Backoff paces reconnects (zero value: 100ms doubling to 30s, ±20%).
	Backoff backoff.Backoff
	// DrainTimeout bounds how long Run, once ctx ends, waits for the scans
	// it emitted to be committed so that their messages can still be
	// acknowledged on this connection (default 2s). What is not committed
	// by then is acknowledged by nobody, and the broker sends it again on
	// the next start.
	DrainTimeout time.Duration
	// Probe connects as a passer-by, for `ferry read`: a client id of its
	// own ("<client id>-read-<pid>") and a clean session, so that it never
	// takes over the running gateway's session nor leaves one behind.
	Probe bool
}

// maxSeenNames bounds how many device names a template device remembers
// (for the Bad samples it emits when the connection is lost).
const maxSeenNames = 256

const (
	defaultDrainTimeout = 2 * time.Second
	disconnectQuiesce   = 250 // ms
)

// Driver subscribes to one MQTT broker connection on behalf of the devices
// of one group (see GroupKey) and emits one scan per message and device.
type Driver struct {
	opts     Options
	log      *slog.Logger
	now      func() time.Time
	cfg      Config // the connection settings, shared by every device
	clientID string
	brokers  []string // broker, then the fallbacks: the order paho tries them
	devices  []*device
	generic  []*device // json and value devices, matched by topic
	nodes    map[spNodeKey]*spNode
	filters  map[string]byte      // subscription filter → QoS
	byFilter map[string][]*device // devices behind each filter
	cm       *clientMetrics
	running  atomic.Bool

	// mu guards the Sparkplug state, the template devices' seen names and
	// every device's bad flag: the router goroutine of the connection and
	// Run touch them.
	mu sync.Mutex

	// Owned by Run.
	refused  map[string]bool // filters the broker refused
	resyncBo backoff.Backoff
}

// device is one configured device, compiled.
type device struct {
	name     string
	cfg      Config
	points   []point
	names    []string // point names
	pattern  *topicPattern
	tmpl     *template
	timePath jsonPath
	top      *topIndex // the first keys of the points' paths (json)
	byMetric map[string]int
	spDevice string
	node     *spNode
	stat     *devstat.Device
	m        *deviceMetrics
	seen     map[string]struct{} // template devices: names seen (under mu)
	bad      bool                // Bad samples emitted since the last connect (under mu)
}

type point struct {
	cfg  Point
	path jsonPath
}

// GroupKey returns the key of the connection d uses: devices with the same
// broker URL, username and client id share one MQTT connection (and must
// then agree on fallback_brokers, password, tls, keepalive and
// connect_timeout). The fallback brokers are not part of the key: two
// connections with the same client id would take the session from each
// other, so devices that differ only in them are refused instead.
func GroupKey(d *Device) string {
	return fmt.Sprintf("mqtt %s user=%q client_id=%q", d.Config.Broker, d.Config.Username, d.Config.ClientID)
}

// DefaultClientID returns the client id used when client_id is not set.
// It depends on broker and username only: adding fallback brokers keeps
// the id, and with it the session the primary broker holds for ferry (a
// cluster shares sessions by client id).
func DefaultClientID(gateway string, c *Config) string {
	h := sha256.Sum256([]byte(c.Broker + "\x00" + c.Username))
	return "ferry-" + gateway + "-" + hex.EncodeToString(h[:4])
}

// New validates the devices of one group and prepares the driver. It does
// no I/O: certificates are read at each connection attempt, so that
// renewed files are picked up.
func New(devices []Device, opts Options) (*Driver, error) {
	if len(devices) == 0 {
		return nil, fmt.Errorf("mqtt: %w: no devices", ferry.ErrInvalidConfig)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.Devices == nil {
		opts.Devices = devstat.NewMetrics(nil)
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = defaultDrainTimeout
	}
	first := &devices[0]
	key := GroupKey(first)
	for i := range devices {
		dv := &devices[i]
		if err := dv.Validate(); err != nil {
			return nil, fmt.Errorf("mqtt device %s: %w: %w", dv.Name, ferry.ErrInvalidConfig, err)
		}
		if k := GroupKey(dv); k != key {
			return nil, fmt.Errorf("mqtt device %s: %w: connection %s differs from device %s's %s (group devices by GroupKey)", dv.Name, ferry.ErrInvalidConfig, k, first.Name, key)
		}
		a, b := dv.Config.connSettings(), first.Config.connSettings()
		for j := range a {
			if a[j].val != b[j].val {
				return nil, fmt.Errorf("mqtt devices %s and %s: %w: they share a connection (broker %s, username %q, client_id %q) but differ in mqtt.%s; give them the same settings or distinct client_id",
					first.Name, dv.Name, ferry.ErrInvalidConfig, first.Config.Broker, first.Config.Username, first.Config.ClientID, a[j].key)
			}
		}
	}
	d := &Driver{
		opts:     opts,
		log:      opts.Logger,
		now:      opts.Now,
		cfg:      first.Config,
		clientID: first.Config.ClientID,
		brokers:  first.Config.brokers(),
		nodes:    map[spNodeKey]*spNode{},
		filters:  map[string]byte{},
		byFilter: map[string][]*device{},
		refused:  map[string]bool{},
		resyncBo: backoff.Backoff{Min: time.Second, Max: time.Minute},
	}
	if d.clientID == "" {
		if opts.Gateway == "" {
			return nil, fmt.Errorf("mqtt: %w: set mqtt.client_id or the gateway id (Options.Gateway)", ferry.ErrInvalidConfig)
		}
		d.clientID = DefaultClientID(opts.Gateway, &d.cfg)
	}
	if opts.Probe {
		d.clientID += "-read-" + strconv.Itoa(os.Getpid())
	}
	d.log = d.log.With("client_id", d.clientID)
	d.cm = opts.Metrics.client(d.clientID)
	d.cm.broker.Set(-1)
	for i := range devices {
		dv, err := d.compile(&devices[i])
		if err != nil {
			return nil, fmt.Errorf("mqtt device %s: %w: %w", devices[i].Name, ferry.ErrInvalidConfig, err)
		}
		d.devices = append(d.devices, dv)
	}
	return d, nil
}

func (d *Driver) compile(cd *Device) (*device, error) {
	c := cd.Config
	dv := &device{name: cd.Name, cfg: c, m: d.opts.Metrics.device(cd.Name)}
	for _, p := range cd.Points {
		pt := point{cfg: p}
		if p.Path != "" {
			path, err := parsePath(p.Path)
			if err != nil {
				return nil, err
			}
			pt.path = path
		}
		dv.points = append(dv.points, pt)
		dv.names = append(dv.names, p.Name)
	}
	if c.Format == FormatJSON {
		paths := make([]jsonPath, len(dv.points))
		for i := range dv.points {
			paths[i] = dv.points[i].path
		}
		dv.top = newTopIndex(paths)
	}
	var filter, endpoint string
	if c.Format == FormatSparkplug {
		sp := c.Sparkplug
		key := spNodeKey{sp.GroupID, sp.EdgeNode}
		node := d.nodes[key]
		if node == nil {
			node = &spNode{key: key, filter: spNamespace + "/" + sp.GroupID + "/+/" + sp.EdgeNode + "/#",
				name: sp.GroupID + "/" + sp.EdgeNode, askRebirth: sp.Rebirth}
			d.nodes[key] = node
		} else if node.askRebirth != sp.Rebirth {
			return nil, fmt.Errorf("mqtt.sparkplug.rebirth: device %s stands for the same edge node %s and sets it to %v; devices of one edge node must agree", node.devs[0].name, node.name, node.askRebirth)
		}
		node.devs = append(node.devs, dv)
		dv.node, dv.spDevice = node, sp.Device
		dv.byMetric = map[string]int{}
		for i, p := range cd.Points {
			dv.byMetric[p.Metric] = i
		}
		filter = node.filter
		endpoint = strings.Join(d.brokers, ",") + " sparkplug " + sp.GroupID + "/" + sp.EdgeNode
		if sp.Device != "" {
			endpoint += "/" + sp.Device
		}
	} else {
		pat, err := compileTopic(c.Topic)
		if err != nil {
			return nil, err
		}
		tmpl, err := compileTemplate(c.Device, pat)
		if err != nil {
			return nil, err
		}
		dv.pattern, dv.tmpl = pat, tmpl
		if tmpl != nil {
			dv.seen = map[string]struct{}{}
		}
		if c.Format == FormatJSON && c.Time.Path != "" {
			if dv.timePath, err = parsePath(c.Time.Path); err != nil {
				return nil, err
			}
		}
		filter = pat.filter
		endpoint = strings.Join(d.brokers, ",") + " " + c.Topic
		d.generic = append(d.generic, dv)
	}
	if q, ok := d.filters[filter]; !ok || c.QoS > q {
		d.filters[filter] = c.QoS
	}
	d.byFilter[filter] = append(d.byFilter[filter], dv)
	dv.stat = d.opts.Devices.Device("mqtt", cd.Name, endpoint, d.opts.Logger.With("device", cd.Name), d.now)
	return dv, nil
}

// ClientID returns the MQTT client id the driver connects with.
func (d *Driver) ClientID() string { return d.clientID }

// DeviceStatus reports every device of the driver.
func (d *Driver) DeviceStatus() []ferry.DeviceStatus {
	out := make([]ferry.DeviceStatus, len(d.devices))
	for i, dv := range d.devices {
		out[i] = dv.stat.Status()
	}
	return out
}

// errResync ends a session so that the broker redelivers withheld
// messages on the next connection.
var errResync = errors.New("reconnect for redelivery")

// Run connects, subscribes and emits scans until ctx ends; it reconnects
// with backoff when the connection fails. It returns nil once ctx ends and
// the connection is closed, or an error when it is already running.
func (d *Driver) Run(ctx context.Context, emit ferry.EmitFunc) error {
	if !d.running.CompareAndSwap(false, true) {
		return fmt.Errorf("mqtt client %s: already running", d.clientID)
	}
	defer d.running.Store(false)
	bo := d.opts.Backoff
	// The brokers ferry has subscribed on in this Run: on the first
	// connection to each, every filter is subscribed even when the broker
	// has a session (it may be from an older configuration).
	subscribedOn := map[string]bool{}
	for {
		s := &session{d: d, emit: emit, subscribedOn: subscribedOn}
		err := s.run(ctx)
		if s.subscribed {
			subscribedOn[s.broker] = true
		}
		d.cm.broker.Set(-1)
		if ctx.Err() != nil {
			return nil
		}
		var wait time.Duration
		switch {
		case errors.Is(err, errResync):
			// The session waited resyncBo's delay before leaving.
			d.cm.resyncs.Inc()
			d.resyncBo.Next()
			d.log.Debug("reconnecting so that withheld messages are sent again")
		default:
			if s.connected {
				bo.Reset()
			}
			d.lost(err, emit)
			wait = bo.Next()
		}
		if s.connected && !s.withheld.Load() && s.acked.Load() {
			d.resyncBo.Reset()
		}
		if wait == 0 {
			continue
		}
		if !backoff.Sleep(ctx, wait) {
			return nil
		}
	}
}

// lost records a failed or lost connection for every device and emits,
// once per outage, a Bad sample for each of their points.
func (d *Driver) lost(err error, emit ferry.EmitFunc) {
	now := d.now()
	for _, dv := range d.devices {
		reason := dv.stat.Lost(err)
		d.mu.Lock()
		if dv.bad {
			d.mu.Unlock()
			continue
		}
		dv.bad = true
		var names []string
		if dv.tmpl == nil {
			names = []string{dv.name}
		} else {
			for n := range dv.seen {
				names = append(names, n)
			}
			sort.Strings(names)
		}
		d.mu.Unlock()
		for _, n := range names {
			samples := devstat.BadSamples(nil, n, dv.names, reason, now)
			dv.stat.Reported(samples)
			emit(ferry.Scan{Device: n, Time: now, Samples: samples})
		}
	}
}

// session is one connection.
type session struct {
	d            *Driver
	emit         ferry.EmitFunc
	subscribedOn map[string]bool // brokers subscribed on in this Run (owned by Run)
	first        bool            // first connection to this broker in this Run: subscribe even if the session is present
	broker       string          // the broker connected to

	client   paho.Client
	acks     *ackQueue
	rebirths chan rebirthRequest // to the publisher goroutine; nil: none
	closing  atomic.Bool
	lostCh   chan error
	resync   chan struct{}

	connected, subscribed bool
	withheld, acked       atomic.Bool

	dialMu    sync.Mutex
	stopWatch func() bool
	dialed    string // the broker of the last connection opened

	// Scratch for the router goroutine.
	caps   [maxCaptures]span
	sp     spPayload
	out    []routed
	keyBuf []byte
	starts []int // the top-level index of a JSON payload (jsonindex.go)
}

// run makes one connection and serves it until it fails or ctx ends.
func (s *session) run(ctx context.Context) error {
	d := s.d
	s.lostCh = make(chan error, 1)
	s.resync = make(chan struct{}, 1)
	for _, n := range d.nodes {
		if n.askRebirth {
			s.rebirths = make(chan rebirthRequest, len(d.nodes))
			break
		}
	}
	s.acks = newAckQueue(d.cm)

	opts, err := d.clientOptions(ctx, s)
	if err != nil {
		return err
	}
	s.client = paho.NewClient(opts)
	tok := s.client.Connect()
	<-tok.Done() // bounded by connect_timeout; ctx closes the connection early
	s.dialMu.Lock()
	if s.stopWatch != nil {
		s.stopWatch()
	}
	s.dialMu.Unlock()
	if err := tok.Error(); err != nil {
		// paho has closed what it opened.
		return fmt.Errorf("connect to %s as %s: %w", strings.Join(d.brokers, ", "), d.clientID, err)
	}
	s.connected = true
	sessionPresent := tok.(*paho.ConnectToken).SessionPresent()
	s.dialMu.Lock()
	s.broker = s.dialed // the last connection opened is the one paho kept
	s.dialMu.Unlock()
	s.first = !s.subscribedOn[s.broker]
	idx := d.brokerIndex(s.broker)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.acks.run(stop, func() {
			s.withheld.Store(true)
			select {
			case s.resync <- struct{}{}:
			default:
			}
		}, &s.acked)
	}()
	if s.rebirths != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.publishRebirths(stop)
		}()
	}
	end := func(quiesce uint) {
		close(stop)
		if s.client.IsConnectionOpen() {
			s.client.Disconnect(quiesce) // waits for paho's goroutines
		}
		wg.Wait()
		s.acks.close()
	}

	// Subscribe. On the first connection of a Run every filter (the
	// configuration may have changed since the session was made); later,
	// only when the broker lost the session, plus whatever it refused.
	want := map[string]byte{}
	for f, q := range d.filters {
		if s.first || !sessionPresent || d.refused[f] {
			want[f] = q
		}
	}
	if err := s.subscribe(ctx, want); err != nil {
		end(0)
		return err
	}
	s.subscribed = true
	d.cm.broker.Set(float64(idx))
	if len(d.brokers) > 1 {
		// Which broker of the list: the devices' own "connected" and
		// "connection back" lines name the whole list.
		d.log.Info("broker connected", "broker", s.broker, "fallback", idx > 0)
	}
	d.markUp()
	d.log.Debug("subscribed", "session_present", sessionPresent, "filters", len(want))

	var resyncT, resubT <-chan time.Time
	resubBo := d.opts.Backoff
	if len(d.refused) > 0 {
		resubT = time.After(resubBo.Next())
	}
	for {
		select {
		case <-ctx.Done():
			s.drain()
			end(disconnectQuiesce)
			return nil
		case err := <-s.lostCh:
			end(0)
			return fmt.Errorf("connection to %s lost: %w", s.broker, err)
		case <-s.resync:
			if resyncT == nil {
				resyncT = time.After(d.resyncBo.Peek())
			}
		case <-resyncT:
			s.drain()
			end(disconnectQuiesce)
			return errResync
		case <-resubT:
			retry := map[string]byte{}
			for f := range d.refused {
				retry[f] = d.filters[f]
			}
			if err := s.subscribe(ctx, retry); err != nil {
				end(0)
				return err
			}
			resubT = nil
			if len(d.refused) > 0 {
				resubT = time.After(resubBo.Next())
			}
			d.markUp()
		}
	}
}

// rebirthRequest is a rebirth NCMD to publish.
type rebirthRequest struct {
	node   spNodeKey
	name   string // group/edge_node
	reason string // why: data before birth, unknown alias, seq gap
	first  bool   // the first since the node's last NBIRTH: logged at Info
	ms     uint64 // the payload's timestamp
}

// requestRebirth hands a request to the publisher goroutine without
// blocking the router (paho forbids publishing from a message handler).
// A request that does not fit is dropped: one per node is already queued.
func (s *session) requestRebirth(r rebirthRequest) {
	select {
	case s.rebirths <- r:
	default:
	}
}

// publishRebirths publishes the rebirth requests, QoS 0, not retained,
// until stop is closed.
func (s *session) publishRebirths(stop <-chan struct{}) {
	d := s.d
	for {
		var r rebirthRequest
		select {
		case <-stop:
			return
		case r = <-s.rebirths:
		}
		topic := rebirthTopic(r.node)
		tok := s.client.Publish(topic, 0, false, appendRebirthRequest(nil, r.ms))
		timer := time.NewTimer(d.cfg.ConnectTimeout)
		var err error
		select {
		case <-tok.Done():
			err = tok.Error()
		case <-timer.C:
			err = fmt.Errorf("not written within %v: %w", d.cfg.ConnectTimeout, os.ErrDeadlineExceeded)
		case <-stop:
			err = errors.New("connection closing")
		}
		timer.Stop()
		d.cm.rebirth(r.name, err)
		switch {
		case err != nil:
			d.log.Debug("sparkplug rebirth request not sent", "node", r.name, "topic", topic, "err", err)
		case r.first:
			d.log.Info("sparkplug rebirth requested", "node", r.name, "reason", r.reason, "topic", topic)
		default:
			d.log.Debug("sparkplug rebirth requested again", "node", r.name, "reason", r.reason)
		}
	}
}

// drain stops taking messages and waits, up to DrainTimeout, until every
// message received so far is acknowledged or withheld.
func (s *session) drain() {
	s.closing.Store(true)
	deadline := time.NewTimer(s.d.opts.DrainTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for s.acks.outstanding() > 0 {
		select {
		case <-deadline.C:
			s.d.log.Debug("stopping with unacknowledged messages; the broker sends them again", "pending", s.acks.outstanding())
			return
		case <-s.lostCh:
			return
		case <-tick.C:
		}
	}
}

// subscribeTries is how often subscribe asks before it reports a filter
// refused, and subscribeRetry the pause between: some brokers (mochi)
// refuse a SUBSCRIBE whose packet id equals one of their own unacknowledged
// messages to ferry, which happens right after a reconnect with a session;
// the next try carries another id, and the pause lets those messages be
// committed and acknowledged.
const (
	subscribeTries = 3
	subscribeRetry = 100 * time.Millisecond
)

// subscribe subscribes to filters and records what the broker refused.
func (s *session) subscribe(ctx context.Context, filters map[string]byte) error {
	d := s.d
	var refused map[string]byte
	for try := 1; len(filters) > 0; try++ {
		var err error
		if refused, err = s.subscribeOnce(ctx, filters); err != nil {
			return err
		}
		if len(refused) == 0 || try == subscribeTries {
			break
		}
		d.log.Debug("subscription refused, asking again", "filters", len(refused))
		t := time.NewTimer(subscribeRetry)
		select {
		case <-t.C:
		case err := <-s.lostCh:
			t.Stop()
			return fmt.Errorf("connection to %s lost while subscribing: %w", s.broker, err)
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		filters = refused
	}
	for f := range filters {
		if _, no := refused[f]; !no {
			delete(d.refused, f)
			continue
		}
		d.refused[f] = true
		err := fmt.Errorf("subscribe %q on %s: refused by the broker (check its ACL for user %q)", f, s.broker, d.cfg.Username)
		now := d.now()
		for _, dv := range d.byFilter[f] {
			dv.stat.Lost(err)
			d.mu.Lock()
			bad := dv.bad
			dv.bad = true
			d.mu.Unlock()
			if !bad && dv.tmpl == nil {
				s.emit(ferry.Scan{Device: dv.name, Time: now, Samples: devstat.BadSamples(nil, dv.name, dv.names, reasonSubRefused, now)})
			}
		}
	}
	return nil
}

// subscribeOnce sends one SUBSCRIBE and returns the filters refused.
func (s *session) subscribeOnce(ctx context.Context, filters map[string]byte) (map[string]byte, error) {
	d := s.d
	tok := s.client.SubscribeMultiple(filters, nil)
	timer := time.NewTimer(d.cfg.ConnectTimeout)
	defer timer.Stop()
	select {
	case <-tok.Done():
	case err := <-s.lostCh:
		return nil, fmt.Errorf("connection to %s lost while subscribing: %w", s.broker, err)
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-timer.C:
		return nil, fmt.Errorf("subscribe on %s: no SUBACK within %v: %w", s.broker, d.cfg.ConnectTimeout, os.ErrDeadlineExceeded)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("subscribe on %s: %w", s.broker, err)
	}
	res := tok.(*paho.SubscribeToken).Result()
	var refused map[string]byte
	for f, q := range filters {
		if code, ok := res[f]; !ok || code > 2 {
			if refused == nil {
				refused = map[string]byte{}
			}
			refused[f] = q
		}
	}
	return refused, nil
}

// markUp records that the json and value devices whose subscriptions
// stand are connected. Sparkplug devices are up when their node is born.
func (d *Driver) markUp() {
	for _, dv := range d.devices {
		if dv.node != nil || d.refusedDevice(dv) {
			continue
		}
		d.mu.Lock()
		dv.bad = false
		d.mu.Unlock()
		dv.stat.Connected()
	}
}

func (d *Driver) refusedDevice(dv *device) bool {
	if dv.pattern != nil {
		return d.refused[dv.pattern.filter]
	}
	return d.refused[dv.node.filter]
}

// clientOptions builds the paho options of one connection attempt.
func (d *Driver) clientOptions(ctx context.Context, s *session) (*paho.ClientOptions, error) {
	tc, err := d.tlsConfig()
	if err != nil {
		return nil, err
	}
	c := &d.cfg
	o := paho.NewClientOptions()
	for _, b := range d.brokers {
		o.AddBroker(b) // tried in order at each attempt
	}
	o.SetClientID(d.clientID)
	o.SetUsername(c.Username)
	o.SetPassword(c.Password.Reveal())
	o.SetProtocolVersion(4)
	o.SetCleanSession(d.opts.Probe) // the broker keeps subscriptions and unacknowledged messages (not a probe's)
	o.SetOrderMatters(true)         // one router goroutine: messages handled in order
	o.SetAutoAckDisabled(true)
	o.SetAutoReconnect(false) // Run reconnects, with the shared backoff
	o.SetConnectRetry(false)
	o.SetKeepAlive(c.KeepAlive)
	o.SetPingTimeout(min(c.KeepAlive, 10*time.Second))
	o.SetConnectTimeout(c.ConnectTimeout)
	o.SetWriteTimeout(c.ConnectTimeout)
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	o.SetDefaultPublishHandler(s.onMessage)
	o.SetConnectionNotificationHandler(func(_ paho.Client, n paho.ConnectionNotification) {
		if f, ok := n.(paho.ConnectionNotificationBrokerFailed); ok && len(d.brokers) > 1 {
			d.log.Debug("broker unreachable, trying the next", "broker", f.Broker.Redacted(), "err", f.Reason)
		}
	})
	o.SetConnectionLostHandler(func(_ paho.Client, err error) {
		select {
		case s.lostCh <- err:
		default:
		}
	})
	o.SetCustomOpenConnectionFn(func(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
		return s.open(ctx, uri, &o)
	})
	return o, nil
}

// open dials the broker. TCP and TLS dials follow ctx; the connection is
// closed if ctx ends before the MQTT handshake completes.
func (s *session) open(ctx context.Context, uri *url.URL, o *paho.ClientOptions) (net.Conn, error) {
	var conn net.Conn
	var err error
	dialer := &net.Dialer{Timeout: o.ConnectTimeout, KeepAlive: 30 * time.Second}
	tc := o.TLSConfig
	if tc != nil && s.d.cfg.TLS.ServerName == "" {
		// Each broker of the list is checked against its own host name.
		tc = tc.Clone()
		tc.ServerName = uri.Hostname()
	}
	switch uri.Scheme {
	case "ws", "wss":
		if uri.Scheme == "ws" {
			tc = nil
		}
		conn, err = paho.NewWebsocket(uri.String(), tc, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	case "ssl", "tls", "mqtts":
		td := &tls.Dialer{NetDialer: dialer, Config: tc}
		conn, err = td.DialContext(ctx, "tcp", uri.Host)
	default:
		conn, err = dialer.DialContext(ctx, "tcp", uri.Host)
	}
	if err != nil {
		return nil, err
	}
	s.dialMu.Lock()
	if s.stopWatch != nil {
		// An earlier broker of the list: its connection is closed.
		s.stopWatch()
	}
	s.stopWatch = context.AfterFunc(ctx, func() { conn.Close() })
	s.dialed = s.d.brokerURL(uri)
	s.dialMu.Unlock()
	return newBufferedConn(conn), nil
}

// brokerURL returns the configured broker URL that uri was parsed from.
func (d *Driver) brokerURL(uri *url.URL) string {
	s := uri.String()
	for _, b := range d.brokers {
		if u, err := url.Parse(b); err == nil && u.String() == s {
			return b
		}
	}
	return s
}

// brokerIndex returns the position of broker in the list (0: broker,
// 1…: the fallbacks).
func (d *Driver) brokerIndex(broker string) int {
	for i, b := range d.brokers {
		if b == broker {
			return i
		}
	}
	return -1
}

// tlsConfig reads the TLS files (nil for a plain connection).
func (d *Driver) tlsConfig() (*tls.Config, error) {
	c := &d.cfg
	if !isTLSBroker(c.Broker) {
		return nil, nil
	}
	u, _ := url.Parse(c.Broker)
	tc, err := tlsfile.Client(tlsfile.Files{CA: c.TLS.CA, Cert: c.TLS.Cert, Key: c.TLS.Key, ServerName: c.TLS.ServerName, Insecure: c.TLS.InsecureSkipVerify})
	if err != nil {
		return nil, fmt.Errorf("mqtt.tls: %w", err)
	}
	if tc.ServerName == "" {
		tc.ServerName = u.Hostname()
	}
	return tc, nil
}

// routed is one scan a message produced, with its device.
type routed struct {
	dv   *device
	scan ferry.Scan
}

// onMessage handles one message on the connection's router goroutine
// (paho calls it in order and waits for it; it never blocks).
func (s *session) onMessage(_ paho.Client, m paho.Message) {
	if s.closing.Load() {
		return // not acknowledged: the broker sends it again next time
	}
	d := s.d
	start := d.now()
	topic, payload := m.Topic(), m.Payload()
	var pa *pendingAck
	if m.Qos() > 0 {
		pa = s.acks.push(m)
	}
	var matched bool
	s.out, matched = d.route(topic, payload, start, s, s.out[:0])
	if !matched {
		d.cm.unmatched.Inc()
		d.log.Debug("message matches no device", "topic", topic)
	}
	keyed := m.Qos() > 0 || m.Retained()
	for i := range s.out {
		r := &s.out[i]
		if m.Duplicate() {
			r.dv.m.redeliveries.Inc()
		}
		if keyed {
			r.scan.Key = s.key(r.dv.name, r.scan.Device, topic, payload, messageID(m))
			r.scan.Redelivered = m.Duplicate() || m.Retained()
		}
		if pa != nil {
			pa.hold()
			r.scan.Done = pa.done
		}
		s.emit(r.scan)
		*r = routed{}
	}
	if pa != nil {
		pa.done(nil) // the handler's own reference
	}
}

// key is the scan's idempotency key: a digest of the configured device,
// the scan's device, the topic, the payload and the packet identifier
// (see messageID).
func (s *session) key(entry, dev, topic string, payload []byte, pid uint16) string {
	b := s.keyBuf[:0]
	b = append(b, byte(pid>>8), byte(pid))
	b = append(b, entry...)
	b = append(b, 0)
	b = append(b, dev...)
	b = append(b, 0)
	b = append(b, topic...)
	b = append(b, 0)
	b = append(b, payload...)
	s.keyBuf = b
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// messageID is the part of a message's identity the content does not
// give: its packet identifier, for a QoS 1/2 message that is not retained.
//
// A broker redelivers an unacknowledged message with DUP set and its
// original packet identifier (MQTT 3.1.1 §4.4), and does not reuse an
// identifier before the message that held it is acknowledged. So a
// redelivery has the key of its original, while a second message with
// the same payload, withheld and redelivered, has another: the dedupe
// drops the first kind only. Keyed by content alone, the dedupe dropped
// the second kind too (two identical readings stored as one).
//
// A wrong drop now needs the same topic, payload and identifier within
// the buffer's dedupe_window, the second message withheld: the broker
// must have cycled through the 65,535 identifiers in between (mochi and
// mosquitto assign them in turn), that is more than 65,535 messages to
// this client within the window (109 a second for 10 minutes).
//
// A retained message (sent again on each subscribe, with a new
// identifier) is the same message each time: its key is its content.
func messageID(m paho.Message) uint16 {
	if m.Qos() == 0 || m.Retained() {
		return 0
	}
	return m.MessageID()
}

// route decodes a message for every device it concerns.
func (d *Driver) route(topic string, payload []byte, now time.Time, s *session, out []routed) ([]routed, bool) {
	matched := false
	if len(d.nodes) > 0 {
		if t, ok := parseSparkplugTopic(topic); ok {
			if node := d.nodes[spNodeKey{t.group, t.node}]; node != nil {
				matched = true
				out = d.sparkplug(node, t, payload, now, s, out)
			}
		}
	}
	// The most specific topics win: those with the most literal levels.
	best := -1
	caps := s.caps[:]
	for _, dv := range d.generic {
		if dv.pattern.literals > best && dv.pattern.match(topic, caps) {
			best = dv.pattern.literals
		}
	}
	if best < 0 {
		return out, matched
	}
	for _, dv := range d.generic {
		if dv.pattern.literals == best && dv.pattern.match(topic, caps) {
			out = d.decode(dv, topic, payload, caps, now, &s.starts, out)
		}
	}
	return out, true
}

// problem is what was wrong with one point of a message.
type problem struct {
	point, reason string
}

// payloadError describes a message's problems for the Debug log and the
// device status.
type payloadError struct {
	topic    string
	problems []problem
}

func (e *payloadError) Error() string {
	b := []byte("topic " + strconv.Quote(e.topic) + ":")
	for i, p := range e.problems {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, ' ')
		if p.point != "" {
			b = append(b, p.point...)
			b = append(b, ": "...)
		}
		b = append(b, p.reason...)
	}
	return string(b)
}

// decode turns a message into one scan of a json or value device.
func (d *Driver) decode(dv *device, topic string, payload []byte, caps []span, now time.Time, starts *[]int, out []routed) []routed {
	name := dv.name
	if dv.tmpl != nil {
		if name = dv.tmpl.expand(topic, caps); name == "" {
			d.report(dv, topic, []problem{{reason: reasonBadTopic}})
			return out
		}
		d.mu.Lock()
		if _, ok := dv.seen[name]; !ok && len(dv.seen) < maxSeenNames {
			dv.seen[name] = struct{}{}
		}
		d.mu.Unlock()
	}
	samples := make([]ferry.Sample, 0, len(dv.points))
	var probs []problem
	switch {
	case len(payload) > int(dv.cfg.MaxPayload):
		samples = badAll(samples, dv, name, reasonTooLarge, now)
		probs = []problem{{reason: reasonTooLarge}}
	case dv.cfg.Format == FormatValue:
		samples, probs = dv.decodeValue(payload, name, now, samples)
	default:
		samples, probs = dv.decodeJSON(payload, name, now, samples, starts)
	}
	d.report(dv, topic, probs)
	dv.stat.Polled(now, d.now().Sub(now), samples)
	return append(out, routed{dv: dv, scan: ferry.Scan{Device: name, Time: now, Samples: samples}})
}

// report counts a message for dv and its problems (payload_errors_total
// counts each problem).
func (d *Driver) report(dv *device, topic string, probs []problem) {
	if len(probs) == 0 {
		dv.m.ok.Inc()
		return
	}
	dv.m.bad.Inc()
	for _, p := range probs {
		dv.m.payloadError(p.reason)
	}
	// One Debug line per message, listing every problem; the device's
	// error count takes the message under its first problem.
	dv.stat.Error(probs[0].reason, &payloadError{topic: topic, problems: probs})
}

// sparkplug handles a message of a Sparkplug edge node ferry knows.
func (d *Driver) sparkplug(node *spNode, t spTopic, payload []byte, now time.Time, s *session, out []routed) []routed {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := &s.sp
	// The ferry devices the message concerns.
	var devs []*device
	switch t.kind {
	case "NCMD", "DCMD":
		return out // commands to the node, from a host
	case "NBIRTH", "NDATA":
		for _, dv := range node.devs {
			if dv.spDevice == "" {
				devs = append(devs, dv)
			}
		}
	case "DBIRTH", "DDATA", "DDEATH":
		for _, dv := range node.devs {
			if dv.spDevice == t.device {
				devs = append(devs, dv)
			}
		}
	case "NDEATH":
		devs = node.devs
	}
	limit := node.devs[0].cfg.MaxPayload
	if len(payload) > int(limit) {
		for _, dv := range devs {
			d.report(dv, "", []problem{{reason: reasonTooLarge}})
		}
		return out
	}
	if err := decodeSparkplug(payload, p); err != nil {
		// Seq and aliases cannot be checked; every device of the node
		// hears of it, since its data may be in the lost message.
		for _, dv := range node.devs {
			dv.m.bad.Inc()
			dv.m.payloadError(reasonBadProtobuf)
			dv.stat.Error(reasonBadProtobuf, fmt.Errorf("%s %s/%s: %w", t.kind, t.group, t.node, err))
		}
		return out
	}
	if t.kind == "NBIRTH" {
		node.rebirth()
		node.born = true
		node.bdSeq, node.hasBdSeq = bdSeqOf(p)
		node.seqKnown = false
	}
	// Why the message cannot be fully resolved, for a rebirth request.
	var unresolved string
	if (t.kind == "NDATA" || t.kind == "DDATA") && len(devs) > 0 &&
		(!node.born || t.kind == "DDATA" && !node.dborn[t.device]) {
		unresolved = "data before birth"
	}
	if t.kind != "NDEATH" {
		if want, gap := node.checkSeq(p); gap {
			unresolved = reasonSeqGap
			for _, dv := range node.devs {
				dv.m.payloadError(reasonSeqGap)
				dv.stat.Error(reasonSeqGap, fmt.Errorf("%s %s/%s: seq %d, want %d (a message of the edge node was lost)", t.kind, t.group, t.node, p.seq, want))
			}
		}
	}
	switch t.kind {
	case "NBIRTH":
		node.asked = false
		node.learn("", p)
	case "DBIRTH":
		node.learn(t.device, p)
	case "NDEATH":
		if bd, ok := bdSeqOf(p); ok && node.hasBdSeq && bd != node.bdSeq {
			for _, dv := range node.devs {
				dv.m.ignored.Inc()
				dv.m.payloadError(reasonStaleDeath)
				dv.stat.Error(reasonStaleDeath, fmt.Errorf("NDEATH %s/%s: bdSeq %d is not the current session's %d", t.group, t.node, bd, node.bdSeq))
			}
			return out
		}
		node.born, node.seqKnown = false, false
		return d.spDeath(devs, p, now, reasonNodeDeath, fmt.Errorf("sparkplug edge node %s/%s died (NDEATH)", t.group, t.node), out)
	case "DDEATH":
		delete(node.dborn, t.device)
		return d.spDeath(devs, p, now, reasonDeviceDeath, fmt.Errorf("sparkplug device %s/%s/%s died (DDEATH)", t.group, t.node, t.device), out)
	}
	for _, dv := range devs {
		var unknown bool
		if out, unknown = d.spData(node, dv, t, p, now, out); unknown && unresolved == "" {
			unresolved = reasonUnknownAlias
		}
	}
	if unresolved != "" && node.askRebirth && (node.lastAsk.IsZero() || now.Sub(node.lastAsk) >= rebirthInterval) {
		node.lastAsk = now
		s.requestRebirth(rebirthRequest{node: node.key, name: node.name, reason: unresolved, first: !node.asked, ms: uint64(max(now.UnixMilli(), 0))})
		node.asked = true
	}
	return out
}

// spData emits the configured metrics of a BIRTH or DATA for dv; unknown
// reports an alias no BIRTH declared.
func (d *Driver) spData(node *spNode, dv *device, t spTopic, p *spPayload, now time.Time, out []routed) (_ []routed, unknown bool) {
	var samples []ferry.Sample
	var probs []problem
	for i := range p.metrics {
		m := &p.metrics[i]
		var idx int
		var dt uint32
		var ok bool
		if len(m.name) > 0 {
			idx, ok = dv.byMetric[string(m.name)]
			if !ok {
				continue
			}
			dt = node.types[spNameKey{t.device, string(m.name)}]
		} else {
			name, adt, known := node.resolve(t.device, m)
			if !known {
				unknown = true
				if len(probs) == 0 || probs[len(probs)-1].reason != reasonUnknownAlias {
					probs = append(probs, problem{point: "alias " + strconv.FormatUint(m.alias, 10), reason: reasonUnknownAlias})
				}
				continue
			}
			if idx, ok = dv.byMetric[name]; !ok {
				continue
			}
			dt = adt
		}
		pt := &dv.points[idx]
		s := ferry.Sample{Device: dv.name, Point: pt.cfg.Name, Time: spTime(p, m, now)}
		v, reason := m.value(dt)
		if reason == "" {
			var err error
			if v, err = coerce(v, pt.cfg.Type); err != nil {
				reason = reasonOf(err)
			}
		}
		if reason != "" {
			s.Quality = ferry.BadQuality(reason)
			probs = append(probs, problem{point: pt.cfg.Name, reason: reason})
		} else {
			s.Value = v
		}
		if samples == nil {
			samples = make([]ferry.Sample, 0, len(dv.points))
		}
		samples = append(samples, s)
	}
	if len(samples) == 0 && len(probs) == 0 {
		dv.m.ignored.Inc()
		return out, unknown
	}
	d.report(dv, t.kind+" "+t.group+"/"+t.node, probs)
	if len(samples) == 0 {
		return out, unknown
	}
	dv.bad = false
	dv.stat.Connected()
	dv.stat.Polled(now, d.now().Sub(now), samples)
	return append(out, routed{dv: dv, scan: ferry.Scan{Device: dv.name, Time: now, Samples: samples}}), unknown
}

// spDeath emits Bad samples for every point of devs.
func (d *Driver) spDeath(devs []*device, p *spPayload, now time.Time, reason string, err error, out []routed) []routed {
	t := spTime(p, nil, now)
	for _, dv := range devs {
		dv.m.ok.Inc()
		dv.stat.Lost(err)
		dv.bad = true
		samples := badAll(make([]ferry.Sample, 0, len(dv.points)), dv, dv.name, reason, t)
		dv.stat.Polled(now, d.now().Sub(now), samples)
		out = append(out, routed{dv: dv, scan: ferry.Scan{Device: dv.name, Time: now, Samples: samples}})
	}
	return out
}
