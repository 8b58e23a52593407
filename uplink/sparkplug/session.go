package sparkplug

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ferry-edge/ferry/internal/tlsfile"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/backoff"
)

// Run connects, births the node and its devices and drains the Source
// until ctx ends. Connection failures are retried with backoff (Err says
// what is wrong meanwhile); records stay in the Source. At the end it
// publishes NDEATH, disconnects, and releases what was not acknowledged;
// it returns nil then.
func (n *Node) Run(ctx context.Context) error {
	bo := &backoff.Backoff{Max: n.cfg.ReconnectMax}
	for {
		born, err := n.session(ctx)
		n.m.connected.Set(0)
		if ctx.Err() != nil {
			n.setErr(errors.New("stopped"))
			return nil
		}
		n.setErr(err)
		if born {
			bo.Reset()
		}
		if errors.Is(err, ErrHostOffline) {
			n.log.Info("primary host offline: NDEATH published, waiting for it to come back", "host", n.cfg.PrimaryHostID)
			bo.Reset()
		} else {
			n.log.Warn("sparkplug session ended", "err", err)
		}
		if !bo.Wait(ctx) {
			n.setErr(errors.New("stopped"))
			return nil
		}
	}
}

// events are what the MQTT client's goroutines hand to the session loop.
type events struct {
	lost    chan error
	state   chan State
	rebirth chan struct{}
	dcmd    chan inbound
}

type inbound struct {
	device  string
	payload []byte
}

// session runs one MQTT session: connect with the NDEATH will, wait for
// the primary host, birth, drain. born reports whether NBIRTH went out.
func (n *Node) session(ctx context.Context) (born bool, err error) {
	bdSeq := n.nextBdSeq()
	ev := &events{
		lost:    make(chan error, 1),
		state:   make(chan State, 16),
		rebirth: make(chan struct{}, 1),
		dcmd:    make(chan inbound, 64),
	}
	c, err := n.connect(ctx, bdSeq, ev)
	if err != nil {
		return false, err
	}
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		c.Disconnect(250)
	}()
	wg.Add(1)
	go func() { defer wg.Done(); n.commands(sctx, ev.dcmd) }()

	if n.topics.state != "" {
		n.m.hostOnline.Set(0)
		n.online = false
		for !n.online {
			select {
			case <-ctx.Done():
				return false, nil
			case err := <-ev.lost:
				n.m.err("connection_lost")
				return false, fmt.Errorf("connection lost waiting for the primary host: %w", err)
			case st := <-ev.state:
				n.applyState(st)
			}
		}
	}
	start := n.opts.Now()
	select {
	case <-n.catCh: // taken now
	default:
	}
	n.applyCatalog()
	if err := n.births(c); err != nil {
		return false, err
	}
	n.m.connected.Set(1)
	n.setErr(nil)
	n.log.Info("sparkplug node born", "bdseq", bdSeq, "devices", len(n.order))

	recCh := make(chan []ferry.Record)
	fctx, fcancel := context.WithCancel(sctx)
	var fwg sync.WaitGroup
	fwg.Add(1)
	go func() { defer fwg.Done(); n.fetch(fctx, recCh) }()
	defer func() { fcancel(); fwg.Wait() }()

	for {
		select {
		case <-ctx.Done():
			n.goodbye(c, bdSeq)
			return true, nil
		case err := <-ev.lost:
			n.m.err("connection_lost")
			return true, fmt.Errorf("connection lost: %w", err)
		case st := <-ev.state:
			if n.applyState(st) && !n.online {
				n.goodbye(c, bdSeq)
				return true, ErrHostOffline
			}
		case <-ev.rebirth:
			n.m.rebirths.WithLabelValues("ncmd").Inc()
			if err := n.births(c); err != nil {
				return true, err
			}
		case <-n.catCh:
			n.applyCatalog()
			n.m.rebirths.WithLabelValues("catalog").Inc()
			if err := n.births(c); err != nil {
				return true, err
			}
		case recs := <-recCh:
			if err := n.publishBatch(c, recs, start); err != nil {
				return true, err
			}
		}
	}
}

// fetch hands batches of the Source to the session loop until ctx ends.
func (n *Node) fetch(ctx context.Context, out chan<- []ferry.Record) {
	bo := &backoff.Backoff{Max: 5 * time.Second}
	for {
		recs, err := n.src.Next(ctx, n.cfg.BatchSize, int(n.cfg.BatchBytes))
		if err != nil {
			if len(recs) > 0 {
				n.src.Release(recs...)
			}
			if ctx.Err() != nil || errors.Is(err, ferry.ErrClosed) {
				return
			}
			n.log.Warn("read from the buffer", "err", err)
			if !bo.Wait(ctx) {
				return
			}
			continue
		}
		bo.Reset()
		select {
		case out <- recs:
		case <-ctx.Done():
			n.src.Release(recs...)
			return
		}
	}
}

