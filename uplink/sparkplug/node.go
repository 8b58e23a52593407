package sparkplug

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
)

// Source is where the node takes records from: the buffer. It is the
// same contract as package uplink's Source (implemented by
// *buffer.Buffer), declared here so that uplink can import this package.
type Source interface {
	// Next blocks until records are available (or ctx ends) and returns up
	// to max records (at most maxBytes of Data, but at least one): every
	// pending alert before any telemetry. Returned records are in flight
	// until Ack or Release.
	Next(ctx context.Context, max, maxBytes int) ([]ferry.Record, error)
	// Ack deletes records the upstream has acknowledged.
	Ack(recs ...ferry.Record) error
	// Release puts unacknowledged records back to be offered again.
	Release(recs ...ferry.Record)
}

// Options are what the node needs besides its configuration.
type Options struct {
	// Gateway is the gateway id: the default edge node id.
	Gateway    string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now gives the time of payload timestamps (tests inject it).
	Now func() time.Time
	// State keeps bdSeq across restarts. Nil: the Source, when it is a
	// ferry.StateStore (the buffer is); else bdSeq starts at 0 at every
	// start, and the first NBIRTH after a restart repeats an old bdSeq.
	State ferry.StateStore
	// Command handles one DCMD metric through the gateway's write path
	// (docs/commands.md). Nil: every DCMD is refused and counted.
	Command func(ctx context.Context, req ferry.CommandRequest) ferry.CommandReply
}

// ErrHostOffline is the reason a session ends when the primary host
// application publishes STATE offline.
var ErrHostOffline = errors.New("primary host application offline")

// stateBucket is the StateStore bucket of bdSeq.
const stateBucket = "sparkplug"

// Node publishes the records of a Source as a Sparkplug B edge node.
type Node struct {
	cfg    Config
	src    Source
	opts   Options
	log    *slog.Logger
	m      *metrics
	state  ferry.StateStore
	topics topics

	catMu  sync.Mutex
	points []ferry.PointInfo
	catCh  chan struct{}

	// idx resolves command metrics (name or alias) to a device and
	// point; written by the session loop at births, read by the command
	// worker.
	idxMu sync.Mutex
	idx   map[uint64]target
	names map[target]uint64

	// What the session loop owns (one goroutine at a time).
	bdSeq     uint64
	haveBdSeq bool
	seq       uint64
	nextAlias uint64
	devices   map[string]*device
	order     []string // devices in birth order
	hostTS    int64    // timestamp of the last STATE accepted
	online    bool     // the primary host's last STATE

	mu  sync.Mutex
	err error
}

// target is a device's point ("" device: a node metric).
type target struct{ device, point string }

type topics struct {
	prefix, nbirth, ndeath, ndata, ncmd, dcmdSub, state string
}

// device is one Sparkplug device: a ferry device.
type device struct {
	id      string
	metrics []*metric
	byName  map[string]*metric
	born    bool // DBIRTH published in this session
	dead    bool // DDEATH published; the next good data rebirths it
	rebirth string
}

// metric is one point of a device (or a node metric).
type metric struct {
	name  string
	alias uint64
	dtype uint32
	info  *ferry.PointInfo
	last  ferry.Value
	lastQ ferry.Status
	lastT int64 // ms
	seen  bool
}

// New returns a node for cfg that drains src. It validates cfg and does
// no I/O; Run connects.
func New(cfg Config, src Source, opts Options) (*Node, error) {
	if cfg.EdgeNodeID == "" {
		cfg.EdgeNodeID = opts.Gateway
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sparkplug: %w: %w", ferry.ErrInvalidConfig, err)
	}
	if src == nil {
		return nil, errors.New("sparkplug: no source")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "ferry-" + cfg.GroupID + "-" + cfg.EdgeNodeID
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("sparkplug: metrics: %w", err)
	}
	n := &Node{
		cfg: cfg, src: src, opts: opts, m: m,
		log:     opts.Logger.With("group_id", cfg.GroupID, "edge_node_id", cfg.EdgeNodeID),
		state:   opts.State,
		catCh:   make(chan struct{}, 1),
		devices: map[string]*device{},
		idx:     map[uint64]target{},
		names:   map[target]uint64{},
	}
	if n.state == nil {
		n.state, _ = src.(ferry.StateStore)
	}
	p := "spBv1.0/" + cfg.GroupID + "/"
	n.topics = topics{
		prefix:  p,
		nbirth:  p + "NBIRTH/" + cfg.EdgeNodeID,
		ndeath:  p + "NDEATH/" + cfg.EdgeNodeID,
		ndata:   p + "NDATA/" + cfg.EdgeNodeID,
		ncmd:    p + "NCMD/" + cfg.EdgeNodeID,
		dcmdSub: p + "DCMD/" + cfg.EdgeNodeID + "/+",
	}
	if cfg.PrimaryHostID != "" {
		n.topics.state = "spBv1.0/STATE/" + cfg.PrimaryHostID
	} else {
		m.hostOnline.Set(1)
	}
	return n, nil
}

