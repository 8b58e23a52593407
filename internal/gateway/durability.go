package gateway

import (
	"github.com/ferry-edge/ferry/internal/web"
)

// durability is the health page's view of the retention of acknowledged
// records and of the uplink's loss check (docs/durability.md); nil
// without a running uplink.
func (d *Gateway) durability() *web.Durability {
	up := d.curUp.Load()
	if up == nil {
		return nil
	}
	st := up.LossStatus()
	recs, bytes := d.buf.KeptStats()
	return &web.Durability{
		Enabled:         st.Enabled,
		WindowSeconds:   st.Window.Seconds(),
		RetainedRecords: recs,
		RetainedBytes:   bytes,
		Checks:          st.Checks,
		LastCheck:       st.LastCheck,
		LastError:       st.LastError,
		Lost:            st.Lost,
		Resent:          st.Resent,
		Unrecoverable:   st.Unrecoverable,
		LastLoss:        st.LastLoss,
		LastLossMessage: st.LastLossMessage,
	}
}
