package mqtt

import (
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/label"
	"github.com/ferry-edge/ferry/internal/testpeer"
	ftest "github.com/ferry-edge/ferry/internal/testutil"
)

// TestRebirthRequestGolden checks the NCMD payload against bytes derived
// by hand from the specification's field numbers.
func TestRebirthRequestGolden(t *testing.T) {
	//   08 01                       timestamp = 1
	//   12 1c                       metric, 28 bytes:
	//     0a 14 "Node Control/Rebirth"  name (20 bytes)
	//     18 01                     timestamp = 1
	//     20 0b                     datatype = Boolean (11)
	//     70 01                     boolean_value (field 14) = true
	want := "0801" + "121c" + "0a14" + hex.EncodeToString([]byte("Node Control/Rebirth")) + "1801" + "200b" + "7001"
	if got := hex.EncodeToString(appendRebirthRequest(nil, 1)); got != want {
		t.Fatalf("payload\n got %s\nwant %s", got, want)
	}
	if got := rebirthTopic(spNodeKey{"G1", "E1"}); got != "spBv1.0/G1/NCMD/E1" {
		t.Errorf("topic %s", got)
	}
}

// edgeNode is a Sparkplug edge node E1 of group G1 with one device press1,
// a paho client of its own. It records every NCMD it sees and, when
// answer is set, answers a rebirth request with a fresh NBIRTH and DBIRTH.
type edgeNode struct {
	t      *testing.T
	client paho.Client
	answer bool

	mu      sync.Mutex
	ncmds   []spPayload // every NCMD seen, decoded
	bad     []string    // NCMDs that are not a well-formed rebirth request
	seq     int
	bdSeq   uint64
	dbirths atomic.Int32 // DBIRTHs the broker has routed back to the node

	births chan struct{}
	wg     sync.WaitGroup
}

func startEdgeNode(t *testing.T, b *testpeer.MQTTBroker, answer bool) *edgeNode {
	t.Helper()
	e := &edgeNode{t: t, answer: answer, births: make(chan struct{}, 16)}
	o := paho.NewClientOptions().AddBroker(b.URL()).SetClientID("edge-E1").SetCleanSession(true).SetAutoReconnect(false)
	o.SetDefaultPublishHandler(e.onMessage)
	e.client = paho.NewClient(o)
	if tok := e.client.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("edge node connect: %v", tok.Error())
	}
	// Every Sparkplug message: also what ferry would publish by mistake.
	if tok := e.client.Subscribe("spBv1.0/#", 0, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("edge node subscribe: %v", tok.Error())
	}
	stop := make(chan struct{})
	e.wg.Add(1)
	go func() { // answers rebirth requests; paho forbids publishing from the handler
		defer e.wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-e.births:
				e.birth(50)
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		e.wg.Wait()
		e.client.Disconnect(0)
	})
	return e
}

func (e *edgeNode) onMessage(_ paho.Client, m paho.Message) {
	t, ok := parseSparkplugTopic(m.Topic())
	if ok && t.kind == "DBIRTH" {
		e.dbirths.Add(1)
	}
	if !ok || t.kind != "NCMD" {
		return
	}
	var p spPayload
	err := decodeSparkplug(m.Payload(), &p)
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case err != nil:
		e.bad = append(e.bad, err.Error())
		return
	case m.Topic() != "spBv1.0/G1/NCMD/E1" || m.Qos() != 0 || m.Retained():
		e.bad = append(e.bad, m.Topic())
		return
	case len(p.metrics) != 1 || string(p.metrics[0].name) != rebirthMetric || p.metrics[0].datatype != spBoolean ||
		p.metrics[0].valField != spMetricBoolValue || p.metrics[0].bits != 1 || !p.hasTime || p.hasSeq:
		e.bad = append(e.bad, hex.EncodeToString(m.Payload()))
		return
	}
	p.metrics = append([]spMetric(nil), p.metrics...)
	e.ncmds = append(e.ncmds, p)
	if e.answer {
		select {
		case e.births <- struct{}{}:
		default:
		}
	}
}

func (e *edgeNode) requests() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.bad) > 0 {
		e.t.Errorf("malformed NCMDs: %v", e.bad)
	}
	return len(e.ncmds)
}

func (e *edgeNode) publish(topic string, payload []byte) {
	tok := e.client.Publish(topic, 0, false, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		e.t.Errorf("edge node publish %s: %v", topic, tok.Error())
	}
}

