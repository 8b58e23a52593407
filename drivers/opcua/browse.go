package opcua

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
)

// BrowseOptions say where and how `ferry opcua browse` connects: the
// same security and login settings as a device.
type BrowseOptions struct {
	// Config holds the endpoint, security, auth and timeouts (the
	// subscription settings are not used).
	Config Config
	// Node is the node whose children are listed; "" is the Objects
	// folder (i=85).
	Node           string
	DataDir        string
	ApplicationURI string
	Gateway        string
}

// BrowseEntry is one child node.
type BrowseEntry struct {
	// NodeID in the ns= form; NamespaceURI is the URI of its namespace,
	// for the nsu= form a device map should prefer.
	NodeID       string
	NamespaceURI string
	BrowseName   string
	NodeClass    string
	DataType     string // for variables
	Value        string // for variables: the value, or the status name when not Good
}

// BrowseResult is the answer of Browse.
type BrowseResult struct {
	Endpoint   string // policy/mode used
	Namespaces []string
	Entries    []BrowseEntry
}

// Browse connects like a device would (the same trust store: an untrusted
// server certificate is refused and saved in pki/rejected) and lists the
// children of a node with, for variables, their data type and value.
func Browse(ctx context.Context, o BrowseOptions) (*BrowseResult, error) {
	var def Config
	def.SetDefaults()
	c := o.Config
	if c.SecurityMode == "" {
		c.SecurityMode = def.SecurityMode
	}
	if c.Timeouts == (Timeouts{}) {
		c.Timeouts = def.Timeouts
	}
	c.Mode, c.Interval, c.SamplingInterval, c.QueueSize, c.Deadband = "poll", def.Interval, 0, 1, def.Deadband
	dev := Device{Name: "browse", Config: c, Points: []Point{{Name: "x", Node: "i=85"}}}
	if err := dev.Validate(); err != nil {
		return nil, err
	}
	if o.DataDir == "" {
		return nil, errors.New("a data directory is needed for the PKI")
	}
	start := NodeID{Kind: 'i', Numeric: id.ObjectsFolder}
	if o.Node != "" {
		var err error
		if start, err = ParseNodeID(o.Node); err != nil {
			return nil, err
		}
	}
	drv, err := New([]Device{dev}, Options{DataDir: o.DataDir, ApplicationURI: o.ApplicationURI, Gateway: o.Gateway})
	if err != nil {
		return nil, err
	}
	cl, ep, err := dial(ctx, dialOptions{
		cfg: &c, pki: drv.pki, ident: drv.identity, appURI: drv.appURI, appName: "ferry browse", session: "ferry browse",
	}, nil)
	if err != nil {
		return nil, err
	}
	defer cl.Close(context.Background())
	res := &BrowseResult{Endpoint: policyName(ep.SecurityPolicyURI) + "/" + modeName(ep.SecurityMode), Namespaces: cl.Namespaces()}
	node, err := start.resolve(res.Namespaces)
	if err != nil {
		return nil, err
	}
	refs, err := browseChildren(ctx, cl, node)
	if err != nil {
		return nil, fmt.Errorf("browse %s: %w", start, err)
	}
	var vars []int
	for _, r := range refs {
		e := BrowseEntry{NodeClass: strings.TrimPrefix(r.NodeClass.String(), "NodeClass")}
		if r.NodeID != nil && r.NodeID.NodeID != nil {
			e.NodeID = r.NodeID.NodeID.String()
			e.NamespaceURI = r.NodeID.NamespaceURI
			if ns := int(r.NodeID.NodeID.Namespace()); e.NamespaceURI == "" && ns > 0 && ns < len(res.Namespaces) {
				e.NamespaceURI = res.Namespaces[ns]
			}
		}
		if r.BrowseName != nil {
			e.BrowseName = r.BrowseName.Name
		}
		if r.NodeClass == ua.NodeClassVariable && r.NodeID != nil {
			vars = append(vars, len(res.Entries))
		}
		res.Entries = append(res.Entries, e)
	}
	if err := readVariables(ctx, cl, refs, res.Entries, vars); err != nil {
		return nil, err
	}
	return res, nil
}

