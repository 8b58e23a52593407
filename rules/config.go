package rules

import (
	"math"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/setting"
)

// Rule is one entry of the `rules:` list. A rule checks exactly one thing,
// its kind: a `when` expression, a `rate`, `stale`, `quality`, `flatline`
// or `anomaly`. Every kind may add an on-delay (`for`) and an off-delay
// (`clear_for`).
type Rule struct {
	Name        string `yaml:"name" doc:"unique rule name: letters, digits, _ and -; part of alert ids and MQTT topics"`
	Description string `yaml:"description" doc:"free text for people; not used by the engine"`

	// Point is the device.point the rule watches. It is required for
	// rate, stale, quality, flatline and anomaly; for a when rule it is
	// optional and names the point the alert is about.
	Point string `yaml:"point" doc:"device.point the rule watches (required except for when rules)"`

	When     string        `yaml:"when" doc:"raise when this expression over device.point values is true"`
	Clear    string        `yaml:"clear" doc:"clear when this expression is true (default: when 'when' is false)"`
	Rate     *Rate         `yaml:"rate" doc:"raise when the point changes faster than a limit"`
	Stale    time.Duration `yaml:"stale" doc:"raise when the point has had no Good sample for this long"`
	Quality  time.Duration `yaml:"quality" doc:"raise when the point has been Bad or Uncertain for this long"`
	Flatline *Flatline     `yaml:"flatline" doc:"raise when the point's value has not moved for a duration"`
	Anomaly  *Anomaly      `yaml:"anomaly" doc:"raise when the point leaves its own statistical normal"`

	For      time.Duration `yaml:"for" doc:"on-delay: the condition must hold this long before the alert is raised"`
	ClearFor time.Duration `yaml:"clear_for" doc:"off-delay: the clear condition must hold this long before the alert clears"`

	Severity string            `yaml:"severity" enum:"info,warning,critical"`
	Message  string            `yaml:"message" doc:"text/template for the alert message: {{.Value}}, {{.Point}}, {{.Rule}}, …"`
	Labels   map[string]string `yaml:"labels" doc:"extra key/value pairs carried by every alert of the rule"`
}

// Rate is the `rate:` block: the change of a point per unit of time,
// measured over a window, against a limit.
type Rate struct {
	Window time.Duration `yaml:"window" doc:"the rate is the change over this window"`
	Per    string        `yaml:"per" enum:"second,minute,hour"`
	Above  *float64      `yaml:"above" doc:"raise when the rate is above this (units per 'per')"`
	Below  *float64      `yaml:"below" doc:"raise when the rate is below this (e.g. a negative number for a fall)"`
}

// SetDefaults sets the defaults applied before decoding.
func (r *Rate) SetDefaults() { r.Window, r.Per = time.Minute, "minute" }

// Flatline is the `flatline:` block: a value that does not move by more
// than Epsilon for Duration is stuck.
type Flatline struct {
	Duration time.Duration `yaml:"duration" doc:"how long the value must stay within epsilon"`
	Epsilon  float64       `yaml:"epsilon" doc:"changes up to this size do not count as movement (0: any change counts)"`
}

// Anomaly is the `anomaly:` block: a statistical detector that learns the
// point's normal behaviour and raises when a value leaves it.
type Anomaly struct {
	Method string `yaml:"method" enum:"zscore,ewma"`
	// Window is the rolling window (zscore) or the time constant of the
	// baseline (ewma).
	Window    time.Duration `yaml:"window" doc:"zscore: rolling window of mean and stddev; ewma: time constant of the baseline"`
	Threshold float64       `yaml:"threshold" doc:"raise when the score exceeds this many standard deviations"`
	// ClearThreshold is the score below which an active alert clears;
	// 0 means 80% of Threshold.
	ClearThreshold float64       `yaml:"clear_threshold" doc:"clear when the score falls to this (default 80% of threshold)"`
	Warmup         time.Duration `yaml:"warmup" doc:"learn this long before judging (default: window)"`
	MinSamples     int           `yaml:"min_samples" doc:"and see at least this many samples"`
	MinStddev      float64       `yaml:"min_stddev" doc:"floor for the standard deviation, so a quiet signal's tiny noise is not an anomaly"`
	Lambda         float64       `yaml:"lambda" doc:"ewma only: smoothing of the control statistic, 0 < lambda <= 1"`
	Direction      string        `yaml:"direction" enum:"both,above,below"`
}

// SetDefaults sets the defaults applied before decoding.
func (a *Anomaly) SetDefaults() {
	a.Method = "zscore"
	a.Window = 10 * time.Minute
	a.Threshold = 4
	a.MinSamples = 30
	a.Lambda = 0.2
	a.Direction = "both"
}

