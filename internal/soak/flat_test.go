package soak

import (
	"strings"
	"testing"
	"time"
)

// TestParseSmapsRollup reads the lines of /proc/PID/smaps_rollup the
// series uses, in bytes.
func TestParseSmapsRollup(t *testing.T) {
	in := `55d0c8e00000-7ffd5a1f3000 ---p 00000000 00:00 0                          [rollup]
Rss:               38512 kB
Pss:               38001 kB
Pss_Anon:          17320 kB
Pss_File:          20681 kB
Pss_Shmem:             0 kB
Shared_Clean:       1024 kB
Anonymous:         17320 kB
Swap:                  0 kB
`
	rss, anon, shmem, err := parseSmapsRollup([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if rss != 38512*1024 || anon != 17320*1024 || shmem != 0 {
		t.Errorf("rss %v anon %v shmem %v, want %v %v 0", rss, anon, shmem, 38512*1024, 17320*1024)
	}
	if _, _, _, err := parseSmapsRollup([]byte("Pss: 1 kB\n")); err == nil {
		t.Error("no Rss and Anonymous lines: no error")
	}
}

// TestSeriesTable prints one row a sample, in MiB.
func TestSeriesTable(t *testing.T) {
	got := seriesTable([]memSample{{at: 2 * time.Minute, rss: 40 * mib, anon: 18.5 * mib, file: 21.5 * mib, heapInuse: 12.25 * mib, goroutines: 89, mapped: 30 * mib, load: 3.5}})
	if want := "| 2 | 40.0 | 18.5 | 21.5 | 12.2 | 89 | 30.0 | 3.5 |\n"; !strings.HasSuffix(got, want) {
		t.Errorf("table:\n%s\nwant its last row %q", got, want)
	}
}

// TestFlatVerdict: a series that fills up during its first third and then
// holds is flat; one that keeps growing (a leak of 3 MiB an hour), one
// that jumps out of the band, and one whose file-backed part exceeds the
// mapped files are not; a short run is not judged.
func TestFlatVerdict(t *testing.T) {
	series := func(dur time.Duration, rss func(min float64) float64, file float64) []memSample {
		var s []memSample
		for m := time.Duration(0); m <= dur; m += time.Minute {
			s = append(s, memSample{at: m, rss: rss(m.Minutes()) * mib, file: file * mib, mapped: 30 * mib})
		}
		return s
	}
	warm := func(min float64) float64 { // up 8 MiB in 20 minutes, then ±1 MiB
		if min < 20 {
			return 32 + min*0.4
		}
		return 40 + float64(int(min)%3-1)
	}
	for _, c := range []struct {
		name           string
		s              []memSample
		dur            time.Duration
		judged, flat   bool
		wantInVerdicts string
	}{
		{"flat after warm-up", series(90*time.Minute, warm, 20), 90 * time.Minute, true, true, "FLAT"},
		{"slow leak", series(90*time.Minute, func(m float64) float64 { return 34 + m*3.0/60 }, 20), 90 * time.Minute, true, false, "slope +3.00"},
		{"a jump", series(90*time.Minute, func(m float64) float64 {
			if m > 70 {
				return 46
			}
			return warm(m)
		}, 20), 90 * time.Minute, true, false, "NOT FLAT"},
		{"file-backed above the files", series(90*time.Minute, warm, 31), 90 * time.Minute, true, false, "in 61 samples"},
		{"short run", series(3*time.Minute, warm, 20), 3 * time.Minute, false, false, "not judged"},
		// A 30-minute run is judged from minute 15 (flatWarmMin), not
		// from its third: the dedupe keys fill for 10 minutes.
		{"30 minutes, filling until minute 14", series(30*time.Minute, func(m float64) float64 {
			if m < 14 {
				return 32 + m*0.65
			}
			return 41 + float64(int(m)%3-1)
		}, 20), 30 * time.Minute, true, true, "from minute 15 to 30"},
		{"30 minutes, a leak", series(30*time.Minute, func(m float64) float64 { return 34 + m*4.0/60 }, 20), 30 * time.Minute, true, false, "slope +4.00"},
	} {
		t.Run(c.name, func(t *testing.T) {
			judged, flat, why := flatVerdict(c.s, c.dur)
			if judged != c.judged || flat != c.flat || !strings.Contains(why, c.wantInVerdicts) {
				t.Errorf("judged %v flat %v (%s), want %v %v and %q", judged, flat, why, c.judged, c.flat, c.wantInVerdicts)
			}
		})
	}
}
