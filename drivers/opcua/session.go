package opcua

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
)

// Batch sizes used when the server does not publish its operation limits.
const (
	defaultMaxNodesPerRead = 1000
	defaultMaxItemsPerCall = 1000
)

// policyRank orders the security policies ferry speaks, weakest first.
var policyRank = map[string]int{
	ua.SecurityPolicyURINone:                0,
	ua.SecurityPolicyURIBasic256Sha256:      1,
	ua.SecurityPolicyURIAes128Sha256RsaOaep: 2,
	ua.SecurityPolicyURIAes256Sha256RsaPss:  3,
}

// session holds one connected client and what was learned from the
// server for it.
type session struct {
	c        *opcua.Client
	lost     chan struct{} // receives when the client reports the connection gone
	maxRead  int
	maxItems int
	policy   string
	mode     ua.MessageSecurityMode
	ready    func() // called when the session delivers
}

// dialOptions are the security and identity settings of a connection
// (shared with Browse).
type dialOptions struct {
	cfg     *Config
	pki     *PKI
	ident   func() (*Identity, error)
	appURI  string
	appName string
	session string
	// warnNone is called when security policy None is selected
	// automatically (the server offers nothing better).
	warnNone func()
}

// dial discovers the server's endpoints, picks one, checks the server
// certificate, and opens a secure channel and an activated session.
func dial(ctx context.Context, o dialOptions, state func(opcua.ConnState)) (*opcua.Client, *ua.EndpointDescription, error) {
	c := o.cfg
	cctx, cancel := context.WithTimeout(ctx, c.Timeouts.Connect)
	defer cancel()
	eps, err := opcua.GetEndpoints(cctx, c.Endpoint,
		opcua.DialTimeout(c.Timeouts.Connect), opcua.RequestTimeout(c.Timeouts.Request))
	if err != nil {
		return nil, nil, fmt.Errorf("get endpoints of %s: %w", c.Endpoint, err)
	}
	ep, err := selectEndpoint(eps, c)
	if err != nil {
		return nil, nil, err
	}
	secure := ep.SecurityPolicyURI != ua.SecurityPolicyURINone
	if !secure && c.SecurityPolicy == "" && o.warnNone != nil {
		o.warnNone()
	}
	tokType, err := tokenType(ep, &c.Auth)
	if err != nil {
		return nil, nil, err
	}
	opts := []opcua.Option{
		opcua.AutoReconnect(false),
		opcua.DialTimeout(c.Timeouts.Connect),
		opcua.RequestTimeout(c.Timeouts.Request),
		opcua.SessionTimeout(c.Timeouts.Session),
		opcua.ApplicationName(o.appName),
		opcua.ApplicationURI(o.appURI), // replaced by the certificate's URI when there is one
		opcua.ProductURI("urn:ferry"),
		opcua.SessionName(o.session),
	}
	if state != nil {
		opts = append(opts, opcua.StateChangedFunc(state))
	}
	ownCert := "ferry's certificate"
	if secure {
		if err := o.pki.Check(ep.ServerCertificate); err != nil {
			return nil, nil, err
		}
		if err := checkServerIdentity(c, ep); err != nil {
			return nil, nil, err
		}
		id, err := o.ident()
		if err != nil {
			return nil, nil, err
		}
		ownCert = id.Path
		opts = append(opts, opcua.Certificate(id.Cert), opcua.PrivateKey(id.Key))
	}
	switch c.Auth.Kind() {
	case "username":
		opts = append(opts, opcua.AuthUsername(c.Auth.Username, c.Auth.Password.Reveal()))
	case "certificate":
		cert, key, err := loadUserCert(&c.Auth)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", errUserCert, err)
		}
		opts = append(opts, opcua.AuthCertificate(cert), opcua.AuthPrivateKey(key))
	default:
		opts = append(opts, opcua.AuthAnonymous())
	}
	// After the Auth option: it sets the token's policy id and the
	// server certificate (and thumbprint) of the chosen endpoint.
	opts = append(opts, opcua.SecurityFromEndpoint(ep, tokType))
	cl, err := opcua.NewClient(c.Endpoint, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("client for %s: %w", c.Endpoint, err)
	}
	if err := cl.Connect(cctx); err != nil {
		cl.Close(context.Background())
		return nil, nil, fmt.Errorf("connect to %s (%s, %s): %w", c.Endpoint, policyName(ep.SecurityPolicyURI), modeName(ep.SecurityMode), explainConnect(err, c, ownCert))
	}
	return cl, ep, nil
}

