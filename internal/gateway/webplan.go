package gateway

import (
	"github.com/ferry-edge/ferry/drivers/modbus"
	"github.com/ferry-edge/ferry/internal/web"
)

// devicePlan is the console's device page's request plan: for a Modbus
// device, the read requests of one poll as the running driver planned
// them (what `ferry plan` prints), and the ranges it learned are bad; nil
// for a device no Modbus driver polls.
func (d *Gateway) devicePlan(device string) *web.DevicePlan {
	drivers := d.curDrivers.Load()
	if drivers == nil {
		return nil
	}
	for _, drv := range *drivers {
		mb, ok := drv.(*modbus.Driver)
		if !ok {
			continue
		}
		for _, lp := range mb.Plan() {
			for _, dp := range lp.Devices {
				if dp.Device != device {
					continue
				}
				out := &web.DevicePlan{Interval: dp.Interval, Timeout: dp.Timeout, Requests: make([]string, len(dp.Requests))}
				for i, r := range dp.Requests {
					out.Requests[i] = r.String()
				}
				for _, b := range dp.Bad {
					out.Bad = append(out.Bad, b.String())
				}
				return out
			}
		}
	}
	return nil
}
