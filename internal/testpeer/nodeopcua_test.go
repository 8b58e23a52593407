package testpeer_test

import (
	"context"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// readNode reads one node of the server at endpoint (security None).
func readNode(ctx context.Context, endpoint, node string) (any, error) {
	c, err := opcua.NewClient(endpoint, opcua.SecurityMode(ua.MessageSecurityModeNone), opcua.AutoReconnect(false),
		opcua.DialTimeout(5*time.Second), opcua.RequestTimeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		return nil, err
	}
	defer c.Close(context.Background())
	id, err := ua.ParseNodeID(node)
	if err != nil {
		return nil, err
	}
	res, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: id, AttributeID: ua.AttributeIDValue}}})
	if err != nil {
		return nil, err
	}
	if res.Results[0].Status != ua.StatusOK {
		return nil, res.Results[0].Status
	}
	return res.Results[0].Value.Value(), nil
}

// TestNodeOPCUA: the node-opcua server serves the described variables on
// the port it reported; Set changes a value; a counting node counts; after
// Restart it serves again on the same endpoint, with its first values.
func TestNodeOPCUA(t *testing.T) {
	s := testpeer.StartNodeOPCUA(t, testpeer.NodeOPCUAConfig{Nodes: []testpeer.NodeOPCUAVar{
		{Name: "Quiet", Type: "Double", Value: 1.5},
		{Name: "Name", Type: "String", Value: "press 4"},
		{Name: "Count", Type: "Int32", Value: 0, Every: 50 * time.Millisecond},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	read := func(node string) any {
		t.Helper()
		v, err := readNode(ctx, s.Endpoint(), s.Node(node))
		if err != nil {
			t.Fatalf("read %s: %v", node, err)
		}
		return v
	}
	if v := read("Quiet"); v != 1.5 {
		t.Errorf("Quiet = %v, want 1.5", v)
	}
	if v := read("Name"); v != "press 4" {
		t.Errorf("Name = %v, want press 4", v)
	}
	if err := s.Set("Quiet", 2.25); err != nil {
		t.Fatal(err)
	}
	if v := read("Quiet"); v != 2.25 {
		t.Errorf("Quiet after Set = %v, want 2.25", v)
	}
	if err := s.Set("Missing", 1); err == nil {
		t.Error("Set of an unknown node: no error")
	}
	first := read("Count").(int32)
	testutil.WaitFor(t, 30*time.Second, "Count counting", func() bool { return read("Count").(int32) > first })

	endpoint := s.Endpoint()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.Endpoint() != endpoint || s.Starts() != 2 {
		t.Errorf("after Restart: endpoint %s (was %s), starts %d", s.Endpoint(), endpoint, s.Starts())
	}
	if v := read("Quiet"); v != 1.5 {
		t.Errorf("Quiet after Restart = %v, want the first value 1.5", v)
	}
}