// selectEndpoint picks the endpoint matching the configuration: the
// configured policy and mode, or the strongest policy offered in the
// configured mode. None is chosen only when configured, or when it is
// all the server offers and allow_insecure is set.
func selectEndpoint(eps []*ua.EndpointDescription, c *Config) (*ua.EndpointDescription, error) {
	if len(eps) == 0 {
		return nil, fmt.Errorf("%w: server returned no endpoints for %s; it may know itself by another host name or port: use the one of its own endpoint URL", ErrNoEndpoint, c.Endpoint)
	}
	var best *ua.EndpointDescription
	var offered []string
	wantMode := ua.MessageSecurityModeFromString(c.securityMode())
	onlyNone := true
	for _, ep := range eps {
		if ep.TransportProfileURI != "" && !strings.Contains(ep.TransportProfileURI, "uatcp") {
			continue
		}
		offered = append(offered, policyName(ep.SecurityPolicyURI)+"/"+modeName(ep.SecurityMode))
		rank, known := policyRank[ep.SecurityPolicyURI]
		if ep.SecurityPolicyURI != ua.SecurityPolicyURINone {
			onlyNone = false
		}
		if !known {
			continue
		}
		switch {
		case c.SecurityPolicy != "":
			if ep.SecurityPolicyURI == ua.SecurityPolicyURIPrefix+c.SecurityPolicy && ep.SecurityMode == wantMode {
				return ep, nil
			}
		case rank > 0 && ep.SecurityMode == wantMode:
			if best == nil || rank > policyRank[best.SecurityPolicyURI] {
				best = ep
			}
		}
	}
	if best != nil {
		return best, nil
	}
	if c.SecurityPolicy == "" && onlyNone {
		if !c.AllowInsecure {
			return nil, fmt.Errorf("%w: the server offers only security policy None; set security_policy: None and allow_insecure: true to accept an unsigned, unencrypted connection", ErrInsecure)
		}
		for _, ep := range eps {
			if ep.SecurityPolicyURI == ua.SecurityPolicyURINone {
				return ep, nil
			}
		}
	}
	sort.Strings(offered)
	want := policyShort(c.SecurityPolicy) + "/" + c.securityMode()
	return nil, fmt.Errorf("%w: server offers no endpoint with %s; it offers %s", ErrNoEndpoint, want, strings.Join(offered, ", "))
}

func policyName(uri string) string { return strings.TrimPrefix(uri, ua.SecurityPolicyURIPrefix) }

func modeName(m ua.MessageSecurityMode) string {
	return strings.TrimPrefix(m.String(), "MessageSecurityMode")
}

// tokenType returns the user token type of the configured login, checking
// that the endpoint accepts it.
func tokenType(ep *ua.EndpointDescription, a *Auth) (ua.UserTokenType, error) {
	want := ua.UserTokenTypeAnonymous
	switch a.Kind() {
	case "username":
		want = ua.UserTokenTypeUserName
	case "certificate":
		want = ua.UserTokenTypeCertificate
	}
	var offered []string
	for _, t := range ep.UserIdentityTokens {
		if t.TokenType == want {
			return want, nil
		}
		offered = append(offered, strings.TrimPrefix(t.TokenType.String(), "UserTokenType"))
	}
	if len(ep.UserIdentityTokens) == 0 && want == ua.UserTokenTypeAnonymous {
		return want, nil
	}
	return want, fmt.Errorf("endpoint %s/%s accepts no %s login (it accepts %s) (BadIdentityTokenRejected)",
		policyName(ep.SecurityPolicyURI), modeName(ep.SecurityMode), a.Kind(), strings.Join(offered, ", "))
}

func loadUserCert(a *Auth) ([]byte, *rsa.PrivateKey, error) {
	cb, err := os.ReadFile(a.CertFile)
	if err != nil {
		return nil, nil, err
	}
	certs, err := parseCerts(cb)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", a.CertFile, err)
	}
	kb, err := os.ReadFile(a.KeyFile)
	if err != nil {
		return nil, nil, err
	}
	key, err := parseRSAKey(kb)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", a.KeyFile, err)
	}
	return certs[0].Raw, key, nil
}

