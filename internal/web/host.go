package web

import (
	"net"
	"net/http"
	"strings"
)

// hostAllowList is the Host header check that stops DNS rebinding: a web
// page the operator visits may point its own name at 127.0.0.1 and then
// talk to the console with the operator's browser. The browser sends the
// attacker's name as Host, so a request whose Host is neither an address,
// a loopback name, the configured listen host nor one of
// http.allowed_hosts is refused with 421 Misdirected Request before any
// handler (authentication included) runs.
//
// IP literals are always allowed: a rebinding page's origin is a name,
// never an address, so a Host that is an address cannot come from one.
type hostAllowList struct {
	names map[string]struct{} // lower case, no port, no trailing dot
}

// newHostAllowList returns the allow-list of the listen address and the
// extra names.
func newHostAllowList(listen string, extra []string) *hostAllowList {
	a := &hostAllowList{names: map[string]struct{}{"localhost": {}}}
	if host, _, err := net.SplitHostPort(listen); err == nil && host != "" {
		a.add(host)
	}
	for _, n := range extra {
		a.add(n)
	}
	return a
}

func (a *hostAllowList) add(name string) {
	if n := canonicalHost(name); n != "" {
		a.names[n] = struct{}{}
	}
}

// allowed reports whether a request's Host (r.Host: "name", "name:port",
// "[::1]:port") may be served. An empty Host (an HTTP/1.0 request without
// one) comes from no browser and is allowed.
func (a *hostAllowList) allowed(hostport string) bool {
	if hostport == "" {
		return true
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	} else if strings.Contains(hostport, ":") && !strings.HasPrefix(hostport, "[") && net.ParseIP(hostport) == nil {
		// "name:" or "a:b:c" that is not an address: not a host we know.
		return false
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if net.ParseIP(host) != nil {
		return true
	}
	n := canonicalHost(host)
	if n == "" {
		return false
	}
	if _, ok := a.names[n]; ok {
		return true
	}
	// RFC 6761: every name under .localhost is loopback.
	return strings.HasSuffix(n, ".localhost")
}

// canonicalHost lower-cases name and drops one trailing dot ("Example.COM."
// is "example.com"); "" when name is empty or not a plausible host name.
func canonicalHost(name string) string {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	if n == "" || strings.ContainsAny(n, " /\\@?#[]:%\t\r\n") {
		return ""
	}
	return n
}

// serve answers 421 to a request whose Host is not allowed and reports
// whether it was allowed.
func (a *hostAllowList) serve(w http.ResponseWriter, r *http.Request) bool {
	if a.allowed(r.Host) {
		return true
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, "misdirected request: this gateway does not answer to that Host (add it to http.allowed_hosts)", http.StatusMisdirectedRequest)
	return false
}
