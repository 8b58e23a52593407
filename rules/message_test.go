package rules

import (
	"testing"
	"time"
)

func TestRoundDuration(t *testing.T) {
	for _, tt := range []struct {
		in   time.Duration
		want string
	}{
		{1234567 * time.Nanosecond, "1ms"},
		{10523 * time.Millisecond, "10.5s"},
		{59960 * time.Millisecond, "1m0s"},
		{123456 * time.Millisecond, "2m3s"},
		{3*time.Hour + 25*time.Minute + 40*time.Second, "3h26m0s"},
	} {
		if got := roundDuration(tt.in).String(); got != tt.want {
			t.Errorf("roundDuration(%v) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
