package sinks

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferry-edge/ferry/internal/tlsfile"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/backoff"
)

// mqttSink publishes each transition (QoS 1) on the configured topic and
// keeps one retained message per rule on <active_topic>/<rule>: a JSON
// array of that rule's active alerts, or an empty payload (which deletes
// the retained message) when it has none. One goroutine owns the
// connection; it reconnects with backoff and republishes every retained
// message after a reconnect, so an HMI sees the right state even after a
// broker restart.
type mqttSink struct {
	cfg     MQTTConfig
	log     *slog.Logger
	gateway string
	q       *queue

	sent, errs     prometheus.Counter
	dropAttempts   prometheus.Counter
	connectedGauge prometheus.Gauge

	mu     sync.Mutex
	active map[string]map[string]ferry.Alert // rule → id → alert
	dirty  map[string]bool                   // rules whose retained message is out of date
	// moved holds the rules with a transition since the last flush: their
	// failed-publish count starts over.
	moved map[string]bool
	// retainedFails counts failed publishes per rule; run's goroutine only.
	retainedFails map[string]int
	dirtyC        chan struct{}
	lost          chan struct{}
}

func newMQTTSink(cfg MQTTConfig, opts Options, m *metrics) *mqttSink {
	if cfg.ActiveTopic == "" {
		cfg.ActiveTopic = cfg.Topic + "/active"
	}
	if cfg.ClientID == "" {
		cfg.ClientID = opts.Gateway + "-alerts"
		if opts.Gateway == "" {
			cfg.ClientID = "ferry-alerts"
		}
	}
	return &mqttSink{
		cfg:            cfg,
		log:            opts.Logger.With("sink", "mqtt", "broker", cfg.Broker),
		gateway:        opts.Gateway,
		q:              newQueue("mqtt", cfg.Queue, m),
		sent:           m.sent.WithLabelValues("mqtt"),
		errs:           m.errors.WithLabelValues("mqtt"),
		dropAttempts:   m.dropped.WithLabelValues("mqtt", "attempts"),
		connectedGauge: m.connected.WithLabelValues("mqtt"),
		active:         map[string]map[string]ferry.Alert{},
		dirty:          map[string]bool{},
		moved:          map[string]bool{},
		retainedFails:  map[string]int{},
		dirtyC:         make(chan struct{}, 1),
		lost:           make(chan struct{}, 1),
	}
}

// send tracks the rule's active set (for the retained message) at once,
// so that it stays right even when the transition itself is dropped from
// a full queue, then queues the transition.
func (s *mqttSink) send(a ferry.Alert) {
	s.mu.Lock()
	s.track(a)
	s.mu.Unlock()
	select {
	case s.dirtyC <- struct{}{}:
	default:
	}
	s.q.push(a)
}

func (s *mqttSink) track(a ferry.Alert) {
	set := s.active[a.Rule]
	if a.State.Active() {
		if set == nil {
			set = map[string]ferry.Alert{}
			s.active[a.Rule] = set
		}
		set[a.ID] = a
	} else {
		delete(set, a.ID)
		if len(set) == 0 {
			delete(s.active, a.Rule)
		}
	}
	s.dirty[a.Rule] = true
	s.moved[a.Rule] = true
}

func (s *mqttSink) restore(active []ferry.Alert) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range active {
		s.track(a)
	}
}

func (s *mqttSink) run(ctx context.Context) {
	var (
		client    paho.Client
		pending   *ferry.Alert
		attempts  int // failed publishes of pending
		connected bool
		wasDown   bool // logged as unreachable: log the recovery
		conn      = backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
		retry     = backoff.Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second}
	)
	defer func() {
		if client != nil {
			client.Disconnect(250)
		}
		s.connectedGauge.Set(0)
	}()
	// failed handles a failed publish. A publish that fails counts as an
	// attempt even when the connection dropped with it: a broker refuses
	// a topic (ACL) to an MQTT 3.1.1 client by disconnecting it, and such
	// an alert must not loop through reconnects for ever. A broker that
	// cannot be reached at all costs no attempts (nothing is published).
	failed := func(err error) bool {
		if !client.IsConnectionOpen() {
			connected = s.down(&wasDown, err)
		}
		return retry.Wait(ctx)
	}
	for ctx.Err() == nil {
		if !connected {
			if client != nil {
				client.Disconnect(0)
			}
			var err error
			client, err = s.connect(ctx)
			if err != nil {
				s.errs.Inc()
				if !wasDown {
					s.log.Warn("alert broker unreachable; retrying", "err", err)
					wasDown = true
				} else {
					s.log.Debug("alert broker still unreachable", "err", err)
				}
				if !conn.Wait(ctx) {
					return
				}
				continue
			}
			connected = true
			conn.Reset()
			s.connectedGauge.Set(1)
			if wasDown {
				s.log.Info("alert broker connected")
				wasDown = false
			} else {
				s.log.Debug("alert broker connected")
			}
			// Republish every retained message (the broker may have lost
			// them), except those it refused: they wait for a transition.
			s.mu.Lock()
			for rule := range s.active {
				if s.retainedFails[rule] < s.cfg.Attempts {
					s.dirty[rule] = true
				}
			}
			s.mu.Unlock()
		}
		if err := s.flushRetained(ctx, client); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.errs.Inc()
			s.log.Debug("retained active alerts not published", "err", err)
			if !failed(err) {
				return
			}
			continue
		}
		if pending == nil {
			select {
			case <-ctx.Done():
				return
			case <-s.lost:
				connected = s.down(&wasDown, errors.New("connection lost"))
				continue
			case <-s.dirtyC:
				continue
			case <-s.q.ready:
				a, ok := s.q.pop()
				if !ok {
					continue
				}
				pending, attempts = &a, 0
			}
		}
		if err := s.publish(ctx, client, *pending); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.errs.Inc()
			if attempts++; attempts >= s.cfg.Attempts {
				s.dropAttempts.Inc()
				s.log.Warn("alert dropped after failed publishes", "rule", pending.Rule, "id", pending.ID, "state", pending.State.String(), "attempts", attempts, "err", err)
				pending = nil
			}
			if !failed(err) {
				return
			}
			continue
		}
		s.sent.Inc()
		pending = nil
		retry.Reset()
	}
}

