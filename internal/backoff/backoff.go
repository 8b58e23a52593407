// Package backoff computes capped, jittered retry delays. Every reconnect
// loop in ferry (Modbus links, OPC UA sessions, MQTT and NATS connections,
// webhook retries) uses it, so they all behave alike: the first retry comes
// quickly, later ones spread out up to a cap, and many gateways restarting
// together do not retry in lockstep.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff yields the delays before successive retries. The zero value uses
// the defaults (Min 100ms, Max 30s, Factor 2, Jitter 0.2). It is not safe
// for concurrent use: each retry loop owns one.
type Backoff struct {
	Min    time.Duration // first delay
	Max    time.Duration // cap
	Factor float64       // growth per attempt, > 1
	// Jitter spreads each delay uniformly over ±Jitter of itself (0..1);
	// a negative Jitter disables it.
	Jitter float64

	attempt int
}

// Defaults used for zero fields.
const (
	DefaultMin    = 100 * time.Millisecond
	DefaultMax    = 30 * time.Second
	DefaultFactor = 2.0
	DefaultJitter = 0.2
)

// Next returns the delay before the next retry and advances the attempt
// count.
func (b *Backoff) Next() time.Duration {
	d := b.Peek()
	b.attempt++
	j := b.Jitter
	if j == 0 {
		j = DefaultJitter
	}
	if j > 0 && j <= 1 {
		d = time.Duration(float64(d) * (1 - j + 2*j*rand.Float64()))
	}
	return d
}

// Peek returns the unjittered delay Next would use, without advancing.
func (b *Backoff) Peek() time.Duration {
	lo, hi, f := b.Min, b.Max, b.Factor
	if lo <= 0 {
		lo = DefaultMin
	}
	if hi <= 0 {
		hi = DefaultMax
	}
	if hi < lo {
		hi = lo
	}
	if f <= 1 {
		f = DefaultFactor
	}
	d := float64(lo)
	for i := 0; i < b.attempt; i++ {
		d *= f
		if d >= float64(hi) {
			return hi
		}
	}
	return time.Duration(d)
}

// Attempt returns how many delays Next has handed out since the last Reset.
func (b *Backoff) Attempt() int { return b.attempt }

// Reset starts over from Min; call it after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Wait sleeps for Next() or until ctx ends; it reports whether the full
// delay passed (false: ctx ended).
func (b *Backoff) Wait(ctx context.Context) bool {
	return Sleep(ctx, b.Next())
}

// Sleep waits d or until ctx ends; it reports whether d passed. A d of
// zero or less returns at once (true unless ctx has ended).
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