// applyState takes a STATE message of the primary host; it reports
// whether it was newer than the last one (Sparkplug 3.0: an older
// timestamp is a stale message and ignored).
func (n *Node) applyState(st State) bool {
	if st.Timestamp < n.hostTS {
		n.log.Debug("stale STATE ignored", "timestamp", st.Timestamp, "last", n.hostTS)
		return false
	}
	n.hostTS = st.Timestamp
	if n.online != st.Online {
		n.log.Info("primary host state", "host", n.cfg.PrimaryHostID, "online", st.Online)
	}
	n.online = st.Online
	if st.Online {
		n.m.hostOnline.Set(1)
	} else {
		n.m.hostOnline.Set(0)
	}
	return true
}

// births publishes NBIRTH (seq 0) and a DBIRTH for every device with
// metrics (then DDEATH for those that are down), and waits for their
// PUBACKs.
func (n *Node) births(c paho.Client) error {
	out := []outMsg{n.nbirth()}
	for _, name := range n.order {
		d := n.devices[name]
		d.born = false
		if len(d.metrics) == 0 {
			continue
		}
		dead := d.dead
		out = append(out, n.dbirth(d))
		if dead {
			out = append(out, n.ddeath(d))
		}
	}
	for i := range out {
		out[i].rec = -1
	}
	_, err := n.send(c, out)
	return err
}

// publishBatch publishes the messages of recs, waits for their PUBACKs
// and acknowledges the records to the Source: all of them, or, when a
// PUBACK fails, those before the first record with an unacknowledged
// message (the rest are released and the error ends the session).
// Records accepted before histBefore (the session's birth) are sent as
// historical.
func (n *Node) publishBatch(c paho.Client, recs []ferry.Record, histBefore time.Time) error {
	var out []outMsg
	results := make([]string, len(recs))
	for i, r := range recs {
		from := len(out)
		out, results[i] = n.build(out, i, r, r.Time.Before(histBefore))
		for j := from; j < len(out); j++ {
			out[j].rec = i
		}
	}
	done, err := n.send(c, out)
	ok := len(recs)
	if err != nil {
		ok = out[done].rec
	}
	for i := range ok {
		res := results[i]
		if res == "" {
			res = "published"
		}
		n.m.records.WithLabelValues(res).Inc()
	}
	if ok > 0 {
		if aerr := n.src.Ack(recs[:ok]...); aerr != nil {
			n.m.err("ack")
			n.log.Error("acknowledge records to the buffer", "err", aerr)
		}
	}
	if ok < len(recs) {
		n.src.Release(recs[ok:]...)
	}
	return err
}

// send publishes msgs at QoS 1 in order and waits for their PUBACKs
// within ack_timeout. On failure it returns the index of the first
// message not acknowledged.
func (n *Node) send(c paho.Client, msgs []outMsg) (int, error) {
	toks := make([]paho.Token, len(msgs))
	for i, o := range msgs {
		b, err := marshal(o)
		if err != nil {
			return i, err
		}
		toks[i] = c.Publish(o.topic, 1, false, b)
	}
	deadline := time.Now().Add(n.cfg.AckTimeout)
	for i, t := range toks {
		if !t.WaitTimeout(max(time.Until(deadline), time.Millisecond)) {
			n.m.err("ack_timeout")
			return i, fmt.Errorf("no PUBACK for %s on %s within %v", msgs[i].kind, msgs[i].topic, n.cfg.AckTimeout)
		}
		if err := t.Error(); err != nil {
			n.m.err("publish")
			return i, fmt.Errorf("publish %s on %s: %w", msgs[i].kind, msgs[i].topic, err)
		}
		n.m.messages.WithLabelValues(msgs[i].kind).Inc()
		if msgs[i].samples > 0 {
			n.m.samples.WithLabelValues(boolLabel(msgs[i].hist)).Add(float64(msgs[i].samples))
		}
	}
	return len(msgs), nil
}

// goodbye publishes NDEATH before a clean disconnect (the broker does not
// publish the will then).
func (n *Node) goodbye(c paho.Client, bdSeq uint64) {
	t := c.Publish(n.topics.ndeath, 1, false, n.ndeath(bdSeq))
	if t.WaitTimeout(n.cfg.AckTimeout) && t.Error() == nil {
		n.m.messages.WithLabelValues("NDEATH").Inc()
	}
}

