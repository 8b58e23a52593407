package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/config"
)

// ReadResult is one point's value as `ferry read` shows it.
type ReadResult struct {
	Info    ferry.PointInfo
	Sample  ferry.Sample
	Missing bool // no value arrived before the timeout
}

// ReadOnce reads every point of the named devices (every device when none
// is named) once, through the same drivers a running gateway uses: the
// Modbus driver's planned requests, the OPC UA session's read or
// subscription, the MQTT subscription. It returns when each point has a
// value or when timeout has passed; a point with no value by then is a
// Missing result with Bad quality. Nothing is buffered or sent upstream.
func ReadOnce(ctx context.Context, cfg *config.Config, devices []string, timeout time.Duration, log *slog.Logger) ([]ReadResult, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sub, err := selectDevices(cfg, devices)
	if err != nil {
		return nil, err
	}
	want := map[string]map[string]bool{} // device → point → seen
	for _, p := range sub.Points {
		if want[p.Device] == nil {
			want[p.Device] = map[string]bool{}
		}
		want[p.Device][p.Point] = false
	}
	var (
		mu      sync.Mutex
		got     = map[[2]string]ferry.Sample{}
		pending = len(sub.Points)
		done    = make(chan struct{})
	)
	emit := func(s ferry.Scan) {
		defer s.Finish(nil)
		mu.Lock()
		defer mu.Unlock()
		for _, smp := range s.Samples {
			pts := want[smp.Device]
			seen, ok := pts[smp.Point]
			if !ok {
				continue
			}
			k := [2]string{smp.Device, smp.Point}
			// Keep the first Good value; a Bad one only until a
			// Good one comes (a device still connecting).
			if old, had := got[k]; had && (old.Quality.IsGood() || !smp.Quality.IsGood()) {
				continue
			}
			got[k] = smp
			if !seen && smp.Quality.IsGood() {
				pts[smp.Point] = true
				pending--
				if pending == 0 {
					close(done)
				}
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	for key, spec := range groupSpecs(sub) {
		drv, err := newGroupDriver(sub, key, spec, log.With("group", key), newDriverMetrics(nil), true)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := drv.Run(ctx, emit); err != nil && ctx.Err() == nil {
				log.Error("driver stopped", "group", key, "err", err)
			}
		}()
	}
	if len(sub.Points) > 0 { // (pending is the emit's, under mu)
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	cancel()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	out := make([]ReadResult, 0, len(sub.Points))
	for _, p := range sub.Points {
		r := ReadResult{Info: p}
		if s, ok := got[[2]string{p.Device, p.Point}]; ok {
			r.Sample = s
		} else {
			r.Missing = true
			r.Sample = ferry.Sample{Device: p.Device, Point: p.Point,
				Quality: ferry.BadQuality(fmt.Sprintf("no value within %s", timeout))}
		}
		out = append(out, r)
	}
	return out, nil
}

// selectDevices returns a copy of cfg holding only the named devices (all
// when names is empty), or an error naming the unknown ones.
func selectDevices(cfg *config.Config, names []string) (*config.Config, error) {
	sub := *cfg
	if len(names) == 0 {
		return &sub, nil
	}
	keep := map[string]bool{}
	for _, n := range names {
		keep[n] = false
	}
	sub.Devices = nil
	for _, d := range cfg.Devices {
		if _, ok := keep[d.Name]; ok {
			keep[d.Name] = true
			sub.Devices = append(sub.Devices, d)
		}
	}
	var unknown []string
	for n, found := range keep {
		if !found {
			unknown = append(unknown, n)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		var known []string
		for _, d := range cfg.Devices {
			known = append(known, d.Name)
		}
		return nil, fmt.Errorf("unknown device %v (configured: %v)", unknown, known)
	}
	sub.Points = nil
	for _, p := range cfg.Points {
		if keep[p.Device] {
			sub.Points = append(sub.Points, p)
		}
	}
	if len(sub.Points) == 0 {
		return nil, errors.New("the selected devices have no points")
	}
	return &sub, nil
}
