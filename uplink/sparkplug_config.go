package uplink

import (
	"github.com/ferry-edge/ferry/internal/setting"
)

// validateSparkplug checks the sparkplug block, and that it is the only
// upstream: each upstream needs its own cursor in the buffer, which the
// several-upstreams work (issue 25) brings; until then a record acked by
// one upstream would be gone for the other.
func (c *Config) validateSparkplug() error {
	var errs setting.Errors
	if c.NATS != nil {
		errs.Add("", "cannot run together with uplink.nats yet: several upstreams, each with its own cursor in the buffer, are coming (issue 25); use one of them for now")
	}
	if err := c.Sparkplug.Validate(); err != nil {
		errs.Merge("", err)
	}
	return errs.Err()
}
