package rules

import (
	"strings"
	"time"

	"github.com/ferry-edge/ferry/internal/conf"
)

// Rule is one entry of the `rules:` list.
type Rule struct {
	Name     string            `yaml:"name"`
	When     string            `yaml:"when"`
	Clear    string            `yaml:"clear"`
	For      time.Duration     `yaml:"for"`
	Point    string            `yaml:"point"`
	Stale    time.Duration     `yaml:"stale"`
	Severity string            `yaml:"severity"`
	Message  string            `yaml:"message"`
	Labels   map[string]string `yaml:"labels"`
}

// SetDefaults sets the defaults applied before decoding.
func (r *Rule) SetDefaults() { r.Severity = "warning" }

// Validate checks every rule against the configured points; known reports
// whether "device.point" exists. Paths are relative to the rules list
// ("[3].when").
func Validate(rules []Rule, known func(ref string) bool) error {
	var errs conf.Errors
	for i, r := range rules {
		p := conf.Index("", i)
		if r.Name == "" {
			errs.Add(p+".name", "is required")
		}
		if r.Point != "" && !known(r.Point) {
			errs.Add(p+".point", "unknown point %q (want device.point)", r.Point)
		}
		if r.When == "" && r.Point == "" {
			errs.Add(p, "needs when or point")
		}
		_ = strings.TrimSpace
	}
	return errs.Err()
}