// connect opens an MQTT session with the NDEATH will and subscribes to
// the node's commands (and the primary host's STATE).
func (n *Node) connect(ctx context.Context, bdSeq uint64, ev *events) (paho.Client, error) {
	tc, err := n.tlsConfig()
	if err != nil {
		n.m.err("connect")
		return nil, err
	}
	o := paho.NewClientOptions()
	for _, b := range n.cfg.Brokers {
		o.AddBroker(b)
	}
	o.SetClientID(n.cfg.ClientID)
	o.SetUsername(n.cfg.Username)
	o.SetPassword(n.cfg.Password.Reveal())
	o.SetProtocolVersion(4)
	o.SetCleanSession(true) // Sparkplug 3.0 requires a clean session with MQTT 3.1.1
	o.SetAutoReconnect(false)
	o.SetConnectRetry(false)
	o.SetOrderMatters(false)
	o.SetKeepAlive(n.cfg.KeepAlive)
	o.SetPingTimeout(min(n.cfg.KeepAlive, 10*time.Second))
	o.SetConnectTimeout(n.cfg.ConnectTimeout)
	o.SetWriteTimeout(n.cfg.AckTimeout)
	o.SetBinaryWill(n.topics.ndeath, n.ndeath(bdSeq), 1, false)
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	o.SetConnectionLostHandler(func(_ paho.Client, err error) {
		select {
		case ev.lost <- err:
		default:
		}
	})
	c := paho.NewClient(o)
	t := c.Connect()
	if !waitToken(ctx, t, n.cfg.ConnectTimeout) {
		c.Disconnect(0)
		n.m.err("connect")
		return nil, fmt.Errorf("connect to %s: timed out after %v", strings.Join(n.cfg.Brokers, ", "), n.cfg.ConnectTimeout)
	}
	if err := t.Error(); err != nil {
		reason := "connect"
		if strings.Contains(err.Error(), "not Authorized") || strings.Contains(err.Error(), "refused") {
			// A broker that refuses the will (an ACL on the NDEATH topic)
			// refuses the connection: CONNACK "not authorised".
			reason = "connect_refused"
		}
		n.m.err(reason)
		return nil, fmt.Errorf("connect to %s with the NDEATH will on %s: %w", strings.Join(n.cfg.Brokers, ", "), n.topics.ndeath, err)
	}
	subs := map[string]byte{n.topics.ncmd: 1, n.topics.dcmdSub: 1}
	if n.topics.state != "" {
		subs[n.topics.state] = 1
	}
	st := c.SubscribeMultiple(subs, func(_ paho.Client, m paho.Message) { n.onMessage(m, ev) })
	if !waitToken(ctx, st, n.cfg.ConnectTimeout) || st.Error() != nil {
		c.Disconnect(0)
		n.m.err("subscribe")
		return nil, fmt.Errorf("subscribe to %s: %v", n.topics.ncmd, st.Error())
	}
	if sub, ok := st.(*paho.SubscribeToken); ok {
		for topic, code := range sub.Result() {
			if code >= 0x80 {
				c.Disconnect(0)
				n.m.err("subscribe")
				return nil, fmt.Errorf("subscribe to %s: refused by the broker", topic)
			}
		}
	}
	return c, nil
}

// waitToken waits for t until timeout or ctx ends.
func waitToken(ctx context.Context, t paho.Token, timeout time.Duration) bool {
	select {
	case <-t.Done():
		return true
	case <-time.After(timeout):
	case <-ctx.Done():
	}
	return false
}

// onMessage routes an inbound message (on a paho goroutine: it never
// blocks).
func (n *Node) onMessage(m paho.Message, ev *events) {
	topic, payload := m.Topic(), m.Payload()
	switch {
	case topic == n.topics.state && n.topics.state != "":
		st, err := ParseState(payload)
		if err != nil {
			n.m.invalid.WithLabelValues("state").Inc()
			n.log.Debug("invalid STATE message ignored", "topic", topic, "err", err)
			return
		}
		select {
		case ev.state <- st:
		default:
			n.m.invalid.WithLabelValues("state_overflow").Inc()
		}
	case topic == n.topics.ncmd:
		cmds, _, err := ParseCommand(payload)
		if err != nil {
			n.m.invalid.WithLabelValues("ncmd").Inc()
			n.log.Debug("invalid NCMD ignored", "err", err)
			return
		}
		for _, c := range cmds {
			if n.isRebirth(c) {
				n.m.commands.WithLabelValues("ncmd", "rebirth").Inc()
				select {
				case ev.rebirth <- struct{}{}:
				default: // one is pending already
				}
				continue
			}
			n.m.commands.WithLabelValues("ncmd", "unsupported").Inc()
			n.log.Warn("NCMD metric not supported", "name", c.Name, "alias", c.Alias)
		}
	case strings.HasPrefix(topic, n.topics.prefix+"DCMD/"+n.cfg.EdgeNodeID+"/"):
		dev := strings.TrimPrefix(topic, n.topics.prefix+"DCMD/"+n.cfg.EdgeNodeID+"/")
		select {
		case ev.dcmd <- inbound{device: dev, payload: payload}:
		default:
			n.m.commands.WithLabelValues("dcmd", "dropped").Inc()
		}
	}
}

