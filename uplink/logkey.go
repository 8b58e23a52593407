package uplink

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"

	"github.com/nats-io/nats.go"
)

// logKey says which state err puts the uplink in, for logging a change
// once: errors that differ only in what changes from one attempt to the
// next (ports, addresses, times), or in how the same refusal reached the
// client, share a key.
func logKey(err error, reason string) string {
	if err == nil {
		return "ok"
	}
	var verr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &verr):
		return reason + ": tls: server certificate not verified: " + collapseDigits(verr.Err.Error())
	case tlsRefused(err):
		return reason + ": tls: refused by the server"
	}
	return reason + ": " + collapseDigits(err.Error())
}

// tlsRefused reports whether the server refused the TLS session after the
// handshake: its verdict on the client certificate, which reaches the
// client as the server's alert or, when the client wrote first, as the
// connection the server closed.
func tlsRefused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error" ||
		errors.Is(err, nats.ErrTLS) && strings.Contains(err.Error(), "after TLS handshake")
}

// collapseDigits replaces each run of digits with one '#'.
func collapseDigits(s string) string {
	var b strings.Builder
	digits := false
	for _, r := range s {
		if r >= '0' && r <= '9' {
			if !digits {
				b.WriteByte('#')
			}
			digits = true
			continue
		}
		digits = false
		b.WriteRune(r)
	}
	return b.String()
}
