package testpeer

import (
	"context"
	"fmt"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	uaserver "github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/server/attrs"
	"github.com/gopcua/opcua/ua"
	"github.com/gopcua/opcua/uasc"
)

// What gopcua v0.9.1's server does with writes and calls, which these
// helpers build on:
//
//   - Write (server/attribute_service.go): for each node, BadNodeIdUnknown
//     when the node is not there, BadUserAccessDenied when its
//     UserAccessLevel or AccessLevel lacks CurrentWrite (it never answers
//     BadNotWritable), else it stores the DataValue as sent — no check of
//     the DataType, so a server-side BadTypeMismatch never happens — and
//     notifies subscribers.
//   - Call (server/method_service.go) answers every CallRequest with the
//     service fault BadServiceUnsupported: the server has no methods. With
//     UAMethods the kit registers its own Call service (through the
//     server's RegisterHandler, before Start) that dispatches to the
//     methods added with AddMethod.
//   - With UAWriteFilter the kit serves Write too, as gopcua does (through
//     each namespace's SetAttribute) but storing the filter's value: a
//     device that keeps another value than written, which gopcua's own
//     Write never does.

// UAMethods makes the server answer Call requests with the methods added
// by AddMethod (BadMethodInvalid for others). Without it the server is
// gopcua's own, whose Call service answers BadServiceUnsupported.
func UAMethods() UAOption { return func(c *uaConfig) { c.methods = true } }

// UAWriteFilter makes the server keep fn's value instead of the one a
// client writes to the Value of a node (fn gets the node id string, e.g.
// "ns=2;s=Setpoint", and the written value), as a device that clamps a
// setpoint does. The kit then serves Write itself (registered before
// Start), with gopcua's own logic: each node is stored by its namespace's
// SetAttribute, which checks the access level.
func UAWriteFilter(fn func(node string, v *ua.DataValue) *ua.DataValue) UAOption {
	return func(c *uaConfig) { c.writeFilter = fn }
}

// UAMethodFunc runs one call of a method: it gets the input arguments and
// returns the result (status, input argument results, outputs).
type UAMethodFunc func(in []*ua.Variant) *ua.CallMethodResult

type uaMethodKey struct{ object, method string }

// AddWritable creates a variable clients may read and write, holding v:
// its DataType attribute is the NodeId of v's built-in type (as a real
// server's is) and its AccessLevel CurrentRead|CurrentWrite. gopcua's Write
// service stores whatever a client writes, unchecked.
func (s *UAServer) AddWritable(name string, v any) {
	s.put(name, uaNode{build: variableBuilder(name, v, ua.AccessLevelTypeCurrentRead|ua.AccessLevelTypeCurrentWrite)})
}

// AddReadOnly creates a variable clients may read but not write
// (AccessLevel CurrentRead): gopcua's Write answers BadUserAccessDenied.
func (s *UAServer) AddReadOnly(name string, v any) {
	s.put(name, uaNode{build: variableBuilder(name, v, ua.AccessLevelTypeCurrentRead)})
}

func variableBuilder(name string, v any, access ua.AccessLevelType) func(*ua.NodeID) *uaserver.Node {
	return func(nid *ua.NodeID) *uaserver.Node {
		first := DataValue(v, time.Now())
		return uaserver.NewNode(nid, map[ua.AttributeID]*ua.DataValue{
			ua.AttributeIDNodeClass:       uaserver.DataValueFromValue(uint32(ua.NodeClassVariable)),
			ua.AttributeIDBrowseName:      uaserver.DataValueFromValue(attrs.BrowseName(name)),
			ua.AttributeIDDisplayName:     uaserver.DataValueFromValue(attrs.DisplayName(name, name)),
			ua.AttributeIDDataType:        uaserver.DataValueFromValue(ua.NewNumericNodeID(0, uint32(first.Value.Type()))),
			ua.AttributeIDValueRank:       uaserver.DataValueFromValue(int32(-1)),
			ua.AttributeIDAccessLevel:     uaserver.DataValueFromValue(byte(access)),
			ua.AttributeIDUserAccessLevel: uaserver.DataValueFromValue(byte(access)),
		}, nil, func() *ua.DataValue { return first })
	}
}

