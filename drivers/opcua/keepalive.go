package opcua

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gopcua/opcua"

	"github.com/ferry-edge/ferry/internal/setting"
)

// The keep-alive rule (issue 27).
//
// A server answers a Publish request of a quiet subscription (nothing
// changed) only when the subscription's keep-alive period has gone by:
// MaxKeepAliveCount publishing intervals. gopcua waits for that answer
// max(keep-alive period, request timeout) — the publish wait — and a
// Publish that runs out of it, or that the server cancels at the same
// moment through the request's timeout hint, ends the session. With the
// old derivation (count = timeouts.keepalive / interval, 10 s / 500 ms =
// 20) the keep-alive period equalled the publish wait (10 s = the
// request timeout) and every quiet subscription dropped within two
// periods against node-opcua.
//
// So the keep-alive period is derived from the publish wait, not the
// other way round:
//
//	keep-alive period = count × publishing interval ≤ ½ × publish wait
//	count = max(1, ⌊min(timeouts.keepalive, timeouts.request/2) / interval⌋)
//
// and the publish wait is timeouts.request. A server may revise the
// interval and the count upwards (node-opcua keeps the count at 2 or
// more); what it answers is logged once per session and checked: when
// the revised period breaks the rule the count is lowered with
// ModifySubscription, and when the server will not go that low either,
// the session ends and the next one waits twice the server's period
// (errKeepAliveRevised).
//
// In subscribe mode the configuration must therefore leave room for a
// count of 2: timeouts.request ≥ 4 × interval (validateKeepAlive).

// minServerKeepAliveCount is the lowest keep-alive count servers are
// known to grant (node-opcua: 2); the configuration rule leaves room for it.
const minServerKeepAliveCount = 2

// errKeepAliveRevised ends a session whose server revised the keep-alive
// period beyond half the publish wait and refused to lower it.
var errKeepAliveRevised = errors.New("server's keep-alive period is longer than half the publish wait")

// keepAliveCount is the MaxKeepAliveCount requested for publishing
// interval iv, probe period keepalive and publish wait wait.
func keepAliveCount(iv, keepalive, wait time.Duration) uint32 {
	period := min(keepalive, wait/2)
	return uint32(max(1, int64(period/iv)))
}

// validateKeepAlive checks that a subscription can keep the rule with
// the lowest count servers grant.
func validateKeepAlive(errs *setting.Errors, c *Config) {
	if c.Mode != "subscribe" || c.Interval <= 0 || c.Timeouts.Request <= 0 {
		return
	}
	if need := 2 * minServerKeepAliveCount * c.Interval; c.Timeouts.Request < need {
		errs.Add("opcua.timeouts.request", "%v is less than 4 × interval (%v): a quiet subscription's keep-alive (at least %d publishing intervals on many servers) must come within half the wait for a Publish answer; set timeouts.request to at least %v or shorten interval",
			c.Timeouts.Request, c.Interval, minServerKeepAliveCount, need)
	}
}

// publishWait is the request timeout of this device's sessions: the
// configured one, or longer after a server insisted on a longer
// keep-alive period (errKeepAliveRevised).
func (dv *device) publishWait() time.Duration {
	return max(dv.cfg.Config.Timeouts.Request, dv.minWait)
}

// subscriptionParams are the requested parameters of the subscription.
func (dv *device) subscriptionParams() *opcua.SubscriptionParameters {
	c := &dv.cfg.Config
	keep := keepAliveCount(c.Interval, c.Timeouts.Keepalive, dv.publishWait())
	return &opcua.SubscriptionParameters{
		Interval:          c.Interval,
		MaxKeepAliveCount: keep,
		LifetimeCount:     3 * keep,
	}
}

// checkRevised logs the server's revised subscription parameters once
// per session and makes the revised keep-alive period keep the rule.
func (dv *device) checkRevised(ctx context.Context, sub *opcua.Subscription, req *opcua.SubscriptionParameters) error {
	wait := dv.publishWait()
	period := func() time.Duration {
		return time.Duration(sub.RevisedMaxKeepAliveCount) * sub.RevisedPublishingInterval
	}
	if period() > wait/2 && sub.RevisedPublishingInterval > 0 {
		// The server raised the interval or the count: ask for fewer
		// intervals of its interval.
		lower := *req
		lower.Interval = sub.RevisedPublishingInterval
		lower.MaxKeepAliveCount = keepAliveCount(sub.RevisedPublishingInterval, dv.cfg.Config.Timeouts.Keepalive, wait)
		lower.LifetimeCount = 3 * lower.MaxKeepAliveCount
		if _, err := sub.ModifySubscription(ctx, lower); err != nil {
			return fmt.Errorf("modify subscription (keep-alive count %d): %w", lower.MaxKeepAliveCount, err)
		}
	}
	dv.log.Info("subscription revised by the server",
		"publishing_interval", sub.RevisedPublishingInterval, "keepalive_count", sub.RevisedMaxKeepAliveCount,
		"lifetime_count", sub.RevisedLifetimeCount, "keepalive_period", period(), "publish_wait", wait,
		"requested_interval", req.Interval, "requested_keepalive_count", req.MaxKeepAliveCount)
	if p := period(); p > wait/2 {
		dv.minWait = 2 * p
		return fmt.Errorf("%w (%v > %v / 2); the next session waits %v", errKeepAliveRevised, p, wait, dv.minWait)
	}
	return nil
}
