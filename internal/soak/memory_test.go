package soak

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The memory time series of the soak (issue 27): once a minute the ferry
// process's resident set split into anonymous memory (the Go heap, stacks,
// the runtime) and file-backed pages (the mapped binary and bbolt's
// mapped files), with the Go heap in use, the goroutines and the size of
// the files ferry maps, so that growth can be told apart: anonymous
// growth is the heap, file-backed growth is pages of the binary or of
// buffer.db touched for the first time, bounded by the files' sizes.

// memSample is one sample of the series.
type memSample struct {
	at         time.Duration // since the soak's start
	rss        float64       // bytes, Rss of /proc/PID/smaps_rollup
	anon       float64       // bytes, Anonymous
	file       float64       // bytes, rss - anon - shmem: pages of mapped files
	heapInuse  float64       // bytes, go_memstats_heap_inuse_bytes
	goroutines float64
	mapped     float64 // bytes: the size of the binary and the bbolt files
	load       float64 // the machine's 1-minute load average
}

func parseSmapsRollup(b []byte) (rss, anon, shmem float64, err error) {
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		kb, perr := strconv.ParseFloat(f[0], 64)
		if perr != nil {
			continue
		}
		switch name {
		case "Rss":
			rss, seen = kb*1024, seen+1
		case "Anonymous":
			anon, seen = kb*1024, seen+1
		case "Shmem", "Pss_Shmem":
			shmem = max(shmem, kb*1024)
		}
	}
	if seen != 2 {
		return 0, 0, 0, fmt.Errorf("smaps_rollup: no Rss or Anonymous line")
	}
	return rss, anon, shmem, nil
}

const mib = 1 << 20

// seriesTable prints the series, one row a sample.
func seriesTable(s []memSample) string {
	var b strings.Builder
	b.WriteString("| minute | RSS MiB | anon MiB | file MiB | Go heap in use MiB | goroutines | binary + bbolt files MiB | load |\n|---|---|---|---|---|---|---|---|\n")
	for _, m := range s {
		fmt.Fprintf(&b, "| %.0f | %.1f | %.1f | %.1f | %.1f | %.0f | %.1f | %.1f |\n",
			m.at.Minutes(), m.rss/mib, m.anon/mib, m.file/mib, m.heapInuse/mib, m.goroutines, m.mapped/mib, m.load)
	}
	return b.String()
}

// Flat, the soak's definition (README, "Soak"): after the warm-up — the
// first third of the run (30 minutes of a 90-minute run), and never less
// than flatWarmMin, which fills the bounded structures (the buffer's
// 10-minute dedupe_window of MQTT keys, the 5-minute retention of
// acknowledged records, the console's 5-minute sparklines, the heap to its
// GC goal) — every
// one-minute sample of RSS lies within ±flatBand of the median of those
// samples, RSS's least-squares slope over them is under flatSlope per
// hour, and the file-backed part never exceeds the size of the files
// ferry maps (the binary, buffer.db, history.db). A run shorter than
// flatMinRun is too short to judge.
const (
	flatBand   = 3 * mib
	flatSlope  = 2 * mib // per hour
	flatMinRun = 30 * time.Minute
	// flatWarmMin is the longest bounded window (dedupe_window's default
	// of 10 minutes: its map of keys grows until then) and 5 minutes for
	// the GC's goal to settle on the full live heap. A third of a
	// 30-minute run (10 minutes) ended before the dedupe keys were full,
	// and judged their filling as growth.
	flatWarmMin = 15 * time.Minute
)

// flatVerdict judges the series of a run of length dur: ok, and a line
// that says why.
func flatVerdict(s []memSample, dur time.Duration) (judged, ok bool, why string) {
	if dur < flatMinRun {
		return false, false, fmt.Sprintf("not judged: a run of %v is shorter than %v", dur, flatMinRun)
	}
	warm := max(dur/3, flatWarmMin)
	var w []memSample
	for _, m := range s {
		if m.at >= warm {
			w = append(w, m)
		}
	}
	if len(w) < 10 {
		return false, false, fmt.Sprintf("not judged: %d samples after the warm-up (%v)", len(w), warm)
	}
	rss := make([]float64, len(w))
	for i, m := range w {
		rss[i] = m.rss
	}
	sorted := append([]float64(nil), rss...)
	sort.Float64s(sorted)
	med := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		med = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
	}
	dev := math.Max(sorted[len(sorted)-1]-med, med-sorted[0])
	slope := slopePerHour(w)
	fileOver := 0
	for _, m := range w {
		if m.file > m.mapped {
			fileOver++
		}
	}
	ok = dev <= flatBand && slope < flatSlope && fileOver == 0
	verdict := "FLAT"
	if !ok {
		verdict = "NOT FLAT"
	}
	why = fmt.Sprintf("%s: from minute %.0f to %.0f (%d samples) RSS %.1f–%.1f MiB, median %.1f, within ±%.1f MiB (bound ±%.0f), slope %+.2f MiB/h (bound %.0f); file-backed above the mapped files' size in %d samples",
		verdict, w[0].at.Minutes(), w[len(w)-1].at.Minutes(), len(w), sorted[0]/mib, sorted[len(sorted)-1]/mib, med/mib, dev/mib, float64(flatBand)/mib, slope/mib, float64(flatSlope)/mib, fileOver)
	return true, ok, why
}

// slopePerHour is the least-squares slope of RSS over time, bytes per hour.
func slopePerHour(w []memSample) float64 {
	var sx, sy, sxx, sxy float64
	n := float64(len(w))
	for _, m := range w {
		x := m.at.Hours()
		sx += x
		sy += m.rss
		sxx += x * x
		sxy += x * m.rss
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}
