package sinks

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/setting"
	"github.com/ferry-edge/ferry/internal/testpeer"
	ftest "github.com/ferry-edge/ferry/internal/testutil"
)

var t0 = time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)

func alert(rule, id string, st ferry.AlertState) ferry.Alert {
	return ferry.Alert{
		ID: id, Rule: rule, Device: "press3", Point: "oil_temp", Severity: ferry.SeverityCritical,
		State: st, Value: ferry.FloatValue(83.5), Message: "oil hot", Labels: map[string]string{"line": "3"},
		Since: t0, Time: t0.Add(time.Second),
	}
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ftest.WaitFor(t, 10*time.Second, what, cond)
}

// run starts s.Run and stops it at cleanup.
func run(t *testing.T, s *Sinks) {
	t.Helper()
	ftest.Run(t, "Run", 15*time.Second, s.Run)
}

func newSinks(t *testing.T, cfg Config) (*Sinks, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New(cfg, Options{Registerer: reg, Gateway: "gw1"})
	if err != nil {
		t.Fatal(err)
	}
	return s, reg
}

func config() Config {
	var c Config
	c.SetDefaults()
	c.Log.Enabled = false
	return c
}

// startBroker starts a testpeer mochi broker (on a new loopback
// listener unless opts give one) and returns its server and "host:port".
func startBroker(t *testing.T, opts ...testpeer.BrokerOption) (*mochi.Server, string) {
	t.Helper()
	b := testpeer.Broker(t, opts...)
	return b.Server(), b.Addr()
}

// recorder collects what an inline subscription receives.
type recorder struct {
	mu   sync.Mutex
	msgs []packets.Packet
}

func (r *recorder) handler(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
	r.mu.Lock()
	r.msgs = append(r.msgs, pk)
	r.mu.Unlock()
}

func (r *recorder) payloads() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.msgs {
		out = append(out, string(m.Payload))
	}
	return out
}

func retained(srv *mochi.Server, topic string) (string, bool) {
	for _, pk := range srv.Topics.Messages(topic) {
		return string(pk.Payload), true
	}
	return "", false
}

