// Package tlsfile builds ferry's TLS client settings from the files a
// configuration names (a CA bundle, a client certificate and its key).
// Every TLS client of ferry (the NATS uplink, the MQTT driver, the MQTT
// alert sink, the Sparkplug node, the CLI's API client) reads its files
// here, at connect time, so a renewed file is used by the next connection,
// and a bad file gives the same clear error everywhere.
package tlsfile

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// Files are the TLS settings of one client, as a configuration gives them.
type Files struct {
	CA         string // PEM file of the CA(s) to trust; "": the system roots
	Cert, Key  string // PEM client certificate and key; "": none
	ServerName string // name expected in the server's certificate; "": the dialled host
	Insecure   bool   // do not verify the server's certificate (tests only)
}

// Pool reads a PEM file of CA certificates.
func Pool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca %s holds no PEM certificate", path)
	}
	return pool, nil
}

// Client returns a TLS 1.2+ client configuration of f.
func Client(f Files) (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         f.ServerName,
		InsecureSkipVerify: f.Insecure, //nolint:gosec // documented as for tests only
	}
	if f.CA != "" {
		pool, err := Pool(f.CA)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	if f.Cert != "" || f.Key != "" {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("cert %s / key %s: %w", f.Cert, f.Key, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
