// Package setting holds what every part's configuration shares: value types
// that decode from YAML in a plant-friendly form ([Size] from "1GiB",
// [Secret] that never prints), and [Errors], the list of field-path errors a
// Validate method returns.
//
// Each part of ferry owns its Config struct (YAML tags, defaults, Validate);
// internal/config decodes the file into those structs, calls Validate, and
// turns each [FieldError] path into file:line:column.
//
// Durations are plain time.Duration fields; the loader decodes "500ms".
package setting

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// FieldError is one problem with one field. Path is relative to the struct
// whose Validate returned it ("points[2].type"); the loader prefixes the
// path of that struct in the file.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Errors collects the problems found while validating. The zero value is
// ready to use.
type Errors struct {
	list []*FieldError
}

// Add records that the field at path has a problem described by format.
func (e *Errors) Add(path, format string, args ...any) {
	e.list = append(e.list, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// ValidName reports whether name may name something ferry keeps by name
// in files and labels (an upstream, the buffer consumer that is its
// cursor): 1 to 64 letters, digits, '_' or '-'.
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > 64 {
		return false
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

// AtLeast records that the duration field at path is below min, if it is.
func (e *Errors) AtLeast(path string, v, min time.Duration) {
	if v < min {
		e.Add(path, "%v is below the minimum of %v", v, min)
	}
}

// Merge adds every FieldError of err (as returned by a nested Validate) with
// prefix joined in front of its path. Errors that are not FieldErrors are
// recorded at prefix.
func (e *Errors) Merge(prefix string, err error) {
	if err == nil {
		return
	}
	for _, fe := range Flatten(err) {
		e.list = append(e.list, &FieldError{Path: Join(prefix, fe.Path), Msg: fe.Msg})
	}
}

// Len returns how many problems were recorded.
func (e *Errors) Len() int { return len(e.list) }

// Err returns nil when nothing was recorded, else an error whose Unwrap
// yields each *FieldError.
func (e *Errors) Err() error {
	if len(e.list) == 0 {
		return nil
	}
	errs := make([]error, len(e.list))
	for i, fe := range e.list {
		errs[i] = fe
	}
	return errors.Join(errs...)
}

// Flatten returns the FieldErrors inside err (joined or wrapped); an error
// that holds none becomes one FieldError with an empty path.
func Flatten(err error) []*FieldError {
	if err == nil {
		return nil
	}
	var fe *FieldError
	if errors.As(err, &fe) && fe == err {
		return []*FieldError{fe}
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*FieldError
		for _, e := range j.Unwrap() {
			out = append(out, Flatten(e)...)
		}
		return out
	}
	if errors.As(err, &fe) {
		return []*FieldError{fe}
	}
	return []*FieldError{{Msg: err.Error()}}
}

// Join joins two path parts: Join("devices[0]", "points[1].type") is
// "devices[0].points[1].type"; an index part joins without a dot.
func Join(prefix, path string) string {
	switch {
	case prefix == "":
		return path
	case path == "":
		return prefix
	case strings.HasPrefix(path, "["):
		return prefix + path
	}
	return prefix + "." + path
}

// Index returns the path of element i of the list at path: "points[3]".
func Index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// OneOf returns nil when v is one of allowed, else an error message listing
// them: `"flaot32" is not one of bool, int16, …`.
func OneOf(v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
}

// Secret is a string that must never be printed: a password, a token, a
// key. It prints as "[redacted]" through fmt, slog and JSON. In YAML a
// Secret field `password` can also be given as `password_file: PATH`, and
// `${ENV}` references are expanded by the loader.
type Secret string

const redacted = "[redacted]"

// String returns "[redacted]" (or "" for an empty secret).
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString redacts %#v too.
func (s Secret) GoString() string { return s.String() }

// LogValue redacts the secret in slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON redacts the secret in JSON output (the API, dumps).
func (s Secret) MarshalJSON() ([]byte, error) { return strconv.AppendQuote(nil, s.String()), nil }

// MarshalText redacts the secret in text encodings.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Reveal returns the secret itself, for the one place that needs it (a
// connect call). Never log its result.
func (s Secret) Reveal() string { return string(s) }

// Size is a byte count, written in YAML as a plain number or with a unit:
// "512", "64KiB", "1GiB", "10MB" (decimal and binary units are both
// accepted).
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// ParseSize parses a Size.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			mult = u.mult
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 || t == "" {
		return 0, fmt.Errorf("%q is not a size (want e.g. 512MiB, 1GiB)", s)
	}
	v := n * float64(mult)
	if v > 1<<62 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(v), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// String formats the size with the largest binary unit that divides it.
func (s Size) String() string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if int64(s) >= u.mult && int64(s)%u.mult == 0 {
			return strconv.FormatInt(int64(s)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}