// down records a lost connection; it returns false (not connected).
func (s *mqttSink) down(wasDown *bool, err error) bool {
	s.connectedGauge.Set(0)
	if !*wasDown {
		s.log.Warn("alert broker connection lost; reconnecting", "err", err)
		*wasDown = true
	}
	return false
}

func (s *mqttSink) connect(ctx context.Context) (paho.Client, error) {
	o := paho.NewClientOptions().
		AddBroker(s.cfg.Broker).
		SetClientID(s.cfg.ClientID).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(s.cfg.Timeout).
		SetWriteTimeout(s.cfg.Timeout).
		SetKeepAlive(s.cfg.KeepAlive).
		SetConnectionLostHandler(func(paho.Client, error) {
			select {
			case s.lost <- struct{}{}:
			default:
			}
		})
	if s.cfg.Username != "" {
		o.SetUsername(s.cfg.Username)
	}
	if s.cfg.Password != "" {
		o.SetPassword(s.cfg.Password.Reveal())
	}
	if s.cfg.TLS != nil || strings.HasPrefix(s.cfg.Broker, "ssl:") || strings.HasPrefix(s.cfg.Broker, "tls:") ||
		strings.HasPrefix(s.cfg.Broker, "mqtts:") || strings.HasPrefix(s.cfg.Broker, "wss:") {
		tc, err := tlsConfig(s.cfg.TLS)
		if err != nil {
			return nil, err
		}
		o.SetTLSConfig(tc)
	}
	// A stale "lost" from the previous connection must not end this one.
	select {
	case <-s.lost:
	default:
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if err := wait(ctx, tok, s.cfg.Timeout); err != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("connect %s: %w", s.cfg.Broker, err)
	}
	return c, nil
}

// flushRetained publishes the retained message of every rule whose active
// set changed. It stops at the first failure; the rules not published stay
// dirty, except a rule whose message failed `attempts` times, which is
// dropped (counted) until its next transition.
func (s *mqttSink) flushRetained(ctx context.Context, c paho.Client) error {
	s.mu.Lock()
	for rule := range s.moved {
		delete(s.retainedFails, rule) // a new transition gets its attempts
	}
	clear(s.moved)
	// Rules that failed before go last, so that one refused topic (which
	// may cost the connection) does not starve the others.
	rules := slices.SortedFunc(maps.Keys(s.dirty), func(a, b string) int {
		if c := s.retainedFails[a] - s.retainedFails[b]; c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	payloads := make([][]byte, len(rules))
	for i, rule := range rules {
		set := s.active[rule]
		if len(set) == 0 {
			continue // empty payload: deletes the retained message
		}
		list := make([]ferry.AlertJSON, 0, len(set))
		for _, a := range set {
			list = append(list, ferry.NewAlertJSON(a, s.gateway))
		}
		slices.SortFunc(list, func(a, b ferry.AlertJSON) int { return a.Since.Compare(b.Since) })
		payloads[i], _ = json.Marshal(list)
	}
	clear(s.dirty)
	s.mu.Unlock()
	for i, rule := range rules {
		tok := c.Publish(s.cfg.ActiveTopic+"/"+rule, 1, true, payloads[i])
		err := wait(ctx, tok, s.cfg.Timeout)
		if err == nil {
			delete(s.retainedFails, rule)
			continue
		}
		rest := rules[i+1:]
		if s.retainedFails[rule]++; s.retainedFails[rule] >= s.cfg.Attempts {
			// Given up until the rule's next transition; the count stays,
			// so a reconnect does not try it again.
			s.dropAttempts.Inc()
			s.log.Warn("retained active alerts dropped after failed publishes", "rule", rule, "attempts", s.cfg.Attempts, "err", err)
		} else {
			rest = rules[i:]
		}
		s.mu.Lock()
		for _, r := range rest {
			s.dirty[r] = true
		}
		s.mu.Unlock()
		return fmt.Errorf("publish %s/%s: %w", s.cfg.ActiveTopic, rule, err)
	}
	return nil
}

func (s *mqttSink) publish(ctx context.Context, c paho.Client, a ferry.Alert) error {
	b, err := json.Marshal(ferry.NewAlertJSON(a, s.gateway))
	if err != nil {
		return err
	}
	if err := wait(ctx, c.Publish(s.cfg.Topic, 1, false, b), s.cfg.Timeout); err != nil {
		return fmt.Errorf("publish %s: %w", s.cfg.Topic, err)
	}
	return nil
}

// wait waits for a paho token, at most timeout or until ctx ends.
func wait(ctx context.Context, tok paho.Token, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-t.C:
		return fmt.Errorf("no answer within %v", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// tlsConfig builds the TLS configuration for the broker; files are read
// here, at connect time.
func tlsConfig(c *TLSConfig) (*tls.Config, error) {
	if c == nil {
		return tlsfile.Client(tlsfile.Files{})
	}
	tc, err := tlsfile.Client(tlsfile.Files{CA: c.CAFile, Cert: c.CertFile, Key: c.KeyFile, ServerName: c.ServerName, Insecure: c.InsecureSkipVerify})
	if err != nil {
		return nil, fmt.Errorf("tls %w", err)
	}
	return tc, nil
}
