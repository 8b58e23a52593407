package setting

import "strings"

// redacted stands for the user information taken out of a URL.
const redactedUser = "REDACTED"

// URLUserinfo reports whether raw, meant as a URL, carries user
// information ("tcp://user:password@host"). It does not rely on raw
// parsing: a URL that url.Parse refuses may still hold a password.
func URLUserinfo(raw string) bool {
	_, at := userinfoSpan(raw)
	return at >= 0
}

// RedactURL returns raw with its user information, if any, replaced by
// REDACTED ("tcp://REDACTED@host:1883"), for error messages and logs: a
// URL a configuration refuses is printed without the password it may
// hold, whether it parses or not.
func RedactURL(raw string) string {
	start, at := userinfoSpan(raw)
	if at < 0 {
		return raw
	}
	return raw[:start] + redactedUser + raw[at:]
}

// userinfoSpan returns where the user information of raw starts and the
// index of the '@' that ends it; at is -1 when there is none. The
// authority starts after "scheme:" and "//", each when present, and ends at the first '/', '?' or '#'; its last '@' ends the
// user information.
func userinfoSpan(raw string) (start, at int) {
	if i := strings.IndexByte(raw, ':'); i >= 0 && !strings.ContainsAny(raw[:i], "/?#@") {
		start = i + 1 // after "scheme:"
	}
	if strings.HasPrefix(raw[start:], "//") {
		start += 2
	}
	rest := raw[start:]
	if end := strings.IndexAny(rest, "/?#"); end >= 0 {
		rest = rest[:end]
	}
	i := strings.LastIndexByte(rest, '@')
	if i < 0 {
		return start, -1
	}
	return start, start + i
}

// CheckURLUserinfo adds to errs, at path, that the URL raw may not carry
// user information, naming where the credentials go instead (fields, e.g.
// "username and password (or password_file)"). It reports whether raw
// carries none.
func CheckURLUserinfo(errs *Errors, path, raw, fields string) bool {
	if !URLUserinfo(raw) {
		return true
	}
	errs.Add(path, "%q carries a user name or password: credentials in a URL end up in logs and status pages; put them in %s", RedactURL(raw), fields)
	return false
}