// session connects and then polls or subscribes until the session is
// lost or ctx ends. up reports whether a session was established.
func (dv *device) session(ctx context.Context, emit ferry.EmitFunc) (up bool, err error) {
	c := &dv.cfg.Config
	lost := make(chan struct{}, 1)
	state := func(s opcua.ConnState) {
		if s == opcua.Disconnected {
			select {
			case lost <- struct{}{}:
			default:
			}
		}
	}
	o := dialOptions{
		cfg: c, pki: dv.drv.pki, ident: dv.drv.identity, appURI: dv.drv.appURI,
		appName: strings.TrimSpace("ferry " + dv.drv.opts.Gateway),
		session: strings.Join(strings.Fields("ferry "+dv.drv.opts.Gateway+" "+dv.cfg.Name), " "),
		warnNone: func() {
			if !dv.warnedInsecure {
				dv.warnedInsecure = true
				dv.log.Warn("server offers only security policy None; using it because allow_insecure is set: values and credentials travel unsigned and unencrypted",
					"endpoint", c.Endpoint)
			}
		},
	}
	if w := dv.publishWait(); w != c.Timeouts.Request {
		// The server insisted on a longer keep-alive period in an
		// earlier session (keepalive.go): wait longer for its answers.
		cc := *c
		cc.Timeouts.Request = w
		o.cfg = &cc
	}
	cl, ep, err := dial(ctx, o, state)
	if err != nil {
		return false, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		cl.Close(cctx)
	}()
	dv.log.Debug("session open", "policy", policyName(ep.SecurityPolicyURI), "mode", modeName(ep.SecurityMode), "auth", c.Auth.Kind())
	s := &session{c: cl, lost: lost, policy: ep.SecurityPolicyURI, mode: ep.SecurityMode}
	// The device counts as connected once it delivers: after the first
	// poll, or once the monitored items exist. A server that accepts the
	// session but fails the subscription is not logged as flapping.
	s.ready = func() {
		if up {
			return
		}
		up = true
		if dv.everConnected {
			dv.m.reconnects.Inc()
		}
		dv.everConnected = true
		dv.st.Connected()
	}
	if err = dv.prepare(ctx, s); err != nil {
		return up, err
	}
	// Writes and calls use this session until it ends (write.go).
	dv.setLive(s)
	defer dv.setLive(nil)
	if c.Mode == "poll" {
		err = dv.poll(ctx, s, emit)
	} else {
		err = dv.subscribe(ctx, s, emit)
	}
	return up, err
}

// prepare resolves the points' node ids through the namespace array the
// client read on connect, and reads the server's operation limits.
func (dv *device) prepare(ctx context.Context, s *session) error {
	ns := s.c.Namespaces()
	bad := 0
	for _, p := range dv.points {
		p.failed = ""
		if p.id.NamespaceURI == "" {
			continue
		}
		if _, err := p.id.resolve(ns); err != nil {
			p.failed = reasonNamespaceUnknown
			bad++
		}
	}
	dv.m.badNodes.Set(float64(bad))
	s.maxRead, s.maxItems = defaultMaxNodesPerRead, defaultMaxItemsPerCall
	req := &ua.ReadRequest{
		NodesToRead: []*ua.ReadValueID{
			{NodeID: ua.NewNumericNodeID(0, id.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead), AttributeID: ua.AttributeIDValue},
			{NodeID: ua.NewNumericNodeID(0, id.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall), AttributeID: ua.AttributeIDValue},
		},
		TimestampsToReturn: ua.TimestampsToReturnNeither,
	}
	res, err := s.c.Read(ctx, req)
	if err != nil {
		if transport(reasonOf(err)) {
			return fmt.Errorf("read operation limits: %w", err)
		}
		// A server that will not tell: keep the defaults.
		dv.log.Debug("cannot read the server's operation limits; using defaults", "err", err)
		res = &ua.ReadResponse{}
	}
	for i, r := range res.Results {
		if i > 1 || r == nil || r.Status != ua.StatusOK || r.Value == nil {
			continue
		}
		var n uint64
		switch v := r.Value.Value().(type) {
		case uint32:
			n = uint64(v)
		case uint16:
			n = uint64(v)
		case int32:
			if v > 0 {
				n = uint64(v)
			}
		}
		if n == 0 || n > math.MaxInt32 {
			continue // 0: no limit declared
		}
		if i == 0 {
			s.maxRead = int(n)
		} else {
			s.maxItems = int(n)
		}
	}
	// Limits learned from refused requests in earlier sessions.
	if dv.readLimit > 0 {
		s.maxRead = min(s.maxRead, dv.readLimit)
	}
	if dv.itemLimit > 0 {
		s.maxItems = min(s.maxItems, dv.itemLimit)
	}
	return nil
}

