package web

import (
	"strings"

	metriclabel "github.com/ferry-edge/ferry/internal/label"
)

// routeName is the handler label of a route pattern in
// ferry_http_requests_total: its path without the method, wildcards and
// slashes, as a snake_case name ("GET /api/alerts/history" →
// "api_alerts_history", "GET /{$}" → "index", "/debug/pprof/" →
// "debug_pprof"). One style for every route, and no slash in a label.
func routeName(pattern string) string {
	if _, path, ok := strings.Cut(pattern, " "); ok {
		pattern = path
	}
	var parts []string
	for _, p := range strings.Split(pattern, "/") {
		if p == "" || strings.HasPrefix(p, "{") {
			continue // "/{$}", "/assets/{file}", a trailing slash
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return "index"
	}
	return metriclabel.Code(strings.Join(parts, "_"))
}