// EdgeNodeID returns the edge node id in use (the gateway id by default).
func (n *Node) EdgeNodeID() string { return n.cfg.EdgeNodeID }

// SetCatalog sets the configured points: they are born (DBIRTH) at every
// NBIRTH with their properties, before any value of theirs was seen. A
// new catalog rebirths the node. It is safe to call at any time.
func (n *Node) SetCatalog(points []ferry.PointInfo) {
	n.catMu.Lock()
	n.points = slices.Clone(points)
	n.catMu.Unlock()
	select {
	case n.catCh <- struct{}{}:
	default:
	}
}

// Err returns why the node is not publishing now (nil while it is).
func (n *Node) Err() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.err
}

func (n *Node) setErr(err error) {
	n.mu.Lock()
	n.err = err
	n.mu.Unlock()
}

// wantDevice reports whether ferry device name is published.
func (n *Node) wantDevice(name string) bool {
	return len(n.cfg.Devices) == 0 || slices.Contains(n.cfg.Devices, name)
}

// applyCatalog adds the catalog's devices and points (keeping aliases of
// points already known).
func (n *Node) applyCatalog() {
	n.catMu.Lock()
	points := n.points
	n.catMu.Unlock()
	for i := range points {
		p := &points[i]
		if !n.wantDevice(p.Device) {
			continue
		}
		d := n.device(p.Device)
		if d == nil {
			continue
		}
		mt := n.metricOf(d, p.Point, typeHint(p))
		if mt != nil {
			mt.info = p
		}
	}
}

// device returns the device named name, adding it; nil when name cannot
// be a Sparkplug device id.
func (n *Node) device(name string) *device {
	if d, ok := n.devices[name]; ok {
		return d
	}
	if checkID(name) != nil {
		n.m.refused.WithLabelValues("bad_device_id").Inc()
		return nil
	}
	d := &device{id: name, byName: map[string]*metric{}}
	n.devices[name] = d
	n.order = append(n.order, name)
	return d
}

// metricOf returns d's metric name, adding it with data type t (the
// device then needs a rebirth if it was born); nil when the name is
// longer than max_metric_name.
func (n *Node) metricOf(d *device, name string, t uint32) *metric {
	if mt, ok := d.byName[name]; ok {
		return mt
	}
	if len(name) > n.cfg.MaxMetricName || name == "" {
		n.m.refused.WithLabelValues("name_too_long").Inc()
		return nil
	}
	n.nextAlias++
	mt := &metric{name: name, alias: n.nextAlias, dtype: t}
	d.metrics = append(d.metrics, mt)
	d.byName[name] = mt
	if d.born && d.rebirth == "" {
		d.rebirth = "new_metric"
	}
	n.idxMu.Lock()
	n.idx[mt.alias] = target{d.id, name}
	n.names[target{d.id, name}] = mt.alias
	n.idxMu.Unlock()
	return mt
}

// resolve finds the device point a command metric names.
func (n *Node) resolve(dev string, c Command) (string, bool) {
	n.idxMu.Lock()
	defer n.idxMu.Unlock()
	if c.Name != "" {
		_, ok := n.names[target{dev, c.Name}]
		return c.Name, ok
	}
	t, ok := n.idx[c.Alias]
	if !ok || t.device != dev {
		return "", false
	}
	return t.point, true
}

// nextBdSeq returns the bdSeq of a new MQTT session, stored first so that
// the session after a crash uses the next one.
func (n *Node) nextBdSeq() uint64 {
	key := []byte("bdseq/" + n.cfg.GroupID + "/" + n.cfg.EdgeNodeID)
	if !n.haveBdSeq {
		n.haveBdSeq = true
		n.bdSeq = 255 // the first session is 0
		if n.state != nil {
			_ = n.state.ForEach(stateBucket, func(k, v []byte) error {
				if string(k) == string(key) && len(v) == 8 {
					n.bdSeq = binary.BigEndian.Uint64(v) % 256
				}
				return nil
			})
		}
	}
	n.bdSeq = (n.bdSeq + 1) % 256
	if n.state != nil {
		if err := n.state.Put(stateBucket, key, binary.BigEndian.AppendUint64(nil, n.bdSeq)); err != nil {
			n.m.err("state_store")
			n.log.Warn("bdSeq not stored: the next start may repeat it", "bdseq", n.bdSeq, "err", err)
		}
	}
	n.m.bdSeq.Set(float64(n.bdSeq))
	return n.bdSeq
}

// nextSeq returns the seq of the next message after NBIRTH: 1..255, 0, 1…
func (n *Node) nextSeq() uint64 {
	n.seq = (n.seq + 1) % 256
	return n.seq
}

func (n *Node) deviceTopic(kind, dev string) string {
	return n.topics.prefix + kind + "/" + n.cfg.EdgeNodeID + "/" + dev
}

func boolLabel(b bool) string { return strconv.FormatBool(b) }