// resolved returns the wire node id of p in this session, or nil when it
// failed to resolve.
func (s *session) resolved(p *point) *ua.NodeID {
	if p.failed != "" {
		return nil
	}
	n, err := p.id.resolve(s.c.Namespaces())
	if err != nil {
		return nil
	}
	return n
}

// batches splits n items into batches of at most size.
func batches(n, size int) [][2]int {
	if size < 1 {
		size = 1
	}
	var out [][2]int
	for lo := 0; lo < n; lo += size {
		out = append(out, [2]int{lo, min(lo+size, n)})
	}
	return out
}

// poll reads every point once per interval, in Read requests of at most
// the server's MaxNodesPerRead nodes.
func (dv *device) poll(ctx context.Context, s *session, emit ferry.EmitFunc) error {
	// The read list of this session: resolved points only.
	var ids []*ua.ReadValueID
	var idx []int
	for i, p := range dv.points {
		if n := s.resolved(p); n != nil {
			ids = append(ids, &ua.ReadValueID{NodeID: n, AttributeID: ua.AttributeIDValue, DataEncoding: &ua.QualifiedName{}})
			idx = append(idx, i)
		}
	}
	interval := dv.cfg.Config.Interval
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		start := dv.now()
		if err := dv.pollOnce(ctx, s, ids, idx, emit); err != nil {
			return err
		}
		if took := dv.now().Sub(start); took > interval {
			dv.st.Overrun()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (dv *device) pollOnce(ctx context.Context, s *session, ids []*ua.ReadValueID, idx []int, emit ferry.EmitFunc) error {
	start := dv.now()
	samples := make([]ferry.Sample, len(dv.points))
	for i, p := range dv.points {
		samples[i] = ferry.Sample{Device: dv.cfg.Name, Point: p.name, Time: start}
		if p.failed != "" {
			samples[i].Quality = ferry.BadQuality(p.failed)
		}
	}
	for lo := 0; lo < len(ids); {
		hi := min(lo+s.maxRead, len(ids))
		req := &ua.ReadRequest{NodesToRead: ids[lo:hi], TimestampsToReturn: ua.TimestampsToReturnBoth}
		dv.m.reads.Inc()
		dv.m.readNodes.Add(float64(hi - lo))
		res, err := s.c.Read(ctx, req)
		switch {
		case err != nil && requestLevel(err) && hi-lo > 1:
			// The server's limits are lower than it said: halve and retry.
			s.maxRead = max(1, (hi-lo)/2)
			dv.readLimit = s.maxRead
			dv.log.Info("server refused a read of this size; using smaller requests", "nodes", hi-lo, "now", s.maxRead, "reason", reasonOf(err))
			continue
		case err != nil && requestLevel(err):
			q := ferry.BadQuality(reasonOf(err))
			for _, j := range idx[lo:hi] {
				samples[j].Quality = q
			}
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read %d nodes: %w", hi-lo, err)
		case len(res.Results) != hi-lo:
			return fmt.Errorf("read %d nodes: server answered %d results", hi-lo, len(res.Results))
		default:
			now := dv.now()
			for k, r := range res.Results {
				j := idx[lo+k]
				sampleOf(&samples[j], r, dv.points[j].index, now)
			}
		}
		lo = hi
	}
	for i, p := range dv.points {
		dv.notePoint(p, samples[i].Quality)
	}
	// Connected before the scan is out: whoever sees the values sees the
	// device connected (and the reconnect counted).
	s.ready()
	if len(samples) == 0 {
		return nil
	}
	emit(ferry.Scan{Device: dv.cfg.Name, Time: start, Samples: samples})
	dv.st.Polled(start, dv.now().Sub(start), samples)
	return nil
}

// subscribe creates a subscription with one monitored item per point (in
// calls of at most MaxMonitoredItemsPerCall items) and emits each data
// change notification as a scan.
func (dv *device) subscribe(ctx context.Context, s *session, emit ferry.EmitFunc) error {
	c := &dv.cfg.Config
	notifs := make(chan *opcua.PublishNotificationData, 16)
	params := dv.subscriptionParams() // the keep-alive rule: keepalive.go
	sub, err := s.c.Subscribe(ctx, params, notifs)
	if err != nil {
		return fmt.Errorf("create subscription: %w", err)
	}
	if err := dv.checkRevised(ctx, sub, params); err != nil {
		return err
	}
	var items []*ua.MonitoredItemCreateRequest
	var idx []int
	sampling := float64(c.SamplingInterval) / float64(time.Millisecond)
	if c.SamplingInterval == 0 {
		sampling = -1 // the publishing interval
	}
	for i, p := range dv.points {
		n := s.resolved(p)
		if n == nil {
			continue
		}
		items = append(items, &ua.MonitoredItemCreateRequest{
			ItemToMonitor:  &ua.ReadValueID{NodeID: n, AttributeID: ua.AttributeIDValue, DataEncoding: &ua.QualifiedName{}},
			MonitoringMode: ua.MonitoringModeReporting,
			RequestedParameters: &ua.MonitoringParameters{
				ClientHandle:     uint32(i),
				SamplingInterval: sampling,
				QueueSize:        c.QueueSize,
				DiscardOldest:    true,
				Filter:           deadbandFilter(p.deadband),
			},
		})
		idx = append(idx, i)
	}
	created := 0
	for _, b := range batches(len(items), s.maxItems) {
		res, err := sub.Monitor(ctx, ua.TimestampsToReturnBoth, items[b[0]:b[1]]...)
		if err != nil {
			if requestLevel(err) && b[1]-b[0] > 1 {
				dv.drvHint(s, b[1]-b[0], err)
			}
			return fmt.Errorf("create %d monitored items: %w", b[1]-b[0], err)
		}
		if len(res.Results) != b[1]-b[0] {
			return fmt.Errorf("create %d monitored items: server answered %d results", b[1]-b[0], len(res.Results))
		}
		created += dv.itemResults(idx[b[0]:b[1]], res.Results)
	}
	dv.m.items.Set(float64(created))
	s.ready()
	// One scan with every point that cannot be monitored, so that rules
	// see them Bad at once.
	cur := make([]ferry.Sample, len(dv.points)) // quality of every point, for the points gauge
	var bad []ferry.Sample
	now := dv.now()
	nbad := 0
	for i, p := range dv.points {
		cur[i].Quality = ferry.UncertainQuality("no value yet")
		if p.failed != "" {
			q := ferry.BadQuality(p.failed)
			cur[i].Quality = q
			bad = append(bad, ferry.Sample{Device: dv.cfg.Name, Point: p.name, Quality: q, Time: now})
			dv.notePoint(p, q)
			nbad++
		}
	}
	dv.m.badNodes.Set(float64(nbad))
	if len(bad) > 0 {
		emit(ferry.Scan{Device: dv.cfg.Name, Time: now, Samples: bad})
	}
	// Events and alarms (events_session.go), after the values.
	es, err := dv.monitorEvents(ctx, s, sub)
	if err != nil {
		return err
	}

	probe := time.NewTicker(c.Timeouts.Keepalive)
	defer probe.Stop()
	heard := dv.now()
	checks := dv.silenceChecks(s)
	// The probe: the server time (the session is alive) and the checked
	// points (the subscription is).
	probeReq := &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{
		NodeID: ua.NewNumericNodeID(0, id.Server_ServerStatus_CurrentTime), AttributeID: ua.AttributeIDValue,
	}}}
	for _, h := range checks {
		probeReq.NodesToRead = append(probeReq.NodesToRead, &ua.ReadValueID{NodeID: s.resolved(dv.points[h]), AttributeID: ua.AttributeIDValue})
	}
	suspect := false // the last quiet probe read a value never notified
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.lost:
			return errLost
		case n := <-notifs:
			heard = dv.now()
			suspect = false
			if n.Error != nil {
				return fmt.Errorf("subscription: %w", n.Error)
			}
			switch v := n.Value.(type) {
			case *ua.DataChangeNotification:
				dv.dataChange(v, cur, emit)
			case *ua.EventNotificationList:
				dv.eventList(es, v, emit)
			case *ua.StatusChangeNotification:
				return fmt.Errorf("subscription status %s: %w", StatusName(v.Status), v.Status)
			}
		case <-probe.C:
			if dv.now().Sub(heard) < c.Timeouts.Keepalive {
				continue
			}
			// Quiet: make sure the session is alive (a publish request
			// that times out is not reported by the client library), and
			// that the subscription is: a server that dropped it (its
			// lifetime ran out, an operator deleted it) keeps the session
			// but sends nothing, and the client library does not say so.
			res, err := s.c.Read(ctx, probeReq)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("keepalive read: %w", err)
			}
			heard = dv.now()
			if p := dv.unnotified(res, checks, cur); p == "" {
				suspect = false
			} else if !suspect {
				suspect = true // a change may be on its way: look again
			} else {
				return fmt.Errorf("%w: %s has a value the subscription never delivered", errSilent, p)
			}
		}
	}
}

