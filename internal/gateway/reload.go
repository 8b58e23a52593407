package gateway

import (
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"strings"
	"time"

	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/daemon"
)

// A reload is a table of stages, one per part that can change while
// running (as Prometheus's reloaders are a table). Each stage's prepare
// builds what the new configuration changes without touching the running
// part (constructors validate and do no I/O) and returns the commit that
// swaps it in, or nil when the part is unchanged. Every prepare runs before
// any commit: a part that cannot be built refuses the whole reload,
// instead of leaving the gateway half changed, or without an uplink.
// Commits cannot fail; they run in the table's order.
type reloadStage struct {
	name    string
	prepare func(d *Gateway, old, cfg *config.Config) (commit func(), err error)
}

var reloadStages = []reloadStage{
	{"alerts", (*Gateway).prepareSinks},
	{"uplink", (*Gateway).prepareUplink},
	{"commands", (*Gateway).prepareCommands},
	{"devices", (*Gateway).prepareGroups},
	{"reduce", (*Gateway).prepareReduce},
	// Last among the prepares: the engine swaps its rules in Update
	// itself, so nothing may refuse the reload after it.
	{"rules", (*Gateway).prepareRules},
}

// Reload loads the configuration at path again. When it is not valid the
// running one stays and the errors are logged. Otherwise only what changed
// is restarted: device groups whose devices changed, the uplink when its
// section changed, the sinks when theirs did; rules are swapped keeping the
// state of unchanged rules, and the reduce settings keeping the state of
// unchanged points. The buffer stays open throughout, so nothing
// accepted is lost. Reload does nothing before Run has started every part
// or once its shutdown has begun. In fleet mode the file is the local
// file, and what runs is the last-known-good bundle with it (see
// fleet.go).
func (d *Gateway) Reload(path string) {
	daemon.Reloading()
	defer daemon.Ready()
	d.log.Info("reloading", "file", path)
	cfg, err := d.loadConfig(path)
	if err != nil {
		d.refuse(path, err)
		return
	}
	_ = d.apply(path, cfg) // refused: logged and shown by apply
}

// ErrNotRunning is returned by ApplyConfig before Run has started every
// part or once its shutdown has begun.
var ErrNotRunning = errors.New("ferry is not running (starting or stopping)")

// ApplyConfig applies cfg, already loaded and validated, as Reload applies
// the file it loads, and returns why it was refused (nil: applied). A
// refused configuration changes nothing. An applied one is kept, with the
// points dropped from its devices' specs, as New keeps its own.
func (d *Gateway) ApplyConfig(cfg *config.Config) error {
	daemon.Reloading()
	defer daemon.Ready()
	return d.apply(cfg.Path, cfg)
}

// apply is the reload of cfg, loaded from src.
func (d *Gateway) apply(src string, cfg *config.Config) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.runCtx == nil {
		d.log.Warn("reload ignored: " + ErrNotRunning.Error())
		return ErrNotRunning
	}
	old := d.cfg
	if fields := restartOnly(old, cfg); len(fields) > 0 {
		d.log.Warn("these settings take effect at the next restart", "fields", strings.Join(fields, ", "))
		keepRunning(old, cfg)
	}
	var commits []func()
	for _, st := range reloadStages {
		commit, err := st.prepare(d, old, cfg)
		if err != nil {
			err = fmt.Errorf("%s: %w", st.name, err)
			d.refuse(src, err)
			return err
		}
		if commit != nil {
			commits = append(commits, commit)
		}
	}
	if lv, err := daemon.ParseLevel(cfg.Log.Level); err == nil && d.opts.Level != nil {
		d.opts.Level.Set(lv)
	}
	// Every driver is built: the configuration kept from here on needs
	// no points in its specs (the groups' digests decide the next reload).
	cfg.DropPointSpecs()
	d.buf.SetConfigVersion(cfg.Version)
	d.cfg = cfg
	d.curCfg.Store(cfg)
	for _, commit := range commits {
		commit()
	}
	d.svc.Reloaded(cfg.Version, time.Now())
	daemon.Status("running: " + cfg.Summary())
	d.con.reloaded(cfg, nil)
	debug.FreeOSMemory()
	d.log.Info("configuration reloaded", "version", cfg.Version, "config", cfg.Summary())
	return nil
}

