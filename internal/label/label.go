// Package label turns the reasons and names ferry reports into Prometheus
// label values of one style: short snake_case codes ("connection_refused",
// "bad_user_access_denied", "api_devices").
//
// The values come from fixed sets (the reason constants of each part, the
// OPC UA status names, the routes of the HTTP server): Code only spells
// them; it must never be given an error string, which would make a series
// per message.
package label

import "strings"

// maxLen bounds a code: a longer one is cut (status names are shorter).
const maxLen = 64

// Code returns reason as a snake_case code: CamelCase words are split
// ("BadUserAccessDenied" → "bad_user_access_denied"), letters are
// lowercased, every run of other characters becomes one underscore
// ("connection refused" → "connection_refused", "exception 0x02" →
// "exception_0x02"), and underscores at either end are dropped. The
// result matches ^[a-z0-9_]+$; an empty reason gives "unknown".
func Code(reason string) string {
	var b strings.Builder
	b.Grow(len(reason) + 4)
	under := false // an underscore is due before the next letter or digit
	rs := []rune(reason)
	for i, r := range rs {
		lower, upper, digit := r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9'
		if !lower && !upper && !digit {
			under = b.Len() > 0
			continue
		}
		if upper && b.Len() > 0 && i > 0 {
			prev := rs[i-1]
			prevLower := prev >= 'a' && prev <= 'z'
			// "URIInvalid": the I of Invalid starts a word.
			nextLower := i+1 < len(rs) && rs[i+1] >= 'a' && rs[i+1] <= 'z'
			prevUpper := prev >= 'A' && prev <= 'Z'
			if prevLower || (prevUpper && nextLower) {
				under = true
			}
		}
		if under {
			b.WriteByte('_')
			under = false
		}
		if upper {
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	s := b.String()
	if len(s) > maxLen {
		s = strings.TrimRight(s[:maxLen], "_")
	}
	if s == "" {
		return "unknown"
	}
	return s
}