// errSilent ends a session whose subscription stopped delivering.
var errSilent = errors.New("subscription silent")

// maxSilenceChecks bounds the points read at each quiet keep-alive probe.
const maxSilenceChecks = 16

// silenceChecks picks the points a quiet probe reads to tell a live
// subscription from a dropped one: monitored points without a deadband
// (a change inside a deadband is rightly not notified).
func (dv *device) silenceChecks(s *session) []int {
	var out []int
	for i, p := range dv.points {
		if len(out) == maxSilenceChecks {
			break
		}
		if p.deadband.Type == "absolute" || p.deadband.Type == "percent" || s.resolved(p) == nil {
			continue
		}
		out = append(out, i)
	}
	return out
}

// unnotified returns the name of a checked point whose Good value, as
// read, differs from the last one its notifications gave ("" when none).
func (dv *device) unnotified(res *ua.ReadResponse, checks []int, cur []ferry.Sample) string {
	if res == nil || len(res.Results) != 1+len(checks) {
		return ""
	}
	now := dv.now()
	for k, h := range checks {
		p := dv.points[h]
		var read ferry.Sample
		sampleOf(&read, res.Results[1+k], p.index, now)
		if !read.Quality.IsGood() {
			continue
		}
		if !cur[h].Quality.IsGood() || !read.Value.Equal(cur[h].Value) {
			return p.name
		}
	}
	return ""
}

