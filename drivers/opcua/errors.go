package opcua

import (
	"errors"
	"fmt"

	"github.com/gopcua/opcua/ua"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/devstat"
)

// ErrInsecure is returned when a server offers only security policy None and allow_insecure is off.
var ErrInsecure = errors.New("opcua: security policy None refused")

// ErrNoEndpoint is returned when a server has no endpoint with the configured policy and mode.
var ErrNoEndpoint = errors.New("opcua: no matching endpoint")

// errOwnCert and errUserCert mark failures to load or create ferry's
// application certificate and the configured user certificate.
var (
	errOwnCert  = errors.New("application certificate")
	errUserCert = errors.New("user certificate")
)

// errLost is returned when the client reports its connection gone.
var errLost = errors.New("connection lost")

// reasonOf classifies an error into the reason of the Bad samples and of
// the session error counter: an OPC UA status name (BadUserAccessDenied,
// BadCertificateUntrusted, …) or one of devstat's reasons (timeout,
// connection refused, disconnected, …).
func reasonOf(err error) string {
	var ce *CertificateError
	var sc ua.StatusCode
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ce):
		return StatusName(ce.Status)
	case errors.Is(err, ErrInsecure), errors.Is(err, ErrNoEndpoint):
		return "BadSecurityPolicyRejected"
	case errors.Is(err, errLost):
		return ferry.ReasonDisconnected
	case errors.Is(err, ErrMalformed):
		return "malformed message"
	case errors.Is(err, errOwnCert):
		return "application certificate"
	case errors.Is(err, errUserCert):
		return "user certificate"
	case errors.As(err, &sc):
		switch sc {
		case ua.StatusBadTimeout, ua.StatusBadRequestTimeout:
			return ferry.ReasonTimeout
		case ua.StatusBadServerNotConnected, ua.StatusBadNotConnected, ua.StatusBadConnectionClosed,
			ua.StatusBadSecureChannelClosed, ua.StatusBadSessionClosed, ua.StatusBadSessionIDInvalid,
			ua.StatusBadSecureChannelIDInvalid, ua.StatusBadCommunicationError:
			return ferry.ReasonDisconnected
		}
		return StatusName(sc)
	}
	return devstat.Reason(err)
}

// transport reports whether reason is about the network or the session,
// not about security, credentials or configuration.
func transport(reason string) bool {
	switch reason {
	case ferry.ReasonTimeout, ferry.ReasonConnRefused, ferry.ReasonDisconnected, "unreachable", "dns", "error":
		return true
	}
	return false
}

// nodeProblem reports whether a Bad or Uncertain reason says that the
// point's node or its configuration is wrong (logged once), rather than
// that the value is currently of poor quality (not logged).
func nodeProblem(reason string) bool {
	switch reason {
	case "BadNodeIdUnknown", "BadNodeIdInvalid", "BadAttributeIdInvalid", "BadUserAccessDenied",
		"BadNotReadable", "BadNotSupported", "BadIndexRangeInvalid", "BadIndexRangeNoData",
		"BadDataTypeIdUnknown", "BadNodeClassInvalid", "BadFilterNotAllowed",
		"BadMonitoredItemFilterUnsupported", "BadMonitoredItemFilterInvalid", "BadDeadbandFilterInvalid",
		"BadTooManyMonitoredItems", "BadTooManyOperations", "BadSecurityModeInsufficient",
		reasonArray, reasonIndexRange, reasonNamespaceUnknown:
		return true
	}
	return len(reason) > len(reasonUnsupportedType) && reason[:len(reasonUnsupportedType)] == reasonUnsupportedType
}

// explainConnect wraps an error of connect or session activation with
// what the user can do about it.
func explainConnect(err error, c *Config, ownCert string) error {
	var sc ua.StatusCode
	if !errors.As(err, &sc) {
		return err
	}
	switch sc {
	case ua.StatusBadUserAccessDenied, ua.StatusBadIdentityTokenInvalid, ua.StatusBadIdentityTokenRejected:
		who := "the " + c.Auth.Kind() + " login"
		if c.Auth.Kind() == "username" {
			who = fmt.Sprintf("user %q", c.Auth.Username)
		}
		return fmt.Errorf("server refused %s (%s): check the credentials and the user's rights on the server: %w", who, StatusName(sc), err)
	case ua.StatusBadSecurityChecksFailed, ua.StatusBadCertificateUntrusted, ua.StatusBadCertificateInvalid,
		ua.StatusBadCertificateUseNotAllowed, ua.StatusBadCertificateURIInvalid, ua.StatusBadCertificateHostNameInvalid:
		return fmt.Errorf("server refused ferry's certificate (%s): the server must trust %s "+
			"(copy it into the server's trusted certificates, or accept it in its rejected list): %w", StatusName(sc), ownCert, err)
	case ua.StatusBadSecurityPolicyRejected, ua.StatusBadSecurityModeRejected:
		return fmt.Errorf("server refused security policy %s / mode %s (%s): %w", policyShort(c.SecurityPolicy), c.securityMode(), StatusName(sc), err)
	}
	return err
}

// requestLevel reports whether a service fault concerns only the request
// (too big, too many operations), so that the session is still usable.
func requestLevel(err error) bool {
	var sc ua.StatusCode
	if !errors.As(err, &sc) {
		return false
	}
	switch sc {
	case ua.StatusBadTooManyOperations, ua.StatusBadRequestTooLarge, ua.StatusBadResponseTooLarge,
		ua.StatusBadEncodingLimitsExceeded, ua.StatusBadTooManyMonitoredItems:
		return true
	}
	return false
}

func policyShort(p string) string {
	if p == "" {
		return "(strongest offered)"
	}
	return p
}

// reasonedError carries the reason reasonOf found to devstat, so that
// ferry_device_errors_total counts OPC UA status names, not "error".
type reasonedError struct {
	err    error
	reason string
}

func (e reasonedError) Error() string  { return e.err.Error() }
func (e reasonedError) Unwrap() error  { return e.err }
func (e reasonedError) Reason() string { return e.reason }
