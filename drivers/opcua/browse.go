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
	Node string
	// Depth is how many levels below Node are listed: 1 (or 0) lists
	// its children, 2 their children too, and so on (objects and folders
	// are followed, variables are not). At most MaxBrowseEntries are
	// listed.
	Depth          int
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
	// Path is the browse names from Node down to this node's parent
	// (empty for Node's own children).
	Path []string
	// Type is the ferry value type a variable maps to ("float", "int",
	// "uint", "bool", "string"), "" when it has none (arrays, structures).
	Type string
}

// MaxBrowseEntries bounds a recursive browse.
const MaxBrowseEntries = 10000

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
	depth := max(o.Depth, 1)
	type level struct {
		node *ua.NodeID
		path []string
		d    int
	}
	queue := []level{{node, nil, 1}}
	for len(queue) > 0 && len(res.Entries) < MaxBrowseEntries {
		lv := queue[0]
		queue = queue[1:]
		refs, err := browseChildren(ctx, cl, lv.node)
		if err != nil {
			if lv.d == 1 {
				return nil, fmt.Errorf("browse %s: %w", start, err)
			}
			continue // a node deeper down that cannot be browsed: skip it
		}
		var vars []int
		var varRefs []*ua.ReferenceDescription
		for _, r := range refs {
			if len(res.Entries) >= MaxBrowseEntries {
				break
			}
			e := BrowseEntry{NodeClass: strings.TrimPrefix(r.NodeClass.String(), "NodeClass"), Path: lv.path}
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
				varRefs = append(varRefs, r)
			}
			if r.NodeClass == ua.NodeClassObject && r.NodeID != nil && lv.d < depth {
				queue = append(queue, level{ua.NewNodeIDFromExpandedNodeID(r.NodeID), append(append([]string(nil), lv.path...), e.BrowseName), lv.d + 1})
			}
			res.Entries = append(res.Entries, e)
		}
		if err := readVariables(ctx, cl, varRefs, res.Entries, vars); err != nil {
			return nil, err
		}
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

// readVariables reads DataType and Value of the variables refs, whose
// entries are entries[vars[k]].
func readVariables(ctx context.Context, cl *opcua.Client, refs []*ua.ReferenceDescription, entries []BrowseEntry, vars []int) error {
	for _, b := range batches(len(vars), 500) {
		var ids []*ua.ReadValueID
		for k := range vars[b[0]:b[1]] {
			n := ua.NewNodeIDFromExpandedNodeID(refs[b[0]+k].NodeID)
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
			val := res.Results[2*k+1]
			entries[i].DataType = dataTypeName(res.Results[2*k], val)
			entries[i].Value = valueText(val)
			entries[i].Type = ferryType(entries[i].DataType)
		}
	}
	return nil
}

// dataTypeName names a variable's DataType attribute (dv). A server that
// answers something that is not a data type there (gopcua's own server
// answers VariableNode) gets the type of the variable's value instead.
func dataTypeName(dv, val *ua.DataValue) string {
	var n *ua.NodeID
	if dv != nil && dv.Value != nil && severity(dv.Status) != ferry.Bad {
		switch v := dv.Value.Value().(type) {
		case *ua.NodeID:
			n = v
		case *ua.ExpandedNodeID:
			n = v.NodeID
		}
	}
	if n != nil && n.Namespace() == 0 && n.Type() != ua.NodeIDTypeString {
		if name, ok := builtinDataTypes[n.IntID()]; ok {
			return name
		}
	}
	if val != nil && val.Value != nil && severity(val.Status) != ferry.Bad && val.Value.Type() != ua.TypeIDNull {
		t := strings.TrimPrefix(val.Value.Type().String(), "TypeID")
		if val.Value.ArrayLength() > 0 {
			t += "[]"
		}
		return t
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

// builtinDataTypes are the data types of namespace 0 a variable may have,
// by node id, with the abstract ones a server may declare.
var builtinDataTypes = map[uint32]string{
	id.Boolean: "Boolean", id.SByte: "SByte", id.Byte: "Byte", id.Int16: "Int16", id.UInt16: "UInt16",
	id.Int32: "Int32", id.UInt32: "UInt32", id.Int64: "Int64", id.UInt64: "UInt64", id.Float: "Float",
	id.Double: "Double", id.String: "String", id.DateTime: "DateTime", id.GUID: "Guid", id.ByteString: "ByteString",
	id.XMLElement: "XmlElement", id.NodeID: "NodeId", id.ExpandedNodeID: "ExpandedNodeId", id.StatusCode: "StatusCode",
	id.QualifiedName: "QualifiedName", id.LocalizedText: "LocalizedText", id.Structure: "Structure",
	id.DataValue: "DataValue", id.BaseDataType: "BaseDataType", id.DiagnosticInfo: "DiagnosticInfo",
	id.Number: "Number", id.Integer: "Integer", id.UInteger: "UInteger", id.Enumeration: "Enumeration",
	id.Duration: "Duration", id.UtcTime: "UtcTime", id.LocaleID: "LocaleId",
}

// ferryType maps an OPC UA data type name to the ferry value type its
// values become ("" when they become none: arrays, structures).
func ferryType(dataType string) string {
	switch dataType {
	case "Float", "Double", "Duration", "Number":
		return "float"
	case "SByte", "Int16", "Int32", "Int64", "Integer", "Enumeration":
		return "int"
	case "Byte", "UInt16", "UInt32", "UInt64", "UInteger", "StatusCode":
		return "uint"
	case "Boolean":
		return "bool"
	case "String", "LocalizedText", "DateTime", "UtcTime", "Guid", "LocaleId", "NodeId", "QualifiedName":
		return "string"
	}
	return ""
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