// isRebirth reports whether c is Node Control/Rebirth = true.
func (n *Node) isRebirth(c Command) bool {
	name := c.Name
	if name == "" {
		n.idxMu.Lock()
		t, ok := n.idx[c.Alias]
		n.idxMu.Unlock()
		if !ok || t.device != "" {
			return false
		}
		name = t.point
	}
	return name == MetricRebirth && c.Value.Kind() == ferry.KindBool && c.Value.Bool()
}

// commands serves DCMDs one at a time until ctx ends.
func (n *Node) commands(ctx context.Context, in <-chan inbound) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-in:
			n.dcmd(ctx, m.device, m.payload)
		}
	}
}

// dcmd writes the metrics of one DCMD through Options.Command, each as a
// command whose id is made from the edge node, device, point and the
// payload's timestamp: a DCMD delivered twice writes once.
func (n *Node) dcmd(ctx context.Context, dev string, payload []byte) {
	cmds, ts, err := ParseCommand(payload)
	if err != nil {
		n.m.invalid.WithLabelValues("dcmd").Inc()
		n.log.Debug("invalid DCMD ignored", "device", dev, "err", err)
		return
	}
	for i, c := range cmds {
		if c.Unsupported != "" {
			n.m.commands.WithLabelValues("dcmd", "unsupported").Inc()
			n.log.Warn("DCMD refused: value not supported", "device", dev, "name", c.Name, "alias", c.Alias, "value", c.Unsupported)
			continue
		}
		point, ok := n.resolve(dev, c)
		if !ok || !n.wantDevice(dev) {
			n.m.commands.WithLabelValues("dcmd", ferry.CommandRefused).Inc()
			n.log.Warn("DCMD refused: unknown metric", "device", dev, "name", c.Name, "alias", c.Alias)
			continue
		}
		if n.opts.Command == nil {
			n.m.commands.WithLabelValues("dcmd", ferry.CommandRefused).Inc()
			n.log.Warn("DCMD refused: this gateway has no command path", "device", dev, "point", point)
			continue
		}
		if f, isF := c.Value.Number(); c.Value.Kind() == ferry.KindFloat && isF && (math.IsNaN(f) || math.IsInf(f, 0)) {
			n.m.commands.WithLabelValues("dcmd", "unsupported").Inc()
			continue
		}
		raw, err := json.Marshal(c.Value.Any())
		if err != nil {
			n.m.commands.WithLabelValues("dcmd", "unsupported").Inc()
			continue
		}
		req := ferry.CommandRequest{
			ID:     fmt.Sprintf("spb-%s-%s-%s-%d-%d", n.cfg.EdgeNodeID, dev, point, ts, i),
			Device: dev, Point: point, Value: raw,
		}
		reply := n.opts.Command(ctx, req)
		n.m.commands.WithLabelValues("dcmd", reply.Status).Inc()
		n.log.Info("DCMD", "id", req.ID, "device", dev, "point", point, "status", reply.Status, "reason", reply.Reason)
	}
}

// tlsConfig reads the TLS files (nil for plain brokers).
func (n *Node) tlsConfig() (*tls.Config, error) {
	u, err := url.Parse(n.cfg.Brokers[0])
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "ssl", "tls", "mqtts", "wss":
	default:
		return nil, nil
	}
	t := n.cfg.TLS
	if t == nil {
		return tlsfile.Client(tlsfile.Files{})
	}
	tc, err := tlsfile.Client(tlsfile.Files{CA: t.CA, Cert: t.Cert, Key: t.Key, ServerName: t.ServerName, Insecure: t.InsecureSkipVerify})
	if err != nil {
		return nil, fmt.Errorf("sparkplug.tls: %w", err)
	}
	return tc, nil
}
