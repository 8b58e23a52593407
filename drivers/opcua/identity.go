package opcua

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/gopcua/opcua/ua"
)

// checkServerIdentity checks that the server certificate of ep names what
// was dialled: the host of the configured endpoint (a DNS name or IP
// address in its subject alternative names, as TLS checks) and the
// application URI the server announces in its endpoint description (the
// URI in its subject alternative names, OPC UA Part 4 §6.1.3). Trust
// (pki.Check) says the certificate is one the operator accepted; this says
// it is the one of this server, so a trusted certificate of another
// machine cannot stand in for it. Each check can be turned off, as OPC UA
// clients allow, for servers whose certificates cannot be reissued.
func checkServerIdentity(c *Config, ep *ua.EndpointDescription) error {
	if !c.CheckServerHost && !c.CheckServerURI {
		return nil
	}
	certs, err := parseCerts(ep.ServerCertificate)
	if err != nil || len(certs) == 0 {
		return fmt.Errorf("%w: server certificate of %s cannot be read: %v", ua.StatusBadCertificateInvalid, c.Endpoint, err)
	}
	leaf := certs[0]
	name := subjectName(leaf)
	if c.CheckServerHost {
		u, err := url.Parse(c.Endpoint)
		if err != nil {
			return fmt.Errorf("endpoint %s: %w", c.Endpoint, err)
		}
		host := u.Hostname()
		if err := leaf.VerifyHostname(host); err != nil {
			return fmt.Errorf("%w: server certificate %q (thumbprint %s) is for %s, not %s, the host of endpoint %s; dial a name the certificate holds, have the server's certificate reissued with %s, or set check_server_host: false",
				ua.StatusBadCertificateHostNameInvalid, name, Thumbprint(leaf.Raw), certHosts(leaf.DNSNames, leaf.IPAddresses), host, c.Endpoint, host)
		}
	}
	if c.CheckServerURI {
		announced := ""
		if ep.Server != nil {
			announced = ep.Server.ApplicationURI
		}
		var uris []string
		for _, u := range leaf.URIs {
			uris = append(uris, u.String())
		}
		if len(uris) == 0 || uris[0] != announced {
			held := "no application URI"
			if len(uris) > 0 {
				held = "application URI " + uris[0]
			}
			return fmt.Errorf("%w: server certificate %q (thumbprint %s) holds %s, but the server at %s announces %q; have the server's certificate reissued for its application URI, or set check_server_uri: false",
				ua.StatusBadCertificateURIInvalid, name, Thumbprint(leaf.Raw), held, c.Endpoint, announced)
		}
	}
	return nil
}

func certHosts[T fmt.Stringer](dns []string, ips []T) string {
	names := append([]string{}, dns...)
	for _, ip := range ips {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "no host name"
	}
	return strings.Join(names, ", ")
}
