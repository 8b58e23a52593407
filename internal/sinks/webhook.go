package sinks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/backoff"
)

// webhookSink POSTs each transition as JSON (AlertJSON). A network error,
// a timeout, 408, 429 or a 5xx answer is retried with backoff up to
// `attempts` tries; any other answer outside 2xx means the receiver will
// never take the alert, which is dropped at once (reason "rejected"). The
// request carries Idempotency-Key: <id>:<state>, so a receiver can drop
// the duplicate a retry after a lost answer may cause.
type webhookSink struct {
	cfg     WebhookConfig
	shown   string // the URL without credentials or query, for logs
	log     *slog.Logger
	gateway string
	client  *http.Client
	q       *queue

	sent, errs             prometheus.Counter
	dropAttempts, dropRejd prometheus.Counter
}

func newWebhookSink(cfg WebhookConfig, opts Options, m *metrics) *webhookSink {
	shown := cfg.URL
	if u, err := url.Parse(cfg.URL); err == nil {
		shown = u.Scheme + "://" + u.Host + u.Path
	}
	return &webhookSink{
		cfg:          cfg,
		shown:        shown,
		log:          opts.Logger.With("sink", "webhook", "url", shown),
		gateway:      opts.Gateway,
		client:       &http.Client{Timeout: cfg.Timeout},
		q:            newQueue("webhook", cfg.Queue, m),
		sent:         m.sent.WithLabelValues("webhook"),
		errs:         m.errors.WithLabelValues("webhook"),
		dropAttempts: m.dropped.WithLabelValues("webhook", "attempts"),
		dropRejd:     m.dropped.WithLabelValues("webhook", "rejected"),
	}
}

func (s *webhookSink) send(a ferry.Alert) { s.q.push(a) }

func (s *webhookSink) run(ctx context.Context) {
	defer s.client.CloseIdleConnections()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.q.ready:
			if a, ok := s.q.pop(); ok {
				s.deliver(ctx, a)
			}
		}
	}
}

func (s *webhookSink) deliver(ctx context.Context, a ferry.Alert) {
	body, err := json.Marshal(ferry.NewAlertJSON(a, s.gateway))
	if err != nil {
		s.dropRejd.Inc()
		s.log.Error("alert not encodable", "id", a.ID, "err", err)
		return
	}
	key := a.ID + ":" + a.State.String()
	bo := backoff.Backoff{Min: s.cfg.RetryMin, Max: s.cfg.RetryMax}
	for attempt := 1; ; attempt++ {
		retry, err := s.post(ctx, body, key)
		if err == nil {
			s.sent.Inc()
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.errs.Inc()
		switch {
		case !retry:
			s.dropRejd.Inc()
			s.log.Warn("alert rejected by webhook; dropped", "rule", a.Rule, "id", a.ID, "state", a.State.String(), "err", err)
			return
		case attempt >= s.cfg.Attempts:
			s.dropAttempts.Inc()
			s.log.Warn("alert dropped after failed webhook posts", "rule", a.Rule, "id", a.ID, "state", a.State.String(), "attempts", attempt, "err", err)
			return
		}
		s.log.Debug("webhook post failed; retrying", "id", a.ID, "attempt", attempt, "err", err)
		if !bo.Wait(ctx) {
			return
		}
	}
}

// post sends one request; retry says whether trying again may help.
func (s *webhookSink) post(ctx context.Context, body []byte, key string) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ferry")
	req.Header.Set("Idempotency-Key", key)
	for k, v := range s.cfg.Headers {
		req.Header.Set(k, v.Reveal())
	}
	resp, err := s.client.Do(req)
	if err != nil {
		// url.Error repeats the URL, which may hold a token.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return true, fmt.Errorf("POST %s: %w", s.shown, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return false, nil
	case c == http.StatusRequestTimeout, c == http.StatusTooManyRequests, c >= 500:
		return true, fmt.Errorf("POST %s: %s", s.shown, resp.Status)
	default:
		return false, fmt.Errorf("POST %s: %s", s.shown, resp.Status)
	}
}
