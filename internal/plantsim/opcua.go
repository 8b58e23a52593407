package plantsim

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/gopcua/opcua/id"
	uaserver "github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"
)

// BoilerNamespace is the namespace URI of the boiler's nodes; node ids are
// ns=<Boiler.NS>;s=Boiler.Pressure etc. (or nsu=<URI>;s=…).
const BoilerNamespace = "urn:ferry:plantsim:boiler"

// The boiler's nodes (string identifiers in BoilerNamespace).
var BoilerNodes = []string{"Boiler.Pressure", "Boiler.Temperature", "Boiler.Running", "Boiler.Count", "Boiler.Name"}

// Boiler is the simulated OPC UA server.
type Boiler struct {
	Endpoint string
	NS       uint16

	model *Model
	srv   *uaserver.Server
	ns    *uaserver.NodeNameSpace

	mu     sync.Mutex
	values map[string]*ua.DataValue
	count  uint32
}

// uaLogger adapts slog to the server's printf-style logger.
type uaLogger struct{ l *slog.Logger }

func (u uaLogger) Debug(msg string, args ...any) { u.l.Debug(fmt.Sprintf(msg, args...)) }
func (u uaLogger) Info(msg string, args ...any)  { u.l.Debug(fmt.Sprintf(msg, args...)) }
func (u uaLogger) Warn(msg string, args ...any)  { u.l.Debug(fmt.Sprintf(msg, args...)) }
func (u uaLogger) Error(msg string, args ...any) { u.l.Debug(fmt.Sprintf(msg, args...)) }

func startBoiler(ctx context.Context, host string, port int, m *Model, lg *slog.Logger) (*Boiler, error) {
	if port == 0 {
		var err error
		if port, err = freePort(host); err != nil {
			return nil, err
		}
	}
	b := &Boiler{Endpoint: fmt.Sprintf("opc.tcp://%s", hostPort(host, port)), model: m, values: map[string]*ua.DataValue{}}
	b.srv = uaserver.New(
		uaserver.EndPoint(host, port),
		uaserver.EnableSecurity("None", ua.MessageSecurityModeNone),
		uaserver.EnableAuthMode(ua.UserTokenTypeAnonymous),
		uaserver.ServerName("plantsim boiler"),
		uaserver.SetLogger(uaLogger{lg}),
	)
	b.ns = uaserver.NewNodeNameSpace(b.srv, BoilerNamespace)
	b.NS = b.ns.ID()
	root, err := b.srv.Namespace(0)
	if err != nil {
		return nil, err
	}
	root.Objects().AddRef(b.ns.Objects(), id.HasComponent, true)
	b.update(time.Now())
	for _, name := range BoilerNodes {
		name := name
		n := b.ns.AddNewVariableStringNode(name, func() *ua.DataValue {
			b.mu.Lock()
			defer b.mu.Unlock()
			return b.values[name]
		})
		b.ns.Objects().AddRef(n, id.HasComponent, true)
	}
	if err := b.srv.Start(ctx); err != nil {
		return nil, fmt.Errorf("opc ua server on %s: %w", b.Endpoint, err)
	}
	return b, nil
}

// update computes the boiler's values at now.
func (b *Boiler) update(now time.Time) {
	t := now.Sub(b.model.Start)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.count++
	dv := func(v any) *ua.DataValue {
		return &ua.DataValue{
			EncodingMask:    ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
			Value:           ua.MustVariant(v),
			SourceTimestamp: now,
			ServerTimestamp: now,
		}
	}
	b.values["Boiler.Pressure"] = dv(b.model.BoilerPressure(t))
	b.values["Boiler.Temperature"] = dv(b.model.BoilerTemperature(t))
	b.values["Boiler.Running"] = dv(true)
	b.values["Boiler.Count"] = dv(b.count)
	b.values["Boiler.Name"] = dv("Boiler 1")
}

// run changes the values at rate and notifies subscribers.
func (b *Boiler) run(ctx context.Context, rate time.Duration) {
	t := time.NewTicker(rate)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			b.update(now)
			for _, name := range BoilerNodes[:2] {
				b.ns.ChangeNotification(ua.NewStringNodeID(b.NS, name))
			}
			b.ns.ChangeNotification(ua.NewStringNodeID(b.NS, "Boiler.Count"))
		}
	}
}

// Close stops the server.
func (b *Boiler) Close() error { return b.srv.Close() }