func TestMQTTSinkPublishesTransitionsAndRetainedActive(t *testing.T) {
	srv, addr := startBroker(t)
	var rec recorder
	if err := srv.Subscribe("ferry/alerts", 1, rec.handler); err != nil {
		t.Fatal(err)
	}
	cfg := config()
	cfg.MQTT = &MQTTConfig{Broker: "tcp://" + addr}
	cfg.MQTT.SetDefaults()
	s, reg := newSinks(t, cfg)
	run(t, s)

	s.Send(alert("oil_hot", "oil_hot-1", ferry.AlertRaised))
	eventually(t, "retained active message", func() bool {
		p, ok := retained(srv, "ferry/alerts/active/oil_hot")
		return ok && strings.Contains(p, `"oil_hot-1"`)
	})
	p, _ := retained(srv, "ferry/alerts/active/oil_hot")
	var list []ferry.AlertJSON
	if err := json.Unmarshal([]byte(p), &list); err != nil || len(list) != 1 || list[0].State != "raised" || list[0].Gateway != "gw1" {
		t.Fatalf("retained payload %s (%v)", p, err)
	}
	eventually(t, "transition", func() bool { return len(rec.payloads()) == 1 })
	var got ferry.AlertJSON
	if err := json.Unmarshal([]byte(rec.payloads()[0]), &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != "oil_hot-1" || got.State != "raised" || got.Value != 83.5 || got.Severity != "critical" || got.Labels["line"] != "3" {
		t.Fatalf("transition payload %+v", got)
	}
	if rec.msgs[0].FixedHeader.Qos != 1 {
		t.Errorf("QoS %d, want 1", rec.msgs[0].FixedHeader.Qos)
	}

	// An HMI that subscribes now gets the retained state.
	var late recorder
	if err := srv.Subscribe("ferry/alerts/active/#", 2, late.handler); err != nil {
		t.Fatal(err)
	}
	if ps := late.payloads(); len(ps) != 1 || !strings.Contains(ps[0], "oil_hot-1") {
		t.Fatalf("late subscriber got %q", ps)
	}

	s.Send(alert("oil_hot", "oil_hot-1", ferry.AlertCleared))
	eventually(t, "retained message deleted", func() bool {
		_, ok := retained(srv, "ferry/alerts/active/oil_hot")
		return !ok
	})
	eventually(t, "cleared transition", func() bool { return len(rec.payloads()) == 2 })
	if !strings.Contains(rec.payloads()[1], `"state":"cleared"`) {
		t.Fatalf("second transition %s", rec.payloads()[1])
	}
	eventually(t, "sent counter", func() bool {
		return testutil.ToFloat64(s.m.sent.WithLabelValues("mqtt")) == 2
	})
	if n, _ := testutil.GatherAndCount(reg, "ferry_alert_sink_connected"); n != 1 {
		t.Fatalf("connected gauge series %d", n)
	}
}

func TestMQTTSinkQueuesWhileBrokerDown(t *testing.T) {
	// A port bound but not listening: refused until the broker comes up
	// on it, and no one else can take it meanwhile.
	reserved := testpeer.Reserve(t)
	addr := reserved.Addr()

	cfg := config()
	cfg.MQTT = &MQTTConfig{Broker: "tcp://" + addr}
	cfg.MQTT.SetDefaults()
	cfg.MQTT.Timeout = time.Second
	s, _ := newSinks(t, cfg)
	s.Restore([]ferry.Alert{alert("restored", "restored-1", ferry.AlertAcknowledged)})
	run(t, s)
	s.Send(alert("oil_hot", "oil_hot-1", ferry.AlertRaised))
	eventually(t, "connection errors counted", func() bool {
		return testutil.ToFloat64(s.m.errors.WithLabelValues("mqtt")) >= 1
	})

	srv, _ := startBroker(t, testpeer.BrokerListener(reserved.Listen(t)))
	var rec recorder
	if err := srv.Subscribe("ferry/alerts", 1, rec.handler); err != nil {
		t.Fatal(err)
	}
	eventually(t, "queued alert delivered after the broker came up", func() bool { return len(rec.payloads()) == 1 })
	eventually(t, "restored alert retained", func() bool {
		p, ok := retained(srv, "ferry/alerts/active/restored")
		return ok && strings.Contains(p, `"acknowledged"`)
	})
	if n := testutil.ToFloat64(s.m.dropped.WithLabelValues("mqtt", "attempts")); n != 0 {
		t.Fatalf("dropped %v while the broker was down", n)
	}
}

type hook struct {
	mu      sync.Mutex
	reqs    []*http.Request
	bodies  [][]byte
	answer  func(n int) int // status for request n (1-based)
	block   chan struct{}   // when set, handlers wait on it
	entered chan struct{}
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.reqs = append(h.reqs, r)
	h.bodies = append(h.bodies, b)
	n := len(h.reqs)
	h.mu.Unlock()
	if h.block != nil {
		select {
		case h.entered <- struct{}{}:
		default:
		}
		<-h.block
	}
	code := http.StatusNoContent
	if h.answer != nil {
		code = h.answer(n)
	}
	w.WriteHeader(code)
}

func (h *hook) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.reqs)
}

func webhookConfig(url string) Config {
	cfg := config()
	cfg.Webhook = &WebhookConfig{URL: url}
	cfg.Webhook.SetDefaults()
	cfg.Webhook.RetryMin, cfg.Webhook.RetryMax = 5*time.Millisecond, 20*time.Millisecond
	cfg.Webhook.Attempts = 3
	return cfg
}

