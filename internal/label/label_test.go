package label

import (
	"regexp"
	"strings"
	"testing"
)

func TestCode(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"timeout", "timeout"},
		{"connection refused", "connection_refused"},
		{"BadUserAccessDenied", "bad_user_access_denied"},
		{"BadCertificateUriInvalid", "bad_certificate_uri_invalid"},
		{"BadCertificateURIInvalid", "bad_certificate_uri_invalid"},
		{"BadNodeIdUnknown", "bad_node_id_unknown"},
		{"exception 0x02", "exception_0x02"},
		{"0x80AB0000", "0x80ab0000"},
		{"bad frame", "bad_frame"},
		{"read back", "read_back"},
		{"queue_full", "queue_full"},
		{"GET /api/alerts/history", "get_api_alerts_history"},
		{"  --weird--  ", "weird"},
		{"unsupported type: Foo", "unsupported_type_foo"},
		{"", "unknown"},
		{"é", "unknown"},
	} {
		if got := Code(tt.in); got != tt.want {
			t.Errorf("Code(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := Code(strings.Repeat("Ab", 100)); len(got) > maxLen {
		t.Errorf("Code of a long reason is %d bytes: %q", len(got), got)
	}
}

// FuzzCode: whatever the input, the code is short and of the one style.
func FuzzCode(f *testing.F) {
	for _, s := range []string{"BadUserAccessDenied", "connection refused", "", "__", "A_B", "x\x00y"} {
		f.Add(s)
	}
	style := regexp.MustCompile(`^[a-z0-9]+(_[a-z0-9]+)*$`)
	f.Fuzz(func(t *testing.T, s string) {
		c := Code(s)
		if len(c) > maxLen || !style.MatchString(c) {
			t.Fatalf("Code(%q) = %q", s, c)
		}
	})
}
