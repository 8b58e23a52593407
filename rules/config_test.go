package rules

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/setting"
)

var known = map[string]bool{"press3.oil_temp": true, "press3.running": true, "boiler.pressure": true, "press-3.oil-temp": true, "env.state": true}

func anomaly(m func(a *Anomaly)) *Anomaly {
	a := &Anomaly{}
	a.SetDefaults()
	m(a)
	return a
}

func TestValidate(t *testing.T) {
	ok := func(r Rule) Rule { return withDefaults(r) }
	tests := []struct {
		name string
		rule Rule
		want string // "" for valid; else "path: message" substring
	}{
		{"threshold", ok(Rule{When: "press3.oil_temp > 80", Clear: "press3.oil_temp < 75", For: time.Second}), ""},
		{"several points", ok(Rule{When: "press3.oil_temp > 80 and press3.running"}), ""},
		{"names expr cannot spell", ok(Rule{When: `$env["press-3"]["oil-temp"] > 80`}), ""},
		{"expr fallback with builtins", ok(Rule{When: `env.state in ["E1", "E2"] || upper(env.state) == "X"`}), ""},
		{"let variables", ok(Rule{When: `let t = press3.oil_temp; t > 80 && t < 200`}), ""},
		{"stale", ok(Rule{Point: "boiler.pressure", Stale: 30 * time.Second}), ""},
		{"anomaly ewma", ok(Rule{Point: "boiler.pressure", Anomaly: anomaly(func(a *Anomaly) { a.Method = "ewma" })}), ""},

		{"no name", Rule{When: "press3.oil_temp > 1", Severity: "info"}, "[0].name: is required"},
		{"bad name", ok(Rule{Name: "oil hot", When: "press3.oil_temp > 1"}), `[0].name: "oil hot" may hold only letters`},
		{"no kind", ok(Rule{Point: "press3.oil_temp"}), "[0]: needs one of when, rate, stale, quality, flatline, anomaly"},
		{"two kinds", ok(Rule{When: "press3.oil_temp > 1", Point: "press3.oil_temp", Stale: time.Second}), "[0]: sets when and stale; a rule checks one"},
		{"clear without when", ok(Rule{Clear: "press3.oil_temp < 1"}), "[0].clear: needs when"},
		{"point required", ok(Rule{Stale: time.Second}), "[0].point: is required for a stale rule"},
		{"unknown point", ok(Rule{Point: "boiler.presure", Stale: time.Second}), `[0].point: unknown point "boiler.presure" (did you mean "boiler.pressure"?)`},
		{"unknown point far from any", ok(Rule{Point: "kiln.flame", Stale: time.Second}), `[0].point: unknown point "kiln.flame" (want device.point)`},
		{"point not a ref", ok(Rule{Point: "boiler", Stale: time.Second}), `[0].point: "boiler" is not a device.point reference`},
		{"syntax error", ok(Rule{When: "press3.oil_temp >"}), `[0].when: unexpected token EOF at column 17 of "press3.oil_temp >"`},
		{"unknown point in expression", ok(Rule{When: "press3.oil_temp > 80 and press3.oil_tmp < 9"}), `[0].when: unknown point "press3.oil_tmp" (did you mean "press3.oil_temp"?) at column 26`},
		{"unknown point in clear", ok(Rule{When: "press3.oil_temp > 80", Clear: "press3.oil < 9"}), `[0].clear: unknown point "press3.oil" at column 1`},
		{"bare name", ok(Rule{When: "oil_temp > 80"}), `[0].when: "oil_temp" is not a point (write device.point) at column 1`},
		{"unknown function", ok(Rule{When: "foo(press3.oil_temp)"}), `[0].when: "foo" is not a point`},
		{"not a bool", ok(Rule{When: "press3.oil_temp + 1"}), `[0].when: is a number, not a condition`},
		{"bad severity", ok(Rule{When: "press3.oil_temp > 1", Severity: "urgent"}), `[0].severity: "urgent" is not one of info, warning, critical`},
		{"negative for", ok(Rule{When: "press3.oil_temp > 1", For: -time.Second}), "[0].for: -1s is negative"},
		{"bad template", ok(Rule{When: "press3.oil_temp > 1", Message: "{{.Value"}), "[0].message: "},
		{"template field typo", ok(Rule{When: "press3.oil_temp > 1", Message: "{{.Vaule}}"}), `[0].message: r:1:2: executing "r" at <.Vaule>: can't evaluate field Vaule`},
		{"bad label", ok(Rule{When: "press3.oil_temp > 1", Labels: map[string]string{"a-b": "x"}}), `[0].labels.a-b: label name "a-b"`},
		{"rate without limit", ok(Rule{Point: "press3.oil_temp", Rate: &Rate{Window: time.Minute, Per: "minute"}}), "[0].rate: needs above, below or both"},
		{"rate per", ok(Rule{Point: "press3.oil_temp", Rate: &Rate{Window: time.Minute, Per: "day", Above: f64(1)}}), `[0].rate.per: "day" is not one of second, minute, hour`},
		{"rate window", ok(Rule{Point: "press3.oil_temp", Rate: &Rate{Per: "minute", Above: f64(1)}}), `[0].rate.window: must be positive`},
		{"rate band", ok(Rule{Point: "press3.oil_temp", Rate: &Rate{Window: time.Minute, Per: "minute", Above: f64(1), Below: f64(2)}}), `[0].rate.below: 2 must be less than above (1)`},
		{"flatline duration", ok(Rule{Point: "press3.oil_temp", Flatline: &Flatline{}}), "[0].flatline.duration: is required"},
		{"anomaly method", ok(Rule{Point: "press3.oil_temp", Anomaly: anomaly(func(a *Anomaly) { a.Method = "zcore" })}), `[2].anomaly.method: "zcore" is not one of zscore, ewma`},
		{"anomaly threshold", ok(Rule{Point: "press3.oil_temp", Anomaly: anomaly(func(a *Anomaly) { a.Threshold = 0 })}), `[0].anomaly.threshold: 0 must be positive`},
		{"anomaly lambda", ok(Rule{Point: "press3.oil_temp", Anomaly: anomaly(func(a *Anomaly) { a.Method = "ewma"; a.Lambda = 1.5 })}), `[0].anomaly.lambda: 1.5 must be in (0, 1]`},
		{"anomaly clear threshold", ok(Rule{Point: "press3.oil_temp", Anomaly: anomaly(func(a *Anomaly) { a.ClearThreshold = 9 })}), `[0].anomaly.clear_threshold: 9 must be between 0 and threshold (4)`},
		{"anomaly min samples", ok(Rule{Point: "press3.oil_temp", Anomaly: anomaly(func(a *Anomaly) { a.MinSamples = 1 })}), `[0].anomaly.min_samples: 1 must be at least 2`},
		{"anomaly direction", ok(Rule{Point: "press3.oil_temp", Anomaly: anomaly(func(a *Anomaly) { a.Direction = "up" })}), `[0].anomaly.direction: "up" is not one of both, above, below`},
		{"huge expression", ok(Rule{When: strings.Repeat("(", maxExprLen+1)}), "[0].when: expression is longer than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rules := []Rule{tc.rule}
			want := tc.want
			if strings.HasPrefix(want, "[2]") { // the brief's example: third rule
				rules = []Rule{ok(Rule{Name: "a", When: "press3.running"}), ok(Rule{Name: "b", When: "press3.running"}), tc.rule}
			}
			err := Validate(rules, known)
			if want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", want)
			}
			var found []string
			for _, fe := range setting.Flatten(err) {
				found = append(found, fe.Error())
				if strings.HasPrefix(fe.Error(), want) {
					return
				}
			}
			t.Fatalf("errors %q, want one starting %q", found, want)
		})
	}
}

func TestValidateDuplicateNames(t *testing.T) {
	r := withDefaults(Rule{Name: "x", When: "press3.running"})
	err := Validate([]Rule{r, r}, known)
	if err == nil || !strings.Contains(err.Error(), `[1].name: duplicate rule name "x" (first at rules[0])`) {
		t.Fatalf("got %v", err)
	}
}

func TestNewRefusesInvalidRules(t *testing.T) {
	_, err := New([]Rule{{Name: "x", Severity: "warning"}}, Options{})
	if !errors.Is(err, ferry.ErrInvalidConfig) {
		t.Fatalf("New: %v, want ErrInvalidConfig", err)
	}
}

func TestExpressionRuntimeErrorCounted(t *testing.T) {
	// upper() of a number fails at run time in expr: counted, state held.
	h := newHarness(t, []Rule{withDefaults(Rule{When: `upper(p.t) == "X"`})}, nil)
	h.send("p.t", ferry.FloatValue(1), ferry.GoodQuality)
	if got := h.take(); len(got) != 0 {
		t.Fatalf("emitted %v", got)
	}
	h.send("p.t", ferry.StringValue("x"), ferry.GoodQuality)
	if got := states(h.take()); got != "raised" {
		t.Fatalf("emitted %q", got)
	}
}