// browseChildren returns the forward hierarchical references of node,
// following continuation points.
func browseChildren(ctx context.Context, cl *opcua.Client, node *ua.NodeID) ([]*ua.ReferenceDescription, error) {
	req := &ua.BrowseRequest{
		RequestedMaxReferencesPerNode: 1000,
		NodesToBrowse: []*ua.BrowseDescription{{
			NodeID:          node,
			BrowseDirection: ua.BrowseDirectionForward,
			ReferenceTypeID: ua.NewNumericNodeID(0, id.HierarchicalReferences),
			IncludeSubtypes: true,
			ResultMask:      uint32(ua.BrowseResultMaskAll),
		}},
	}
	resp, err := cl.Browse(ctx, req)
	if err != nil {
		return nil, err
	}
	if len(resp.Results) != 1 {
		return nil, fmt.Errorf("server answered %d results", len(resp.Results))
	}
	r := resp.Results[0]
	if severity(r.StatusCode) == ferry.Bad {
		return nil, r.StatusCode
	}
	refs := r.References
	for cp := r.ContinuationPoint; len(cp) > 0 && len(refs) < 100000; {
		next, err := cl.BrowseNext(ctx, &ua.BrowseNextRequest{ContinuationPoints: [][]byte{cp}})
		if err != nil {
			return nil, err
		}
		if len(next.Results) != 1 {
			break
		}
		refs = append(refs, next.Results[0].References...)
		cp = next.Results[0].ContinuationPoint
	}
	return refs, nil
}

// readVariables reads DataType and Value of the variables among refs.
func readVariables(ctx context.Context, cl *opcua.Client, refs []*ua.ReferenceDescription, entries []BrowseEntry, vars []int) error {
	for _, b := range batches(len(vars), 500) {
		var ids []*ua.ReadValueID
		for _, i := range vars[b[0]:b[1]] {
			n := ua.NewNodeIDFromExpandedNodeID(refs[i].NodeID)
			ids = append(ids,
				&ua.ReadValueID{NodeID: n, AttributeID: ua.AttributeIDDataType},
				&ua.ReadValueID{NodeID: n, AttributeID: ua.AttributeIDValue})
		}
		res, err := cl.Read(ctx, &ua.ReadRequest{NodesToRead: ids, TimestampsToReturn: ua.TimestampsToReturnNeither})
		if err != nil {
			return fmt.Errorf("read variables: %w", err)
		}
		if len(res.Results) != len(ids) {
			return fmt.Errorf("read variables: %d results for %d nodes", len(res.Results), len(ids))
		}
		for k, i := range vars[b[0]:b[1]] {
			entries[i].DataType = dataTypeName(res.Results[2*k])
			entries[i].Value = valueText(res.Results[2*k+1])
		}
	}
	return nil
}

func dataTypeName(dv *ua.DataValue) string {
	if dv == nil || dv.Value == nil || severity(dv.Status) == ferry.Bad {
		return ""
	}
	var n *ua.NodeID
	switch v := dv.Value.Value().(type) {
	case *ua.NodeID:
		n = v
	case *ua.ExpandedNodeID:
		n = v.NodeID
	}
	if n == nil {
		return ""
	}
	if n.Namespace() == 0 && n.Type() != ua.NodeIDTypeString {
		if name := id.Name(n.IntID()); name != "" {
			return name
		}
	}
	return n.String()
}

func valueText(dv *ua.DataValue) string {
	if dv == nil {
		return ""
	}
	if severity(dv.Status) != ferry.Good {
		return StatusName(dv.Status)
	}
	v, reason := convert(dv.Value, -1)
	switch reason {
	case "":
		return v.String()
	case reasonArray:
		s := fmt.Sprint(dv.Value.Value())
		if len(s) > 60 {
			s = s[:57] + "..."
		}
		return fmt.Sprintf("array[%d] %s", dv.Value.ArrayLength(), s)
	}
	return "(" + reason + ")"
}
