package opcua

import (
	"context"
	"fmt"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
)

// Acknowledge calls the Acknowledge method of condition conditionID (a
// node id as Event.ConditionID gives it) on device name's server, for the
// condition state eventID, with comment. The server then sends the
// condition's new state (AckedState true) as an event: that, not this
// call's success, is what ferry shows. Like a write, it needs the device
// connected, and it is never retried.
func (d *Driver) Acknowledge(ctx context.Context, name, conditionID string, eventID []byte, comment string) error {
	var dv *device
	for _, x := range d.devs {
		if x.cfg.Name == name {
			dv = x
		}
	}
	if dv == nil {
		return fmt.Errorf("opcua: device %q: %w", name, ferry.ErrUnknownDevice)
	}
	what := "acknowledge " + name + " condition " + conditionID
	if dv.cfg.Config.Events == nil {
		return refused(what, "the device has no events: block")
	}
	cond, err := ua.ParseNodeID(conditionID)
	if err != nil {
		return refused(what, "condition id: %v", err)
	}
	s, err := dv.ready(ctx, what)
	if err != nil {
		return err
	}
	dv.m.writes.Inc()
	res, err := s.c.Call(ctx, &ua.CallMethodRequest{
		ObjectID: cond,
		MethodID: ua.NewNumericNodeID(0, id.AcknowledgeableConditionType_Acknowledge),
		InputArguments: []*ua.Variant{
			ua.MustVariant(eventID),
			ua.MustVariant(&ua.LocalizedText{EncodingMask: ua.LocalizedTextText, Text: comment}),
		},
	})
	if err != nil {
		dv.m.writeError(reasonOf(err))
		return sendError(what, err)
	}
	if severity(res.StatusCode) == ferry.Bad {
		dv.m.writeError(StatusName(res.StatusCode))
		return fmt.Errorf("%s: %s", what, StatusName(res.StatusCode))
	}
	return nil
}