// birth publishes NBIRTH and DBIRTH (new bdSeq, seq 0 and 1) with
// pressure p.
func (e *edgeNode) birth(p float64) {
	e.mu.Lock()
	e.bdSeq++
	bd := e.bdSeq
	e.seq = 2
	e.mu.Unlock()
	ts := uint64(time.Now().UnixMilli())
	e.publish("spBv1.0/G1/NBIRTH/E1", encPayload(ts, 0,
		tMetric{name: "bdSeq", dt: spInt64, longV: u64(bd)},
		tMetric{name: "Temperature", alias: 1, hasAlias: true, dt: spDouble, doubleV: f64(20)}))
	e.publish("spBv1.0/G1/DBIRTH/E1/press1", encPayload(ts, 1,
		tMetric{name: "Pressure", alias: 10, hasAlias: true, dt: spFloat, floatV: f32(float32(p))}))
}

// ddata publishes DDATA of press1 by alias only, with the next seq.
func (e *edgeNode) ddata(p float64) { e.data(10, p, 0) }

// data publishes DDATA of press1 with metric alias, skipping skip
// sequence numbers.
func (e *edgeNode) data(alias uint64, p float64, skip int) {
	e.mu.Lock()
	seq := (e.seq + skip) % 256
	e.seq = (seq + 1) % 256
	e.mu.Unlock()
	e.publish("spBv1.0/G1/DDATA/E1/press1", encPayload(uint64(time.Now().UnixMilli()), seq,
		tMetric{alias: alias, hasAlias: true, floatV: f32(float32(p))}))
}

// rebirthSetup starts a broker, an edge node that was born before ferry
// started, and ferry with a device for press1.
func rebirthSetup(t *testing.T, rebirth, answer bool, edit func(*Options)) (*edgeNode, *commitStore, *running, Options) {
	b := testpeer.Broker(t)
	e := startEdgeNode(t, b, answer)
	e.birth(1) // nobody listens yet: the aliases are lost to ferry
	// The broker has routed the births before ferry subscribes.
	waitFor(t, "births routed", 5*time.Second, func() bool { return e.dbirths.Load() == 1 })
	store := newCommitStore(t)
	dev := sparkplugDevice("press", b.URL(), "press1", Point{Name: "pressure", Metric: "Pressure"})
	dev.Config.Sparkplug.Rebirth = rebirth
	opts := testOptions(nil)
	if edit != nil {
		edit(&opts)
	}
	r := start(t, []Device{dev}, opts, store.emit)
	waitFor(t, "subscription", 5*time.Second, func() bool { return b.Subscriptions(r.d.ClientID()) == 1 })
	return e, store, r, opts
}

func unknownAliases(o Options) float64 {
	return testutil.ToFloat64(o.Metrics.payloadErrs.WithLabelValues("press", label.Code(reasonUnknownAlias)))
}

// TestSparkplugRebirth: ferry starts after the edge node's births and gets
// DDATA by alias only; it asks for a rebirth, the node re-births, and the
// next DDATA is resolved.
func TestSparkplugRebirth(t *testing.T) {
	e, store, r, opts := rebirthSetup(t, true, true, nil)
	e.ddata(2)
	waitFor(t, "rebirth request", 5*time.Second, func() bool { return e.requests() == 1 })
	// The answer: the births' values, then the data resolved.
	waitFor(t, "DBIRTH values", 5*time.Second, func() bool { return len(store.samples("press")) == 1 })
	e.ddata(7.5)
	waitFor(t, "DDATA resolved", 5*time.Second, func() bool { return len(store.samples("press")) == 2 })
	s := store.samples("press")
	if s[0].Value.Float64() != 50 || s[1].Value.Float64() != 7.5 || !s[1].Quality.IsGood() {
		t.Errorf("samples %v", s)
	}
	if got := unknownAliases(opts); got != 1 {
		t.Errorf("unknown alias counted %v times, want 1 (the DDATA before the rebirth)", got)
	}
	if got := testutil.ToFloat64(opts.Metrics.rebirths.WithLabelValues(r.d.ClientID(), "G1/E1", "sent")); got != 1 {
		t.Errorf("ferry_mqtt_sparkplug_rebirth_requests_total{result=sent} = %v, want 1", got)
	}
	if !r.d.devices[0].stat.IsConnected() {
		t.Error("device not connected after the rebirth")
	}
}

