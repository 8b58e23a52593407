package opcua

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gopcua/opcua/ua"
)

// maxIDLength bounds string and opaque identifiers (Part 3: 4096).
const maxIDLength = 4096

// NodeID is a parsed node id. A node id given with a namespace URI
// (nsu=) is resolved to an index through the server's namespace array on
// every connect, because indexes may change when a server restarts and
// URIs do not.
type NodeID struct {
	// NamespaceURI is set for nsu= ids; Namespace is then resolved later.
	NamespaceURI string
	Namespace    uint16
	// Kind is 'i' (numeric), 's' (string), 'g' (GUID) or 'b' (opaque).
	Kind    byte
	Numeric uint32
	// Text is the string identifier, the GUID in canonical form, or the
	// opaque identifier as base64.
	Text   string
	opaque []byte
}

// ParseNodeID parses a node id in the OPC UA string form:
//
//	[ns=<index>;|nsu=<namespace URI>;]<i=<number>|s=<string>|g=<guid>|b=<base64>>
//
// Without ns= or nsu= the namespace is 0. The identifier type prefix is
// required (s=Foo, not Foo), so that a typo cannot turn into a different
// string id.
func ParseNodeID(s string) (NodeID, error) {
	var n NodeID
	if s == "" {
		return n, errors.New("empty node id")
	}
	rest := s
	switch {
	case strings.HasPrefix(rest, "nsu="):
		uri, id, ok := strings.Cut(rest[4:], ";")
		if !ok {
			return n, fmt.Errorf("%q: want nsu=<namespace URI>;<i|s|g|b>=<id>", s)
		}
		if uri == "" {
			return n, fmt.Errorf("%q: empty namespace URI", s)
		}
		n.NamespaceURI, rest = uri, id
	case strings.HasPrefix(rest, "ns="):
		idx, id, ok := strings.Cut(rest[3:], ";")
		if !ok {
			return n, fmt.Errorf("%q: want ns=<index>;<i|s|g|b>=<id>", s)
		}
		v, err := parseDecimal(idx, 0xffff)
		if err != nil {
			return n, fmt.Errorf("%q: namespace index %q is not a number 0..65535", s, idx)
		}
		n.Namespace, rest = uint16(v), id
	}
	if len(rest) < 2 || rest[1] != '=' {
		return n, fmt.Errorf("%q: want i=, s=, g= or b= before the identifier", s)
	}
	n.Kind, rest = rest[0], rest[2:]
	switch n.Kind {
	case 'i':
		v, err := parseDecimal(rest, 0xffffffff)
		if err != nil {
			return n, fmt.Errorf("%q: numeric identifier %q is not a number 0..4294967295", s, rest)
		}
		n.Numeric = uint32(v)
	case 's':
		switch {
		case rest == "":
			return n, fmt.Errorf("%q: empty string identifier", s)
		case len(rest) > maxIDLength:
			return n, fmt.Errorf("string identifier is longer than %d bytes", maxIDLength)
		case !utf8.ValidString(rest):
			return n, fmt.Errorf("%q: string identifier is not valid UTF-8", s)
		}
		n.Text = rest
	case 'g':
		g, ok := canonicalGUID(rest)
		if !ok {
			return n, fmt.Errorf("%q: GUID %q is not of the form 72962b91-fa75-4ae6-8d28-b404dc7daf63", s, rest)
		}
		n.Text = g
	case 'b':
		b, err := base64.StdEncoding.DecodeString(rest)
		switch {
		case err != nil:
			return n, fmt.Errorf("%q: opaque identifier is not base64", s)
		case len(b) == 0:
			return n, fmt.Errorf("%q: empty opaque identifier", s)
		case len(b) > maxIDLength:
			return n, fmt.Errorf("opaque identifier is longer than %d bytes", maxIDLength)
		}
		n.Text, n.opaque = base64.StdEncoding.EncodeToString(b), b
	default:
		return n, fmt.Errorf("%q: identifier type %q is not one of i, s, g, b", s, string(n.Kind))
	}
	return n, nil
}

// String returns the node id in the form ParseNodeID reads.
func (n NodeID) String() string {
	var b strings.Builder
	switch {
	case n.NamespaceURI != "":
		b.WriteString("nsu=")
		b.WriteString(n.NamespaceURI)
		b.WriteByte(';')
	case n.Namespace != 0:
		b.WriteString("ns=")
		b.WriteString(strconv.Itoa(int(n.Namespace)))
		b.WriteByte(';')
	}
	b.WriteByte(n.Kind)
	b.WriteByte('=')
	if n.Kind == 'i' {
		b.WriteString(strconv.FormatUint(uint64(n.Numeric), 10))
	} else {
		b.WriteString(n.Text)
	}
	return b.String()
}

// errNamespaceUnknown is returned by resolve when the server does not
// know a namespace URI.
var errNamespaceUnknown = errors.New("namespace URI not in the server's namespace array")

// resolve returns the wire node id, looking a namespace URI up in
// nsArray (the server's NamespaceArray).
func (n NodeID) resolve(nsArray []string) (*ua.NodeID, error) {
	ns := n.Namespace
	if n.NamespaceURI != "" {
		found := false
		for i, u := range nsArray {
			if u == n.NamespaceURI && i <= 0xffff {
				ns, found = uint16(i), true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("%s: %w", n.NamespaceURI, errNamespaceUnknown)
		}
	}
	switch n.Kind {
	case 'i':
		return ua.NewNumericNodeID(ns, n.Numeric), nil
	case 's':
		return ua.NewStringNodeID(ns, n.Text), nil
	case 'g':
		return ua.NewGUIDNodeID(ns, n.Text), nil
	case 'b':
		return ua.NewByteStringNodeID(ns, n.opaque), nil
	}
	return nil, fmt.Errorf("node id %s has no identifier", n)
}

// parseDecimal parses a plain decimal number (digits only) up to max.
func parseDecimal(s string, max uint64) (uint64, error) {
	if s == "" || len(s) > 10 {
		return 0, strconv.ErrSyntax
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, strconv.ErrSyntax
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > max {
		return 0, strconv.ErrRange
	}
	return v, nil
}

// canonicalGUID checks the 8-4-4-4-12 hex form and returns it in lower
// case.
func canonicalGUID(s string) (string, bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return "", false
	}
	h := s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	if _, err := hex.DecodeString(h); err != nil {
		return "", false
	}
	return strings.ToLower(s), true
}
