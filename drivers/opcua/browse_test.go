package opcua

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
)

// TestBrowse lists the variables of the test namespace with their values
// over a secure session, after the server certificate was trusted.
func TestBrowse(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverOpts{secure: true})
	srv.add(sourceTime, "Pressure", 4.5, "Running", true, "Name", "Kessel 1")
	dataDir := t.TempDir()
	var c Config
	c.Endpoint = srv.Endpoint()
	o := BrowseOptions{Config: c, Node: "nsu=" + testNS + ";i=85", DataDir: dataDir, Gateway: "gw1"}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Untrusted first: the same refusal as the driver.
	if _, err := Browse(ctx, o); !errors.Is(err, ua.StatusBadCertificateUntrusted) {
		t.Fatalf("untrusted server: %v", err)
	}
	trustServer(t, dataDir, srv)
	res, err := Browse(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Endpoint != "Aes256_Sha256_RsaPss/SignAndEncrypt" {
		t.Errorf("endpoint %s", res.Endpoint)
	}
	got := map[string]BrowseEntry{}
	for _, e := range res.Entries {
		got[e.BrowseName] = e
	}
	want := map[string]string{"Pressure": "4.5", "Running": "true", "Name": "Kessel 1"}
	for name, v := range want {
		e, ok := got[name]
		if !ok {
			t.Errorf("%s not listed: %+v", name, res.Entries)
			continue
		}
		if e.Value != v || e.NodeClass != "Variable" || e.NamespaceURI != testNS || !strings.HasSuffix(e.NodeID, ";s="+name) {
			t.Errorf("%s: %+v", name, e)
		}
	}
}
