package main

import (
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/ferry-edge/ferry/drivers/opcua"
)

// writeDeviceMap prints the variables of a browse as a device map that
// `ferry validate` takes as it is: one point per variable, named from its
// browse path, its node in the nsu= form (namespace indexes may change when
// a server restarts), its OPC UA data type and ferry type as a comment.
// Variables whose values ferry cannot take (arrays, structures) are listed
// commented out, with the reason.
func writeDeviceMap(w io.Writer, name string, c opcua.Config, node string, res *opcua.BrowseResult) error {
	if !pointNameRE.MatchString(name) {
		return usageError("-name %q: want letters, digits, _ and -", name)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by: ferry opcua browse -yaml %s %s\n", c.Endpoint, node)
	fmt.Fprintf(&b, "# Check with `ferry validate`, read once with `ferry read`.\n")
	fmt.Fprintf(&b, "devices:\n  - name: %s\n    opcua:\n      endpoint: %s\n", name, strconv.Quote(c.Endpoint))
	if c.SecurityPolicy != "" {
		fmt.Fprintf(&b, "      security_policy: %s\n", c.SecurityPolicy)
	}
	fmt.Fprintf(&b, "      security_mode: %s\n", c.SecurityMode)
	if c.AllowInsecure {
		fmt.Fprintf(&b, "      allow_insecure: true\n")
	}
	if c.Auth.Username != "" {
		fmt.Fprintf(&b, "      auth: {username: %s, password_file: /etc/ferry/%s.password}\n", strconv.Quote(c.Auth.Username), name)
	}
	fmt.Fprintf(&b, "      mode: subscribe\n      interval: 1s\n    points:\n")
	used := map[string]int{}
	n := 0
	for _, e := range res.Entries {
		if e.NodeClass != "Variable" {
			continue
		}
		pn := pointName(append(append([]string(nil), e.Path...), e.BrowseName))
		if used[pn]++; used[pn] > 1 {
			pn += "_" + strconv.Itoa(used[pn])
		}
		ref := nsuForm(e.NodeID, e.NamespaceURI)
		if e.Type == "" {
			fmt.Fprintf(&b, "      # - {name: %s, node: %s}  # %s: ferry cannot take this value (%s)\n", pn, strconv.Quote(ref), dash(e.DataType), dash(e.Value))
			continue
		}
		fmt.Fprintf(&b, "      - {name: %s, node: %s}  # %s (%s)\n", pn, strconv.Quote(ref), e.DataType, e.Type)
		n++
	}
	if n == 0 {
		// An empty points list would not validate: say why instead.
		return fmt.Errorf("no variable ferry can read under %s (try a -depth above 1, or another NODE)", dash(node))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

var (
	pointNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	notNameRE   = regexp.MustCompile(`[^A-Za-z0-9]+`)
)

// pointName makes a point name of a browse path: lower case, words joined
// by _ ("Line1", "Oil Temp" → "line1_oil_temp").
func pointName(path []string) string {
	var parts []string
	for _, p := range path {
		if s := strings.Trim(notNameRE.ReplaceAllString(strings.ToLower(p), "_"), "_"); s != "" {
			parts = append(parts, s)
		}
	}
	if len(parts) == 0 {
		return "point"
	}
	return strings.Join(parts, "_")
}

// nsuForm turns "ns=2;s=X" into "nsu=URI;s=X" when the namespace URI is
// known; namespace 0 and unknown URIs keep the form they have.
func nsuForm(nodeID, uri string) string {
	if uri == "" || !strings.HasPrefix(nodeID, "ns=") {
		return nodeID
	}
	_, rest, ok := strings.Cut(nodeID, ";")
	if !ok {
		return nodeID
	}
	return "nsu=" + uri + ";" + rest
}
