package uplink

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrStreamNotFound is returned when ferry's stream does not exist and create_stream is off.
var ErrStreamNotFound = errors.New("stream not found")

// ErrStreamMismatch is returned when a stream cannot take ferry's messages (subjects, sealed, no_ack, mirror).
var ErrStreamMismatch = errors.New("stream does not fit")

// streamPlan is what ensureStreams found out.
type streamPlan struct {
	// catalogStream is the stream the catalog lands in.
	catalogStream string
	// rollup: publish the catalog with Nats-Rollup: sub, because its stream
	// is shared with telemetry and allows roll-ups.
	rollup bool
	// duplicates is the main stream's dedupe window.
	duplicates time.Duration
	// lastSeq is the main stream's last sequence when it was checked: a
	// message published later gets a higher one.
	lastSeq uint64
	// warnings to log once.
	warnings []string
}

// ensureStreams verifies, and with create_stream creates or updates, the
// stream for telemetry and alerts and the stream for the catalog.
func (u *Uplink) ensureStreams(ctx context.Context, js jetstream.JetStream) (streamPlan, error) {
	var plan streamPlan
	c := &u.cfg
	telFilter, alertFilter, catFilter := u.filters.Telemetry, u.filters.Alerts, u.filters.Catalog
	// The patterns ferry publishes under (this gateway, any device).
	telPat, alertPat, catPat := u.subj.Telemetry, u.subj.Alerts, u.subj.Catalog

	main, err := u.stream(ctx, js, c.Stream)
	if errors.Is(err, ErrStreamNotFound) && c.CreateStream {
		sc := jetstream.StreamConfig{
			Name:        c.Stream,
			Description: "ferry telemetry and alerts",
			Subjects:    []string{telFilter, alertFilter},
			Storage:     jetstream.FileStorage,
			Replicas:    c.Replicas,
			Duplicates:  c.DuplicateWindow,
			MaxAge:      c.MaxAge,
		}
		if c.catalogStream() == c.Stream {
			sc.Subjects = append(sc.Subjects, catFilter)
			sc.AllowRollup = true
		}
		_, err = js.CreateStream(ctx, sc)
		if err == nil || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			u.log.Info("stream created", "stream", c.Stream, "subjects", sc.Subjects, "replicas", c.Replicas, "duplicate_window", c.DuplicateWindow, "max_age", c.MaxAge)
			main, err = u.stream(ctx, js, c.Stream)
		} else {
			err = fmt.Errorf("create stream %s: %w", c.Stream, err)
		}
	}
	if err != nil {
		return plan, err
	}
	cfg := main.Config
	need := []struct{ pattern, filter string }{{telPat, telFilter}, {alertPat, alertFilter}}
	catInMain := coveredBy(cfg.Subjects, catPat)
	if c.catalogStream() == c.Stream {
		need = append(need, struct{ pattern, filter string }{catPat, catFilter})
	}
	var missing []string
	for _, n := range need {
		if !coveredBy(cfg.Subjects, n.pattern) {
			missing = append(missing, n.filter)
		}
	}
	update := false
	if len(missing) > 0 {
		if !c.CreateStream {
			return plan, fmt.Errorf("stream %s captures %v, not %s: %w (add the subjects to the stream, or set create_stream: true)",
				c.Stream, cfg.Subjects, strings.Join(missing, ", "), ErrStreamMismatch)
		}
		cfg.Subjects = append(cfg.Subjects, missing...)
		update = true
	}
	if err := usable(&cfg); err != nil {
		return plan, err
	}
	if cfg.Duplicates < c.DuplicateWindow {
		if c.CreateStream {
			cfg.Duplicates = c.DuplicateWindow
			update = true
		} else {
			plan.warnings = append(plan.warnings, dupWarning(c.Stream, cfg.Duplicates, c.DuplicateWindow))
		}
	}
	if c.CreateStream && cfg.MaxAge != c.MaxAge && c.MaxAge > 0 {
		cfg.MaxAge = c.MaxAge
		update = true
	}
	if update {
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return plan, fmt.Errorf("update stream %s (subjects %v, duplicate window %v, max age %v): %w", c.Stream, cfg.Subjects, cfg.Duplicates, cfg.MaxAge, err)
		}
		u.log.Info("stream updated", "stream", c.Stream, "subjects", cfg.Subjects, "duplicate_window", cfg.Duplicates, "max_age", cfg.MaxAge)
		catInMain = coveredBy(cfg.Subjects, catPat)
	}
	plan.duplicates = cfg.Duplicates
	plan.lastSeq = main.State.LastSeq
	if cfg.Storage == jetstream.MemoryStorage {
		plan.warnings = append(plan.warnings, fmt.Sprintf("stream %s keeps messages in memory: a server restart loses what ferry already deleted from its buffer", c.Stream))
	}
	if cfg.MaxMsgsPerSubject > 0 {
		plan.warnings = append(plan.warnings, fmt.Sprintf("stream %s keeps only %d messages per subject: older telemetry of a device is discarded upstream", c.Stream, cfg.MaxMsgsPerSubject))
	}

	// The catalog: in the main stream when that captures it (one stream
	// for everything), else in its own stream with one message per subject.
	if catInMain {
		plan.catalogStream = c.Stream
		plan.rollup = cfg.AllowRollup && !cfg.DenyPurge
		if !plan.rollup && cfg.MaxMsgsPerSubject != 1 {
			plan.warnings = append(plan.warnings, fmt.Sprintf("catalog goes to stream %s, which neither allows roll-ups nor limits messages per subject: every publish of the catalog is kept (set allow_rollup_hdrs on the stream)", c.Stream))
		}
		return plan, nil
	}
	name := c.catalogStream()
	plan.catalogStream = name
	cat, err := u.stream(ctx, js, name)
	if errors.Is(err, ErrStreamNotFound) && c.CreateStream {
		sc := jetstream.StreamConfig{
			Name:              name,
			Description:       "ferry catalogs: the latest per gateway",
			Subjects:          []string{catFilter},
			Storage:           jetstream.FileStorage,
			Replicas:          c.Replicas,
			MaxMsgsPerSubject: 1,
			Duplicates:        c.DuplicateWindow,
		}
		_, err = js.CreateStream(ctx, sc)
		if err == nil || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			u.log.Info("stream created", "stream", name, "subjects", sc.Subjects, "max_msgs_per_subject", 1)
			cat, err = u.stream(ctx, js, name)
		} else {
			err = fmt.Errorf("create stream %s: %w", name, err)
		}
	}
	if err != nil {
		return plan, fmt.Errorf("catalog: %w", err)
	}
	cc := cat.Config
	if !coveredBy(cc.Subjects, catPat) {
		if !c.CreateStream {
			return plan, fmt.Errorf("catalog stream %s captures %v, not %s: %w", name, cc.Subjects, catFilter, ErrStreamMismatch)
		}
		cc.Subjects = append(cc.Subjects, catFilter)
		if _, err := js.UpdateStream(ctx, cc); err != nil {
			return plan, fmt.Errorf("update stream %s (subjects %v): %w", name, cc.Subjects, err)
		}
	}
	if err := usable(&cc); err != nil {
		return plan, fmt.Errorf("catalog: %w", err)
	}
	plan.rollup = cc.AllowRollup && !cc.DenyPurge
	if cc.MaxMsgsPerSubject != 1 && !plan.rollup {
		plan.warnings = append(plan.warnings, fmt.Sprintf("catalog stream %s does not limit messages per subject to 1: every publish of the catalog is kept", name))
	}
	return plan, nil
}