func TestWebhook(t *testing.T) {
	tests := []struct {
		name       string
		answer     func(n int) int
		wantReqs   int
		wantSent   float64
		wantDrop   string
		wantErrors float64
	}{
		{"delivered", nil, 1, 1, "", 0},
		{"retried then delivered", func(n int) int {
			if n < 3 {
				return http.StatusServiceUnavailable
			}
			return http.StatusOK
		}, 3, 1, "", 2},
		{"failing: retried then dropped", func(int) int { return http.StatusInternalServerError }, 3, 0, "attempts", 3},
		{"rate limited is retried", func(int) int { return http.StatusTooManyRequests }, 3, 0, "attempts", 3},
		{"rejected: not retried", func(int) int { return http.StatusBadRequest }, 1, 0, "rejected", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &hook{answer: tc.answer}
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)
			cfg := webhookConfig(srv.URL + "/alerts?token=s3cret")
			cfg.Webhook.Headers = map[string]setting.Secret{"Authorization": "Bearer abc"}
			s, _ := newSinks(t, cfg)
			run(t, s)
			s.Send(alert("oil_hot", "oil_hot-1", ferry.AlertRaised))
			done := func() bool {
				return testutil.ToFloat64(s.m.sent.WithLabelValues("webhook"))+
					testutil.ToFloat64(s.m.dropped.WithLabelValues("webhook", "attempts"))+
					testutil.ToFloat64(s.m.dropped.WithLabelValues("webhook", "rejected")) == 1
			}
			eventually(t, "delivery or drop", done)
			if h.count() != tc.wantReqs {
				t.Errorf("requests %d, want %d", h.count(), tc.wantReqs)
			}
			if got := testutil.ToFloat64(s.m.sent.WithLabelValues("webhook")); got != tc.wantSent {
				t.Errorf("sent %v, want %v", got, tc.wantSent)
			}
			if tc.wantDrop != "" {
				if got := testutil.ToFloat64(s.m.dropped.WithLabelValues("webhook", tc.wantDrop)); got != 1 {
					t.Errorf("dropped{%s} %v, want 1", tc.wantDrop, got)
				}
			}
			if got := testutil.ToFloat64(s.m.errors.WithLabelValues("webhook")); got != tc.wantErrors {
				t.Errorf("errors %v, want %v", got, tc.wantErrors)
			}
			r := h.reqs[0]
			if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" ||
				r.Header.Get("Authorization") != "Bearer abc" || r.Header.Get("Idempotency-Key") != "oil_hot-1:raised" {
				t.Errorf("request %s %v", r.Method, r.Header)
			}
			var got ferry.AlertJSON
			if err := json.Unmarshal(h.bodies[0], &got); err != nil || got.ID != "oil_hot-1" || got.Gateway != "gw1" || got.Point != "oil_temp" {
				t.Errorf("body %s (%v)", h.bodies[0], err)
			}
		})
	}
}

// TestSlowSinkDelaysNoOne: a webhook that hangs fills its own queue and
// drops what does not fit; Send never waits, and the stream and the other
// sinks get everything.
func TestSlowSinkDelaysNoOne(t *testing.T) {
	h := &hook{block: make(chan struct{}), entered: make(chan struct{}, 1)}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(h.block) })
	cfg := webhookConfig(srv.URL)
	cfg.Webhook.Queue = 2
	cfg.Webhook.Timeout = time.Minute
	cfg.Log.Enabled, cfg.Log.Queue = true, 1000
	var logs ftest.SyncBuffer
	reg := prometheus.NewRegistry()
	s, err := New(cfg, Options{Registerer: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	s.Send(alert("r", "r-0", ferry.AlertRaised))
	select {
	case <-h.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("webhook not called")
	}
	sent := make(chan struct{})
	go func() {
		for i := 1; i <= 100; i++ {
			s.Send(alert("r", "r-"+string(rune('a'+i%26)), ferry.AlertRaised))
		}
		close(sent)
	}()
	select {
	case <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("Send blocked behind a hanging webhook")
	}
	if got := testutil.ToFloat64(s.m.dropped.WithLabelValues("webhook", "queue_full")); got != 98 {
		t.Errorf("webhook queue_full drops %v, want 98 (queue of 2 behind one in flight)", got)
	}
	eventually(t, "log sink got every alert", func() bool {
		return testutil.ToFloat64(s.m.sent.WithLabelValues("log")) == 101
	})
	if !strings.Contains(logs.String(), "alert raised: oil hot") || !strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("log output:\n%.400s", logs.String())
	}
}

// sseClient reads events from a stream.
type sseClient struct {
	resp   *http.Response
	events chan sseEvent
}

type sseEvent struct{ name, data string }

func dialSSE(t *testing.T, url string) *sseClient {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream answered %s %v", resp.Status, resp.Header)
	}
	c := &sseClient{resp: resp, events: make(chan sseEvent, 1024)}
	go func() {
		defer close(c.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					c.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return c
}

func (c *sseClient) next(t *testing.T) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-c.events:
		if !ok {
			t.Fatal("stream ended")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	return sseEvent{}
}

func TestStream(t *testing.T) {
	cfg := config()
	cfg.Stream.Clients = 2
	cfg.Stream.Heartbeat = 20 * time.Millisecond
	s, _ := newSinks(t, cfg)
	srv := httptest.NewServer(s.Stream())
	defer srv.Close()
	runCtx, stop := context.WithCancel(context.Background())
	runDone := make(chan error)
	go func() { runDone <- s.Run(runCtx) }()

	a := dialSSE(t, srv.URL)
	eventually(t, "client registered", func() bool { return testutil.ToFloat64(s.m.clients) == 1 })
	b := dialSSE(t, srv.URL)
	eventually(t, "second client registered", func() bool { return testutil.ToFloat64(s.m.clients) == 2 })
	// A third is refused: the hub is bounded.
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third client: %s", resp.Status)
	}

	for _, st := range []ferry.AlertState{ferry.AlertRaised, ferry.AlertAcknowledged, ferry.AlertCleared} {
		s.Send(alert("oil_hot", "oil_hot-1", st))
	}
	for _, c := range []*sseClient{a, b} {
		for _, want := range []string{"raised", "acknowledged", "cleared"} {
			ev := c.next(t)
			var got ferry.AlertJSON
			if err := json.Unmarshal([]byte(ev.data), &got); err != nil || ev.name != "alert" || got.State != want || got.ID != "oil_hot-1" {
				t.Fatalf("event %+v (%v), want alert %s", ev, err, want)
			}
		}
	}
	// Run's end closes every stream.
	stop()
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	for _, c := range []*sseClient{a, b} {
		select {
		case _, ok := <-c.events:
			for ok {
				_, ok = <-c.events
			}
		case <-time.After(10 * time.Second):
			t.Fatal("stream not closed at shutdown")
		}
	}
}