// itemResults applies the per-item results of one CreateMonitoredItems
// call (idx: the point of each item) and returns how many items were
// created. A refused item marks only its point Bad.
func (dv *device) itemResults(idx []int, results []*ua.MonitoredItemCreateResult) int {
	created := 0
	for k, r := range results {
		if k >= len(idx) {
			break
		}
		if r == nil || severity(r.StatusCode) == ferry.Bad {
			code := ua.StatusBad
			if r != nil {
				code = r.StatusCode
			}
			dv.points[idx[k]].failed = StatusName(code)
			continue
		}
		created++
	}
	return created
}

// drvHint lowers the device's monitored item batch size after the server
// refused a batch as too large; the next session uses it.
func (dv *device) drvHint(s *session, n int, err error) {
	dv.itemLimit = max(1, n/2)
	dv.log.Info("server refused a monitored item batch of this size; using smaller batches from the next session",
		"items", n, "now", dv.itemLimit, "reason", reasonOf(err))
}

// dataChange emits the values of one data change notification as a scan.
func (dv *device) dataChange(v *ua.DataChangeNotification, cur []ferry.Sample, emit ferry.EmitFunc) {
	start := dv.now()
	samples := make([]ferry.Sample, 0, len(v.MonitoredItems))
	for _, it := range v.MonitoredItems {
		if it == nil || int(it.ClientHandle) >= len(dv.points) {
			dv.st.Error("unknown client handle", errors.New("notification for a monitored item ferry did not create"))
			continue
		}
		h := int(it.ClientHandle)
		p := dv.points[h]
		samples = append(samples, ferry.Sample{Device: dv.cfg.Name, Point: p.name})
		s := &samples[len(samples)-1]
		sampleOf(s, it.Value, p.index, start)
		cur[h] = *s
		dv.notePoint(p, s.Quality)
	}
	dv.m.notifications.Add(float64(len(v.MonitoredItems)))
	if len(samples) == 0 {
		return
	}
	emit(ferry.Scan{Device: dv.cfg.Name, Time: start, Samples: samples})
	dv.st.Polled(start, dv.now().Sub(start), cur)
}

// deadbandFilter returns the data change filter of a deadband, or nil.
func deadbandFilter(d Deadband) *ua.ExtensionObject {
	var t ua.DeadbandType
	switch d.Type {
	case "absolute":
		t = ua.DeadbandTypeAbsolute
	case "percent":
		t = ua.DeadbandTypePercent
	default:
		return nil
	}
	return ua.NewExtensionObject(&ua.DataChangeFilter{
		Trigger:       ua.DataChangeTriggerStatusValue,
		DeadbandType:  uint32(t),
		DeadbandValue: d.Value,
	})
}
