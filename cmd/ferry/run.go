package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ferry-edge/ferry/internal/config"
	systemd "github.com/ferry-edge/ferry/internal/daemon"
	"github.com/ferry-edge/ferry/internal/gateway"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	path := fs.String("config", config.DefaultPath, "configuration `FILE`")
	grace := fs.Duration("shutdown-timeout", 20*time.Second, "how long a shutdown may take before ferry stops waiting")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ferry run [-config FILE]\n\nRuns the gateway until SIGINT or SIGTERM; SIGHUP reloads the configuration.\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("unexpected arguments %q", fs.Args())
	}
	cfg, err := gateway.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return &exitError{code: 1, err: fmt.Errorf("%s is not valid", *path)}
	}
	level := new(slog.LevelVar)
	if lv, err := systemd.ParseLevel(cfg.Log.Level); err == nil {
		level.Set(lv)
	}
	log := systemd.NewLoggerLevel(level, cfg.Log.Format, stderr)
	defer systemd.CaptureStdLog(log)()
	ver, rev := buildVersion()

	gw, err := gateway.New(cfg, gateway.Options{Logger: log, Level: level, Version: ver, Commit: rev, ShutdownTimeout: *grace})
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	errc := make(chan error, 1)
	go func() { errc <- gw.Run(ctx) }()
	var deadline <-chan time.Time
	for {
		select {
		case err := <-errc:
			return err
		case s := <-sigs:
			switch {
			case s == syscall.SIGHUP && deadline == nil:
				gw.Reload(*path)
			case s == syscall.SIGHUP:
				// Shutting down: nothing to reload.
			case deadline == nil:
				log.Info("shutting down", "signal", s.String())
				cancel()
				deadline = time.After(*grace + 5*time.Second)
			default:
				return errors.New("second signal: exiting before the shutdown finished")
			}
		case <-deadline:
			return fmt.Errorf("shutdown took longer than %v: exiting", *grace)
		}
	}
}