// TestStreamDropsSlowClient: a client that stops reading is disconnected
// once its buffer is full; a reading client keeps getting every event.
func TestStreamDropsSlowClient(t *testing.T) {
	cfg := config()
	cfg.Stream.Buffer = 8
	s, _ := newSinks(t, cfg)
	srv := httptest.NewServer(s.Stream())
	t.Cleanup(srv.Close) // after Run's cleanup has closed the streams
	run(t, s)

	// The slow client: connected, never reads.
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "slow client registered", func() bool { return testutil.ToFloat64(s.m.clients) == 1 })
	fast := dialSSE(t, srv.URL)
	eventually(t, "fast client registered", func() bool { return testutil.ToFloat64(s.m.clients) == 2 })

	big := alert("r", "r-1", ferry.AlertRaised)
	big.Message = strings.Repeat("x", 16<<10)
	var n int
	for testutil.ToFloat64(s.m.dropped.WithLabelValues("stream", "slow_client")) == 0 {
		if n++; n > 20000 {
			t.Fatal("slow client never dropped")
		}
		s.Send(big)
		if ev := fast.next(t); ev.name != "alert" {
			t.Fatalf("fast client got %+v", ev)
		}
	}
	eventually(t, "slow client gone", func() bool { return testutil.ToFloat64(s.m.clients) == 1 })
	s.Send(alert("r", "r-2", ferry.AlertCleared))
	if ev := fast.next(t); !strings.Contains(ev.data, `"r-2"`) {
		t.Fatalf("fast client after the drop got %.100s", ev.data)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(c *Config)
		want string
	}{
		{"defaults", func(*Config) {}, ""},
		{"mqtt ok", func(c *Config) { c.MQTT = &MQTTConfig{Broker: "tcp://h:1883"}; c.MQTT.SetDefaults() }, ""},
		{"mqtt no broker", func(c *Config) { c.MQTT = &MQTTConfig{}; c.MQTT.SetDefaults() }, "mqtt.broker: is required"},
		{"mqtt scheme", func(c *Config) { c.MQTT = &MQTTConfig{Broker: "http://h:1"}; c.MQTT.SetDefaults() }, `mqtt.broker: scheme "http" is not one of`},
		{"mqtt wildcard", func(c *Config) {
			c.MQTT = &MQTTConfig{Broker: "tcp://h:1"}
			c.MQTT.SetDefaults()
			c.MQTT.Topic = "a/#"
		}, `mqtt.topic: "a/#" holds a wildcard`},
		{"mqtt tls pair", func(c *Config) {
			c.MQTT = &MQTTConfig{Broker: "ssl://h:1", TLS: &TLSConfig{CertFile: "c.pem"}}
			c.MQTT.SetDefaults()
		}, "mqtt.tls: cert_file and key_file go together"},
		{"webhook url", func(c *Config) { c.Webhook = &WebhookConfig{URL: "ftp://x"}; c.Webhook.SetDefaults() }, `webhook.url: "ftp://x" is not an http:// or https:// URL`},
		{"webhook attempts", func(c *Config) {
			c.Webhook = &WebhookConfig{URL: "http://x"}
			c.Webhook.SetDefaults()
			c.Webhook.Attempts = 0
		}, "webhook.attempts: 0 must be at least 1"},
		{"webhook retry", func(c *Config) {
			c.Webhook = &WebhookConfig{URL: "http://x"}
			c.Webhook.SetDefaults()
			c.Webhook.RetryMax = time.Millisecond
		}, "webhook.retry_max: 1ms is less than retry_min (1s)"},
		{"stream buffer", func(c *Config) { c.Stream.Buffer = 0 }, "stream.buffer: 0 must be at least 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c Config
			c.SetDefaults()
			tc.mod(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if _, nerr := New(c, Options{}); nerr == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
}

// TestNewTwiceWithOneRegistry: a reload may build the sinks again.
func TestNewTwiceWithOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := webhookConfig("http://127.0.0.1:1/x")
	cfg.Log.Enabled = true
	a, err := New(cfg, Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	a.Send(alert("r", "r-1", ferry.AlertRaised))
	b, err := New(cfg, Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if a.m.sent != b.m.sent {
		t.Fatal("second Sinks does not share the counters")
	}
	if n, err := testutil.GatherAndCount(reg, "ferry_alert_sink_queue_length"); err != nil || n != 2 {
		t.Fatalf("queue gauges %d %v", n, err)
	}
}

// aclHook lets every client in and refuses publishes to topics deny
// names, as a broker ACL does (an MQTT 3.1.1 client is disconnected).
type aclHook struct {
	mochi.HookBase
	mu      sync.Mutex
	deny    map[string]bool
	refused map[string]int // publishes refused, by topic
}

func (h *aclHook) ID() string { return "acl" }

func (h *aclHook) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}

func (h *aclHook) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }

func (h *aclHook) OnACLCheck(_ *mochi.Client, topic string, write bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if write && h.deny[topic] {
		if h.refused == nil {
			h.refused = map[string]int{}
		}
		h.refused[topic]++
		return false
	}
	return true
}

func (h *aclHook) refusals(topic string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refused[topic]
}

func (h *aclHook) set(topic string, deny bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.deny[topic] = deny
}

// TestMQTTSinkRefusedTopicIsDropped: a topic the broker refuses costs
// `attempts` tries and is dropped, counted; it does not block the queue.
func TestMQTTSinkRefusedTopicIsDropped(t *testing.T) {
	acl := &aclHook{deny: map[string]bool{"ferry/alerts/active/poison": true}}
	srv, addr := startBroker(t, testpeer.BrokerAuth(acl))
	var rec recorder
	if err := srv.Subscribe("ferry/alerts", 1, rec.handler); err != nil {
		t.Fatal(err)
	}
	cfg := config()
	cfg.MQTT = &MQTTConfig{Broker: "tcp://" + addr}
	cfg.MQTT.SetDefaults()
	cfg.MQTT.Attempts = 2
	s, _ := newSinks(t, cfg)
	run(t, s)
	dropped := func() float64 { return testutil.ToFloat64(s.m.dropped.WithLabelValues("mqtt", "attempts")) }

	s.Send(alert("poison", "poison-1", ferry.AlertRaised))
	s.Send(alert("zgood", "zgood-1", ferry.AlertRaised))
	eventually(t, "the refused retained message dropped", func() bool { return dropped() == 1 })
	eventually(t, "the other rule's retained message", func() bool {
		_, ok := retained(srv, "ferry/alerts/active/zgood")
		return ok
	})
	eventually(t, "both transitions", func() bool { return len(rec.payloads()) == 2 })
	if _, ok := retained(srv, "ferry/alerts/active/poison"); ok {
		t.Fatal("refused topic retained")
	}

	// The transition topic refused: each alert is dropped after its
	// attempts, and delivery resumes when the broker allows it again.
	acl.set("ferry/alerts", true)
	s.Send(alert("x", "x-1", ferry.AlertRaised))
	eventually(t, "the refused transition dropped", func() bool { return dropped() == 2 })
	acl.set("ferry/alerts", false)
	s.Send(alert("x", "x-1", ferry.AlertCleared))
	eventually(t, "delivery after the refusal", func() bool {
		ps := rec.payloads()
		return len(ps) == 3 && strings.Contains(ps[2], `"x-1"`) && strings.Contains(ps[2], "cleared")
	})

	// The refused rule's next transition gets its attempts again.
	if n := acl.refusals("ferry/alerts/active/poison"); n != 2 {
		t.Fatalf("retained publishes refused %d times for the first transition, want 2 (attempts)", n)
	}
	s.Send(alert("poison", "poison-2", ferry.AlertRaised))
	eventually(t, "the next transition's retained message dropped", func() bool { return dropped() == 3 })
	if n := acl.refusals("ferry/alerts/active/poison"); n != 4 {
		t.Fatalf("retained publishes refused %d times after the next transition, want 4 (attempts again)", n)
	}
}
