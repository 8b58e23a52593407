// Package daemon is what ferry needs to run as a well-behaved systemd
// service: sd_notify messages (READY, RELOADING, STOPPING, STATUS), the
// watchdog keep-alive loop, a journald-friendly slog logger, and the
// daemon's own metrics (build info, configuration reloads).
//
// Promises:
//
//   - Outside systemd (NOTIFY_SOCKET unset) every notification is a no-op
//     that returns nil, and Watchdog just waits for its context: the same
//     binary runs in a shell, a container or a test.
//   - Watchdog sends WATCHDOG=1 at half the interval systemd asks for, and
//     only while the health function returns nil. A stuck pipeline stops
//     the keep-alives, and systemd restarts ferry (WatchdogSec= in the
//     unit). The reason is logged once and shown in `systemctl status`.
//   - Under journald (JOURNAL_STREAM matches the log output), text logs
//     drop the timestamp journald already records and carry a <N> priority
//     prefix, so `journalctl -p warning -u ferry` works.
//
// Caveat: the health function runs on the watchdog goroutine; if it
// blocks, the keep-alives stop, which is the intended outcome for a hung
// process but means it must not block on anything that can be slow for
// good reasons (network I/O).
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notify sends one sd_notify message. It returns nil when NOTIFY_SOCKET
// is unset.
func notify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("sd_notify %s: %w", firstLine(state), err)
	}
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Ready tells systemd that start-up (or a reload) is finished: READY=1.
// With Type=notify, `systemctl start ferry` returns only now.
func Ready() error { return notify(daemon.SdNotifyReady) }

// Reloading tells systemd that a configuration reload has begun
// (RELOADING=1 with MONOTONIC_USEC). Call Ready when it is done, whether
// it succeeded or not.
func Reloading() error {
	return notify(daemon.SdNotifyReloading + "\n" + strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"))
}

// Stopping tells systemd that shutdown has begun: STOPPING=1.
func Stopping() error { return notify(daemon.SdNotifyStopping) }

// Status sets the one-line status `systemctl status ferry` shows.
func Status(status string) error {
	return notify("STATUS=" + strings.ReplaceAll(status, "\n", " "))
}

// ExtendTimeout asks systemd for d more time to start or stop
// (EXTEND_TIMEOUT_USEC), for a slow step such as checking a large buffer
// after a crash.
func ExtendTimeout(d time.Duration) error {
	return notify("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10))
}

// WatchdogInterval returns the watchdog interval systemd set for this
// process (WatchdogSec=), or 0 when the watchdog is off.
func WatchdogInterval() (time.Duration, error) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0, fmt.Errorf("watchdog: %w", err)
	}
	return d, nil
}

// Watchdog sends WATCHDOG=1 every half watchdog interval while healthy
// returns nil, until ctx ends. When healthy returns an error the
// keep-alives stop, the reason is logged once (Warn) and set as the
// STATUS; when it returns nil again they resume. When the watchdog is off
// (no WatchdogSec=, or not under systemd) Watchdog waits for ctx. It
// always returns nil: a broken watchdog setting is logged, it does not
// stop the daemon. log may be nil.
func Watchdog(ctx context.Context, healthy func() error, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	interval, err := WatchdogInterval()
	if err != nil {
		log.Warn("systemd watchdog disabled: WATCHDOG_USEC is not usable", "err", err)
	}
	if interval <= 0 {
		<-ctx.Done()
		return nil
	}
	w := watchdog{healthy: healthy, log: log, interval: interval}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		w.beat()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type watchdog struct {
	healthy  func() error
	log      *slog.Logger
	interval time.Duration

	unhealthy bool
	sendErr   bool
}

func (w *watchdog) beat() {
	if err := w.healthy(); err != nil {
		if !w.unhealthy {
			w.unhealthy = true
			w.log.Warn("withholding systemd watchdog keep-alives: ferry is not healthy; systemd restarts it if this lasts", "err", err, "watchdog", w.interval)
			w.send("STATUS=unhealthy, watchdog keep-alives withheld: " + strings.ReplaceAll(err.Error(), "\n", " "))
		}
		return
	}
	if w.unhealthy {
		w.unhealthy = false
		w.log.Info("healthy again; systemd watchdog keep-alives resumed")
		w.send("STATUS=running")
	}
	w.send(daemon.SdNotifyWatchdog)
}

// send sends a message, logging the first failure of a run of failures.
func (w *watchdog) send(state string) {
	err := notify(state)
	switch {
	case err != nil && !w.sendErr:
		w.sendErr = true
		w.log.Warn("systemd notification socket unusable", "err", err)
	case err == nil && w.sendErr:
		w.sendErr = false
		w.log.Info("systemd notification socket usable again")
	}
}
