package rules

import (
	"math"
	"time"

	"github.com/ferry-edge/ferry"
)

// rateSlots bounds the history of a rate rule. A sample is kept only when
// it is at least window/rateSpacing after the last one kept, so at most
// rateSpacing+1 samples span a window: memory is fixed and adding does not
// allocate, however fast the point is polled.
const (
	rateSpacing = 64
	rateSlots   = rateSpacing + 8
)

// rateWindow holds thinned (time, value) history for a rate rule.
type rateWindow struct {
	t    [rateSlots]int64
	v    [rateSlots]float64
	head int // index of the oldest
	n    int
}

// add records v at now and returns the rate of change per second over
// the window: from the oldest kept sample within the window to v. ok is
// false until the history spans at least half the window, so that a rate
// is never judged on two samples a second apart.
func (w *rateWindow) add(now time.Time, v float64, window time.Duration) (rate float64, ok bool) {
	tn := now.UnixNano()
	win := int64(window)
	if w.n > 0 && tn < w.t[(w.head+w.n-1)%rateSlots] {
		w.n = 0 // the clock went back: start over
	}
	for w.n > 0 && tn-w.t[w.head] > win {
		w.head = (w.head + 1) % rateSlots
		w.n--
	}
	if w.n == 0 || tn-w.t[(w.head+w.n-1)%rateSlots] >= win/rateSpacing {
		if w.n == rateSlots {
			w.head = (w.head + 1) % rateSlots
			w.n--
		}
		i := (w.head + w.n) % rateSlots
		w.t[i], w.v[i] = tn, v
		w.n++
	}
	span := tn - w.t[w.head]
	if span <= 0 || span < win/2 {
		return 0, false
	}
	return (v - w.v[w.head]) / (float64(span) / float64(time.Second)), true
}

// zBuckets is how many buckets a z-score window is cut into. The window
// slides a bucket at a time, so its length varies by 1/zBuckets.
const zBuckets = 60

// zscore keeps the mean and standard deviation of a point over a rolling
// time window, in zBuckets buckets of count, sum and sum of squares. The
// sums are of the value minus a reference (the first value seen), which
// keeps them small and the variance accurate for large values with small
// noise. Memory is fixed; adding does not allocate.
type zscore struct {
	width   int64 // bucket width in ns
	cur     int64 // absolute index of the newest bucket
	n, s, q [zBuckets]float64
	tn      float64 // totals over all buckets
	ts, tq  float64
	ref     float64
	has     bool
	first   time.Time // start of the current history (warm-up)
}

func newZscore(window time.Duration) *zscore {
	w := int64(window) / zBuckets
	if w <= 0 {
		w = 1
	}
	return &zscore{width: w}
}

// add scores x against the window before it, then adds it. ok is false
// during warm-up.
func (z *zscore) add(now time.Time, x float64, a *Anomaly) (score float64, ok bool) {
	idx := now.UnixNano() / z.width
	if !z.has || idx-z.cur >= zBuckets {
		*z = zscore{width: z.width, cur: idx, ref: x, has: true, first: now}
	} else if idx > z.cur {
		for i := z.cur + 1; i <= idx; i++ {
			b := i % zBuckets
			z.n[b], z.s[b], z.q[b] = 0, 0, 0
		}
		z.cur = idx
		// Recompute the totals from the buckets: no drift from
		// subtracting.
		z.tn, z.ts, z.tq = 0, 0, 0
		for b := range zBuckets {
			z.tn += z.n[b]
			z.ts += z.s[b]
			z.tq += z.q[b]
		}
	}
	if z.tn >= float64(a.MinSamples) && now.Sub(z.first) >= a.warmup() {
		mean := z.ts / z.tn
		variance := (z.tq - z.ts*mean) / (z.tn - 1)
		score, ok = zOf(x-z.ref-mean, variance, a.MinStddev), true
	}
	d := x - z.ref
	b := z.cur % zBuckets
	z.n[b]++
	z.s[b] += d
	z.q[b] += d * d
	z.tn++
	z.ts += d
	z.tq += d * d
	return score, ok
}

// zOf returns dev in standard deviations. With no spread at all, any
// deviation is infinitely unusual; MinStddev sets a floor.
func zOf(dev, variance, minStd float64) float64 {
	std := math.Sqrt(math.Max(variance, 0))
	if std < minStd {
		std = minStd
	}
	if std == 0 {
		switch {
		case dev > 0:
			return math.Inf(1)
		case dev < 0:
			return math.Inf(-1)
		}
		return 0
	}
	return dev / std
}

// ewma is an EWMA control chart with a slowly adapting baseline. The
// baseline mean and variance follow the point with time constant Window;
// the control statistic z = λx + (1-λ)z follows it fast. The score is
// (z - mean) in units of the statistic's own standard deviation,
// σ·sqrt(λ/(2-λ)), so Threshold is the chart's L (3 is classic).
type ewma struct {
	mean, vari float64
	z          float64
	n          int
	first      time.Time
	last       time.Time
}

func (e *ewma) add(now time.Time, x float64, a *Anomaly) (score float64, ok bool) {
	if e.n == 0 || now.Sub(e.last) > 5*a.Window || now.Before(e.last) {
		*e = ewma{mean: x, z: x, n: 1, first: now, last: now}
		return 0, false
	}
	lam := a.Lambda
	z := lam*x + (1-lam)*e.z
	if e.n >= a.MinSamples && now.Sub(e.first) >= a.warmup() {
		sd := math.Sqrt(math.Max(e.vari, 0))
		if sd < a.MinStddev {
			sd = a.MinStddev
		}
		score, ok = zOf(z-e.mean, sd*sd*lam/(2-lam), 0), true
	}
	alpha := 1 - math.Exp(-float64(now.Sub(e.last))/float64(a.Window))
	d := x - e.mean
	e.mean += alpha * d
	e.vari = (1 - alpha) * (e.vari + alpha*d*d)
	e.z = z
	e.n++
	e.last = now
	return score, ok
}

// flatState follows a flatline rule's point: the value it sits at and
// since when.
type flatState struct {
	ref   ferry.Value
	has   bool
	since time.Time
	moved bool // the value moved since the alert was raised
}

// observe records a Good value: a move beyond eps (or any change of a
// non-number) restarts the flat period.
func (f *flatState) observe(v ferry.Value, now time.Time, eps float64) {
	if !f.has {
		f.ref, f.has, f.since = v, true, now
		return
	}
	x, ok1 := v.Number()
	y, ok2 := f.ref.Number()
	changed := !v.Equal(f.ref)
	if ok1 && ok2 {
		changed = math.Abs(x-y) > eps
	}
	if changed {
		f.ref, f.since, f.moved = v, now, true
	}
}
