package reduce

import (
	"path"
	"time"

	"github.com/ferry-edge/ferry/internal/setting"
)

// Config is the `reduce:` section. With neither defaults nor points every
// sample goes upstream as it was read.
type Config struct {
	// Defaults, when set, apply report-by-exception to every point that no
	// entry of Points matches. Without it such points are not reduced.
	Defaults *Policy `yaml:"defaults" doc:"report-by-exception for every point no entry of points matches; leave out to send those points unreduced"`
	// Points are tried in order; the first whose match fits the point wins.
	Points []Point `yaml:"points" doc:"per-point settings, tried in order: the first entry whose match fits device.point wins"`
}

// Policy is report-by-exception: when a sample of a point goes upstream.
// A sample is sent when it is the point's first, when its quality (status
// or reason) differs from the last sent, when it follows a gap, when
// max_silence has passed since the last sent, or when its value moved past
// the deadband; otherwise it is suppressed (rules still see it).
type Policy struct {
	Deadband        float64       `yaml:"deadband" doc:"send a number when it moved more than this from the last value sent (absolute, in the point's unit); 0 with deadband_percent 0: send on any change"`
	DeadbandPercent float64       `yaml:"deadband_percent" doc:"send a number when it moved more than this percentage of the last value sent; with deadband also set, the move must exceed both"`
	MaxSilence      time.Duration `yaml:"max_silence" doc:"send a sample anyway when none was sent for this long (a heartbeat: upstream tells unchanged from dead); 0 never"`
	Gap             time.Duration `yaml:"gap" doc:"send the first sample after none was read for this long (a silent sensor, a stopped driver); 0 never"`
}

// Point is one entry of `points:`. Report-by-exception fields it leaves
// out are taken from defaults (or are 0 without defaults).
type Point struct {
	Match           string         `yaml:"match" doc:"device.point glob (path.Match: *, ?, [a-z]); e.g. press1.* or *.oil_temp"`
	Deadband        *float64       `yaml:"deadband" doc:"as defaults.deadband, for the matched points"`
	DeadbandPercent *float64       `yaml:"deadband_percent" doc:"as defaults.deadband_percent, for the matched points"`
	MaxSilence      *time.Duration `yaml:"max_silence" doc:"as defaults.max_silence, for the matched points"`
	Gap             *time.Duration `yaml:"gap" doc:"as defaults.gap, for the matched points"`
	Aggregate       *Aggregate     `yaml:"aggregate" doc:"send aggregates over aligned windows instead of the raw samples"`
}

// Aggregate is the `aggregate:` block of a point entry.
type Aggregate struct {
	Window    time.Duration `yaml:"window" doc:"window length; windows are aligned to multiples of it since the Unix epoch (UTC): 10s windows start at :00, :10, …"`
	Functions []string      `yaml:"functions" doc:"what each window sends, as samples named <point>.<function>: min, max, mean, sum, count, first, last"`
	KeepRaw   bool          `yaml:"keep_raw" doc:"also send the raw samples (reduced by the entry's deadband settings); default: only the aggregates go upstream"`
}

// functions are the aggregate functions, in the order their samples are
// emitted.
var functions = []string{"min", "max", "mean", "sum", "count", "first", "last"}

// SetDefaults sets the defaults applied before decoding.
func (p *Policy) SetDefaults() { p.Gap = time.Minute }

// Bounds of the settings.
const (
	minWindow = time.Second
	maxWindow = 24 * time.Hour
	maxPoints = 10000
)

// Validate checks the section; paths are relative to it.
func (c *Config) Validate() error {
	var errs setting.Errors
	if c.Defaults != nil {
		errs.Merge("defaults", c.Defaults.validate())
	}
	if len(c.Points) > maxPoints {
		errs.Add("points", "%d entries, more than %d", len(c.Points), maxPoints)
	}
	for i := range c.Points {
		errs.Merge(setting.Index("points", i), c.Points[i].validate())
	}
	return errs.Err()
}

func (p *Policy) validate() error {
	var errs setting.Errors
	checkPolicy(&errs, &p.Deadband, &p.DeadbandPercent, &p.MaxSilence, &p.Gap)
	return errs.Err()
}

func (p *Point) validate() error {
	var errs setting.Errors
	switch {
	case p.Match == "":
		errs.Add("match", "is required (a device.point glob such as press1.* )")
	default:
		if _, err := path.Match(p.Match, ""); err != nil {
			errs.Add("match", "%q is not a valid glob: %v", p.Match, err)
		}
	}
	checkPolicy(&errs, p.Deadband, p.DeadbandPercent, p.MaxSilence, p.Gap)
	if a := p.Aggregate; a != nil {
		if !a.KeepRaw {
			for _, f := range []struct {
				name string
				set  bool
			}{{"deadband", p.Deadband != nil}, {"deadband_percent", p.DeadbandPercent != nil}, {"max_silence", p.MaxSilence != nil}, {"gap", p.Gap != nil}} {
				if f.set {
					errs.Add(f.name, "has no effect: an aggregated point sends its raw samples only with aggregate.keep_raw: true")
				}
			}
		}
		if a.Window < minWindow || a.Window > maxWindow {
			errs.Add("aggregate.window", "%v is outside %v..%v", a.Window, minWindow, maxWindow)
		}
		if len(a.Functions) == 0 {
			errs.Add("aggregate.functions", "is required: one or more of min, max, mean, sum, count, first, last")
		}
		seen := map[string]bool{}
		for j, f := range a.Functions {
			fp := setting.Index("aggregate.functions", j)
			if err := setting.OneOf(f, functions...); err != nil {
				errs.Add(fp, "%v", err)
			} else if seen[f] {
				errs.Add(fp, "%q is listed twice", f)
			}
			seen[f] = true
		}
	}
	return errs.Err()
}

// checkPolicy checks the report-by-exception fields that are set (nil
// pointers are fields left out).
func checkPolicy(errs *setting.Errors, deadband, percent *float64, silence, gap *time.Duration) {
	if deadband != nil && !(*deadband >= 0 && *deadband < 1e300) {
		errs.Add("deadband", "%v must be 0 or more", *deadband)
	}
	if percent != nil && !(*percent >= 0 && *percent <= 1000) {
		errs.Add("deadband_percent", "%v is outside 0..1000", *percent)
	}
	if silence != nil && (*silence < 0 || (*silence > 0 && *silence < time.Second) || *silence > 7*24*time.Hour) {
		errs.Add("max_silence", "%v is outside 1s..168h (or 0: never)", *silence)
	}
	if gap != nil && (*gap < 0 || (*gap > 0 && *gap < time.Second) || *gap > 7*24*time.Hour) {
		errs.Add("gap", "%v is outside 1s..168h (or 0: never)", *gap)
	}
}

// Match returns the index of the first entry of c.Points whose glob fits
// device.point, or -1.
func (c *Config) Match(device, point string) int {
	key := device + "." + point
	for i := range c.Points {
		if ok, _ := path.Match(c.Points[i].Match, key); ok {
			return i
		}
	}
	return -1
}
