package web

import "testing"

func TestRouteName(t *testing.T) {
	for _, tt := range []struct{ pattern, want string }{
		{"GET /{$}", "index"},
		{"GET /healthz", "healthz"},
		{"GET /assets/{file}", "assets"},
		{"GET /api/alerts/history", "api_alerts_history"},
		{"/api/alerts", "api_alerts"},
		{"/api/alerts/", "api_alerts"},
		{commandsPath, "api_commands"},
		{"/debug/pprof/", "debug_pprof"},
		{"/debug/pprof/profile", "debug_pprof_profile"},
	} {
		if got := routeName(tt.pattern); got != tt.want {
			t.Errorf("routeName(%q) = %q, want %q", tt.pattern, got, tt.want)
		}
	}
}