// AddMethod adds method (a node id string such as "ns=2;s=Reset") of
// object to the kit's Call service (UAMethods). Calls of it run fn in the
// server's request goroutine.
func (s *UAServer) AddMethod(object, method string, fn UAMethodFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.methods == nil {
		s.methods = map[uaMethodKey]UAMethodFunc{}
	}
	s.methods[uaMethodKey{nodeKey(object), nodeKey(method)}] = fn
}

// nodeKey is the canonical form of a node id string.
func nodeKey(s string) string {
	n, err := ua.ParseNodeID(s)
	if err != nil {
		return s
	}
	return n.String()
}

// Calls returns how many method calls the kit's Call service received.
func (s *UAServer) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// registerCall installs the kit's Call service (UAMethods) and Write
// service (UAWriteFilter) on srv, before Start.
func (s *UAServer) registerCall(srv *uaserver.Server) {
	if fn := s.cfg.writeFilter; fn != nil {
		srv.RegisterHandler(id.WriteRequest_Encoding_DefaultBinary, func(_ *uasc.SecureChannel, r ua.Request, _ uint32) (ua.Response, error) {
			req, ok := r.(*ua.WriteRequest)
			if !ok {
				return nil, ua.StatusBadRequestTypeInvalid
			}
			status := make([]ua.StatusCode, len(req.NodesToWrite))
			for i, n := range req.NodesToWrite {
				ns, err := srv.Namespace(int(n.NodeID.Namespace()))
				if err != nil {
					status[i] = ua.StatusBadNodeIDUnknown
					continue
				}
				v := n.Value
				if n.AttributeID == ua.AttributeIDValue {
					v = fn(n.NodeID.String(), v)
				}
				status[i] = ns.SetAttribute(n.NodeID, n.AttributeID, v)
			}
			return &ua.WriteResponse{ResponseHeader: responseHeader(req.RequestHeader), Results: status, DiagnosticInfos: []*ua.DiagnosticInfo{}}, nil
		})
	}
	if !s.cfg.methods {
		return
	}
	srv.RegisterHandler(id.CallRequest_Encoding_DefaultBinary, func(_ *uasc.SecureChannel, r ua.Request, _ uint32) (ua.Response, error) {
		req, ok := r.(*ua.CallRequest)
		if !ok {
			return nil, ua.StatusBadRequestTypeInvalid
		}
		results := make([]*ua.CallMethodResult, len(req.MethodsToCall))
		for i, m := range req.MethodsToCall {
			s.mu.Lock()
			s.calls++
			fn := s.methods[uaMethodKey{m.ObjectID.String(), m.MethodID.String()}]
			s.mu.Unlock()
			if fn == nil {
				results[i] = &ua.CallMethodResult{StatusCode: ua.StatusBadMethodInvalid}
				continue
			}
			results[i] = fn(m.InputArguments)
		}
		return &ua.CallResponse{ResponseHeader: responseHeader(req.RequestHeader), Results: results, DiagnosticInfos: []*ua.DiagnosticInfo{}}, nil
	})
}

// responseHeader is the header of a Good response to a request with h, as
// gopcua's services make it.
func responseHeader(h *ua.RequestHeader) *ua.ResponseHeader {
	return &ua.ResponseHeader{
		Timestamp:          time.Now(),
		RequestHandle:      h.RequestHandle,
		ServiceResult:      ua.StatusOK,
		ServiceDiagnostics: &ua.DiagnosticInfo{},
		StringTable:        []string{},
		AdditionalHeader:   ua.NewExtensionObject(nil),
	}
}

// Read reads the value of variable name through a client of its own (the
// server must offer security None): what the server holds, as any client
// sees it.
func (s *UAServer) Read(ctx context.Context, name string) (*ua.DataValue, error) {
	c, err := opcua.NewClient(s.Endpoint(), opcua.SecurityMode(ua.MessageSecurityModeNone),
		opcua.SecurityPolicy(ua.SecurityPolicyURINone), opcua.AuthAnonymous(), opcua.AutoReconnect(false))
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", s.Endpoint(), err)
	}
	defer c.Close(context.Background())
	res, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{
		NodeID: ua.NewStringNodeID(s.NS(), name), AttributeID: ua.AttributeIDValue,
	}}})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(res.Results) != 1 {
		return nil, fmt.Errorf("read %s: %d results", name, len(res.Results))
	}
	return res.Results[0], nil
}