// refuse reports a reload that was refused: the running configuration
// stays.
func (d *Gateway) refuse(path string, err error) {
	d.log.Error("reload refused, the running configuration stays", "file", path, "errors", reloadError(err))
	d.svc.ReloadFailed()
	d.con.reloaded(nil, err)
}

// prepareSinks builds the alert sinks when their section changed; the
// commit starts them and stops the old ones.
func (d *Gateway) prepareSinks(old, cfg *config.Config) (func(), error) {
	if reflect.DeepEqual(old.Alerts, cfg.Alerts) {
		return nil, nil
	}
	s, err := d.buildSinks(cfg.Alerts)
	if err != nil {
		return nil, err
	}
	return func() {
		prevRun := d.sinksRun
		d.installSinks(s)
		d.sinksRun = start(d.runCtx, s.Run)
		prevRun.stop(d.opts.ShutdownTimeout)
		d.log.Info("alert sinks restarted")
	}, nil
}

// prepareUplink builds the upstreams when the uplink section changed
// (upstreams.go).
func (d *Gateway) prepareUplink(old, cfg *config.Config) (func(), error) {
	return d.prepareUpstreams(old, cfg)
}

// prepareGroups builds the drivers of the device groups that are new or
// changed; the commit stops the groups that are gone or changed and
// starts the built ones.
func (d *Gateway) prepareGroups(old, cfg *config.Config) (func(), error) {
	next, err := d.buildChangedGroups(cfg)
	if err != nil {
		return nil, err
	}
	return func() { d.syncGroups(old, cfg, next, d.opts.ShutdownTimeout) }, nil
}

// prepareReduce checks a changed reduce section; the commit swaps it in.
// Points whose settings are unchanged keep their state; a point whose
// settings changed starts afresh, its open window stored partial (see
// reduce.Reducer.Update).
func (d *Gateway) prepareReduce(old, cfg *config.Config) (func(), error) {
	if reflect.DeepEqual(old.Reduce, cfg.Reduce) {
		return nil, nil
	}
	if err := cfg.Reduce.Validate(); err != nil {
		return nil, err
	}
	return func() {
		scans, err := d.red.Update(cfg.Reduce)
		if err != nil { // validated above: cannot happen
			d.log.Error("reduce settings not applied", "err", err)
			return
		}
		for _, s := range scans {
			d.buf.AppendScan(s)
		}
		d.log.Info("reduce settings applied")
	}, nil
}

// prepareRules swaps the rule engine's rules (keeping the state of the
// unchanged ones) or refuses them.
func (d *Gateway) prepareRules(_, cfg *config.Config) (func(), error) {
	return nil, d.engine.Update(cfg.Rules)
}

// keepRunning sets the settings of cfg that cannot change while running
// to those of old, so that cfg says what runs: the uplink, the sinks and
// the drivers keep the gateway id and site the buffer's record ids carry.
func keepRunning(old, cfg *config.Config) {
	cfg.Gateway = old.Gateway
	cfg.DataDir = old.DataDir
	cfg.Log.Format = old.Log.Format
	cfg.Buffer = old.Buffer
	cfg.HTTP = old.HTTP
	cfg.Fleet = old.Fleet
	cfg.History = old.History
}

// restartOnly lists the settings that differ and cannot change while
// running.
func restartOnly(a, b *config.Config) []string {
	var out []string
	if a.Gateway != b.Gateway {
		out = append(out, "gateway")
	}
	if a.DataDir != b.DataDir {
		out = append(out, "data_dir")
	}
	if a.Log.Format != b.Log.Format {
		out = append(out, "log.format")
	}
	if !reflect.DeepEqual(a.Buffer, b.Buffer) {
		out = append(out, "buffer")
	}
	if !reflect.DeepEqual(a.HTTP, b.HTTP) {
		out = append(out, "http")
	}
	if !reflect.DeepEqual(a.Fleet, b.Fleet) {
		out = append(out, "fleet")
	}
	if !reflect.DeepEqual(a.History, b.History) {
		out = append(out, "history")
	}
	return out
}