// stream returns the info of a stream; ErrStreamNotFound when it does not
// exist.
func (u *Uplink) stream(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("stream %s: %w (create it as uplink/README.md shows, or set create_stream: true)", name, ErrStreamNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", name, err)
	}
	return s.CachedInfo(), nil
}

// usable refuses streams that cannot take or acknowledge ferry's messages.
func usable(c *jetstream.StreamConfig) error {
	switch {
	case c.Sealed:
		return fmt.Errorf("stream %s is sealed: %w", c.Name, ErrStreamMismatch)
	case c.NoAck:
		return fmt.Errorf("stream %s has no_ack set: ferry deletes a record only after a PubAck: %w", c.Name, ErrStreamMismatch)
	case c.Mirror != nil:
		return fmt.Errorf("stream %s is a mirror and takes no publishes: %w", c.Name, ErrStreamMismatch)
	}
	return nil
}

func dupWarning(stream string, have, want time.Duration) string {
	return fmt.Sprintf("stream %s has a duplicate window of %v, shorter than duplicate_window %v: a record published just before a crash or a lost PubAck and sent again more than %v later is stored twice", stream, have, want, have)
}

// coveredBy reports whether one of filters captures every subject of
// pattern.
func coveredBy(filters []string, pattern string) bool {
	return slices.ContainsFunc(filters, func(f string) bool { return subjectCovers(f, pattern) })
}
