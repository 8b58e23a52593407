package setting

import (
	"fmt"
	"strings"
)

// DidYouMean returns ` (did you mean "x"?)` for the word of words nearest
// to w (ignoring case), when it is near enough to be a typo, else "". The
// configuration loader (unknown keys) and the command line (unknown
// commands and flags) share it.
func DidYouMean(w string, words []string) string {
	best, bestD := "", 0
	for _, c := range words {
		d := EditDistance(strings.ToLower(w), strings.ToLower(c))
		if best == "" || d < bestD {
			best, bestD = c, d
		}
	}
	if best == "" || bestD > max(2, len(w)/3) {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// EditDistance is the Levenshtein distance of a and b; strings over 64
// bytes are never near (99), which bounds the work a hostile input costs.
func EditDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