// SetDefaults sets the defaults applied before decoding.
func (r *Rule) SetDefaults() { r.Severity = "warning" }

// kind is what a rule checks.
type kind uint8

const (
	kindNone kind = iota
	kindWhen
	kindRate
	kindStale
	kindQuality
	kindFlatline
	kindAnomaly
)

var kindNames = [...]string{"", "when", "rate", "stale", "quality", "flatline", "anomaly"}

func (k kind) String() string { return kindNames[k] }

// kinds returns the kinds a rule sets, in the order of kindNames.
func (r *Rule) kinds() []kind {
	var ks []kind
	if r.When != "" {
		ks = append(ks, kindWhen)
	}
	if r.Rate != nil {
		ks = append(ks, kindRate)
	}
	if r.Stale != 0 {
		ks = append(ks, kindStale)
	}
	if r.Quality != 0 {
		ks = append(ks, kindQuality)
	}
	if r.Flatline != nil {
		ks = append(ks, kindFlatline)
	}
	if r.Anomaly != nil {
		ks = append(ks, kindAnomaly)
	}
	return ks
}

var (
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	labelRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Validate checks every rule against the configured points; known reports
// whether "device.point" exists (nil accepts every point). Every
// expression and message template is compiled, so a syntax error or an
// unknown point is reported here, at load time. Paths are relative to the
// rules list ("[3].when").
func Validate(rules []Rule, known map[string]bool) error {
	var errs setting.Errors
	seen := map[string]int{}
	for i := range rules {
		r := &rules[i]
		p := setting.Index("", i)
		switch {
		case r.Name == "":
			errs.Add(p+".name", "is required")
		case !nameRE.MatchString(r.Name):
			errs.Add(p+".name", "%q may hold only letters, digits, _ and -", r.Name)
		default:
			if j, dup := seen[r.Name]; dup {
				errs.Add(p+".name", "duplicate rule name %q (first at rules[%d])", r.Name, j)
			} else {
				seen[r.Name] = i
			}
		}
		validateRule(&errs, p, r, known)
	}
	return errs.Err()
}

// validateRule checks one rule, compiling what it can, and records every
// problem under path p.
func validateRule(errs *setting.Errors, p string, r *Rule, known map[string]bool) {
	ks := r.kinds()
	switch len(ks) {
	case 0:
		if r.Clear != "" {
			errs.Add(p+".clear", "needs when")
		} else {
			errs.Add(p, "needs one of when, rate, stale, quality, flatline, anomaly")
		}
	case 1:
	default:
		names := make([]string, len(ks))
		for i, k := range ks {
			names[i] = k.String()
		}
		errs.Add(p, "sets %s; a rule checks one of when, rate, stale, quality, flatline, anomaly", strings.Join(names, " and "))
	}
	k := kindNone
	if len(ks) > 0 {
		k = ks[0]
	}
	if r.Point == "" {
		if k != kindWhen && k != kindNone {
			errs.Add(p+".point", "is required for a %s rule (device.point)", k)
		}
	} else if _, _, ok := splitRef(r.Point); !ok {
		errs.Add(p+".point", "%q is not a device.point reference", r.Point)
	} else if known != nil && !known[r.Point] {
		hint := suggestPoint(r.Point, known)
		if hint == "" {
			hint = " (want device.point)"
		}
		errs.Add(p+".point", "unknown point %q%s", r.Point, hint)
	}
	if r.Clear != "" && r.When == "" && len(ks) > 0 {
		errs.Add(p+".clear", "needs when (clear belongs to a when rule)")
	}
	if r.When != "" {
		if _, err := parseExpr(r.When, known); err != nil {
			errs.Add(p+".when", "%v", err)
		}
	}
	if r.Clear != "" && r.When != "" {
		if _, err := parseExpr(r.Clear, known); err != nil {
			errs.Add(p+".clear", "%v", err)
		}
	}
	if r.For < 0 {
		errs.Add(p+".for", "%v is negative", r.For)
	}
	if r.ClearFor < 0 {
		errs.Add(p+".clear_for", "%v is negative", r.ClearFor)
	}
	if r.Stale < 0 {
		errs.Add(p+".stale", "%v is negative", r.Stale)
	}
	if r.Quality < 0 {
		errs.Add(p+".quality", "%v is negative", r.Quality)
	}
	if err := setting.OneOf(r.Severity, "info", "warning", "critical"); err != nil {
		errs.Add(p+".severity", "%v", err)
	}
	if r.Message != "" {
		if _, err := parseMessage(r.Name, r.Message); err != nil {
			errs.Add(p+".message", "%v", err)
		}
	}
	keys := make([]string, 0, len(r.Labels))
	for key := range r.Labels {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if !labelRE.MatchString(key) {
			errs.Add(p+".labels."+key, "label name %q may hold only letters, digits and _ (not first)", key)
		}
	}
	if r.Rate != nil {
		validateRate(errs, p+".rate", r.Rate)
	}
	if r.Flatline != nil {
		f := r.Flatline
		if f.Duration <= 0 {
			errs.Add(p+".flatline.duration", "is required and must be positive (e.g. 10m)")
		}
		if f.Epsilon < 0 || math.IsInf(f.Epsilon, 0) {
			errs.Add(p+".flatline.epsilon", "%v must be zero or positive", f.Epsilon)
		}
	}
	if r.Anomaly != nil {
		validateAnomaly(errs, p+".anomaly", r.Anomaly)
	}
}

func validateRate(errs *setting.Errors, p string, r *Rate) {
	if r.Window <= 0 {
		errs.Add(p+".window", "must be positive (e.g. 1m)")
	}
	if err := setting.OneOf(r.Per, "second", "minute", "hour"); err != nil {
		errs.Add(p+".per", "%v", err)
	}
	if r.Above == nil && r.Below == nil {
		errs.Add(p, "needs above, below or both")
	}
	if r.Above != nil && r.Below != nil && *r.Below >= *r.Above {
		errs.Add(p+".below", "%v must be less than above (%v)", *r.Below, *r.Above)
	}
}

func validateAnomaly(errs *setting.Errors, p string, a *Anomaly) {
	if err := setting.OneOf(a.Method, "zscore", "ewma"); err != nil {
		errs.Add(p+".method", "%v", err)
	}
	if a.Window <= 0 {
		errs.Add(p+".window", "must be positive (e.g. 10m)")
	} else if a.Method == "zscore" && a.Window < zBuckets*time.Millisecond {
		errs.Add(p+".window", "%v is shorter than %v", a.Window, zBuckets*time.Millisecond)
	}
	if !(a.Threshold > 0) || math.IsInf(a.Threshold, 0) {
		errs.Add(p+".threshold", "%v must be positive", a.Threshold)
	}
	if a.ClearThreshold < 0 || (a.ClearThreshold > a.Threshold && a.Threshold > 0) {
		errs.Add(p+".clear_threshold", "%v must be between 0 and threshold (%v)", a.ClearThreshold, a.Threshold)
	}
	if a.Warmup < 0 {
		errs.Add(p+".warmup", "%v is negative", a.Warmup)
	}
	if a.MinSamples < 2 {
		errs.Add(p+".min_samples", "%d must be at least 2", a.MinSamples)
	}
	if a.MinStddev < 0 || math.IsInf(a.MinStddev, 0) {
		errs.Add(p+".min_stddev", "%v must be zero or positive", a.MinStddev)
	}
	if a.Method == "ewma" && !(a.Lambda > 0 && a.Lambda <= 1) {
		errs.Add(p+".lambda", "%v must be in (0, 1]", a.Lambda)
	}
	if err := setting.OneOf(a.Direction, "both", "above", "below"); err != nil {
		errs.Add(p+".direction", "%v", err)
	}
}

// splitRef splits "device.point" at its first dot.
func splitRef(ref string) (dev, pt string, ok bool) {
	dev, pt, ok = strings.Cut(ref, ".")
	return dev, pt, ok && dev != "" && pt != ""
}

// severity parses the validated severity.
func (r *Rule) severity() ferry.Severity {
	s, err := ferry.ParseSeverity(r.Severity)
	if err != nil {
		return ferry.SeverityWarning
	}
	return s
}

// perSeconds returns the length of a rate's unit.
func (r *Rate) perSeconds() float64 {
	switch r.Per {
	case "second":
		return 1
	case "hour":
		return 3600
	}
	return 60
}

// clearThreshold returns the effective clear threshold.
func (a *Anomaly) clearThreshold() float64 {
	if a.ClearThreshold > 0 {
		return a.ClearThreshold
	}
	return 0.8 * a.Threshold
}

// warmup returns the effective warm-up.
func (a *Anomaly) warmup() time.Duration {
	if a.Warmup > 0 {
		return a.Warmup
	}
	return a.Window
}

// suggestPoint returns ` (did you mean "x"?)` for the configured point
// nearest to ref, or "" when none is near.
func suggestPoint(ref string, known map[string]bool) string {
	names := make([]string, 0, len(known))
	for k := range known {
		names = append(names, k)
	}
	sort.Strings(names) // ties go to the first name, the same every time
	return setting.DidYouMean(ref, names)
}