// TestSparkplugRebirthRateLimit: a burst of unresolvable data from a node
// that does not answer gives one request; after rebirthInterval, the next
// unresolvable message gives another.
func TestSparkplugRebirthRateLimit(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	e, _, r, opts := rebirthSetup(t, true, false, func(o *Options) { o.Now = now })
	for i := 0; i < 5; i++ {
		e.ddata(float64(i))
	}
	waitFor(t, "burst handled", 5*time.Second, func() bool { return unknownAliases(opts) == 5 })
	waitFor(t, "one request", 5*time.Second, func() bool { return e.requests() >= 1 })
	never(t, 100*time.Millisecond, "a second rebirth request for one burst", func() bool { return e.requests() > 1 })

	clock.Add(int64(rebirthInterval - time.Second))
	e.ddata(8)
	waitFor(t, "message handled", 5*time.Second, func() bool { return unknownAliases(opts) == 6 })
	clock.Add(int64(time.Second))
	e.ddata(9)
	waitFor(t, "second request", 5*time.Second, func() bool { return e.requests() == 2 })
	never(t, 100*time.Millisecond, "a third rebirth request", func() bool { return e.requests() > 2 })
	if got := testutil.ToFloat64(opts.Metrics.rebirths.WithLabelValues(r.d.ClientID(), "G1/E1", "sent")); got != 2 {
		t.Errorf("requests counted %v, want 2", got)
	}
}

// TestSparkplugNoRebirthByDefault: with rebirth off, ferry publishes
// nothing, however much it cannot resolve.
func TestSparkplugNoRebirthByDefault(t *testing.T) {
	e, _, r, opts := rebirthSetup(t, false, true, nil)
	for i := 0; i < 3; i++ {
		e.ddata(float64(i))
	}
	waitFor(t, "data handled", 5*time.Second, func() bool { return unknownAliases(opts) == 3 })
	never(t, 200*time.Millisecond, "an NCMD published with rebirth off", func() bool { return e.requests() > 0 })
	if r.d.nodes[spNodeKey{"G1", "E1"}].askRebirth {
		t.Error("rebirth on by default")
	}
}

// TestSparkplugRebirthTriggers: data before any BIRTH, an unknown alias
// after one, and a seq gap each ask (once the interval has passed); data
// that resolves does not.
func TestSparkplugRebirthTriggers(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	var logs ftest.SyncBuffer
	e, store, _, _ := rebirthSetup(t, true, false, func(o *Options) {
		o.Now = func() time.Time { return time.Unix(0, clock.Load()).UTC() }
		o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	asked := func(reason string) bool {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "sparkplug rebirth requested") && strings.Contains(l, `reason="`+reason+`"`) {
				return true
			}
		}
		return false
	}
	later := func() { clock.Add(int64(rebirthInterval)) }

	e.ddata(1)
	waitFor(t, "request for data before birth", 5*time.Second, func() bool { return e.requests() == 1 && asked("data before birth") })

	later()
	e.birth(5) // as if answering late
	e.ddata(6)
	waitFor(t, "births and data", 5*time.Second, func() bool { return len(store.samples("press")) == 2 })
	never(t, 100*time.Millisecond, "a second request after data that resolves", func() bool { return e.requests() > 1 })

	later()
	e.data(99, 7, 0)
	waitFor(t, "request for an unknown alias", 5*time.Second, func() bool { return e.requests() == 2 && asked("unknown alias") })

	later()
	e.data(10, 8, 1)
	waitFor(t, "request for a seq gap", 5*time.Second, func() bool { return e.requests() == 3 && asked("seq gap") })
	if s := store.samples("press"); len(s) != 3 || s[2].Value.Float64() != 8 {
		t.Errorf("samples %v", s)
	}
}

func TestRebirthConfig(t *testing.T) {
	a := sparkplugDevice("a", "tcp://h:1883", "d1", Point{Name: "v", Metric: "V"})
	a.Config.Sparkplug.Rebirth = true
	b := sparkplugDevice("b", "tcp://h:1883", "d2", Point{Name: "v", Metric: "V"})
	_, err := New([]Device{a, b}, testOptions(nil))
	if !errors.Is(err, ferry.ErrInvalidConfig) || !strings.Contains(err.Error(), "mqtt.sparkplug.rebirth") {
		t.Errorf("devices of one node disagreeing on rebirth: err = %v", err)
	}
	j := jsonDevice("j", "tcp://h:1883", "t", Point{Name: "v", Path: "v"})
	j.Config.Sparkplug.Rebirth = true
	if err := j.Validate(); err == nil || !strings.Contains(err.Error(), "mqtt.sparkplug") {
		t.Errorf("rebirth on a json device: err = %v", err)
	}
}
