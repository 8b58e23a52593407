package config

import (
	"fmt"
	"sort"
	"strings"

	"github.com/ferry-edge/ferry"
)

// Error is one problem in a configuration file, at a place and a field path:
//
//	devices.d/press3.yaml:14:7: devices[0].points[2].type: "flaot32" is not one of bool, int16, …
type Error struct {
	Pos
	Path string
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Pos.String())
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a configuration. It wraps
// ferry.ErrInvalidConfig.
type Errors struct {
	List []*Error

	order   map[string]int // file → load order, for sorting
	dropped int
	// fatal are the errors that stopped a file's decoding (alias bomb,
	// nesting): listed first, never left out by the cap, so that the
	// reason is not buried under what the partial decode found.
	fatal []*Error
}

// maxErrors caps the list: past it, one more line says how many were left
// out (a hostile file cannot grow the list without bound).
const maxErrors = 100

func (e *Errors) add(err *Error) {
	if len(e.List) < maxErrors {
		e.List = append(e.List, err)
	} else {
		e.dropped++
	}
}

// Error lists the problems, one per line, in file and line order.
func (e *Errors) Error() string {
	lines := make([]string, len(e.List))
	for i, x := range e.List {
		lines[i] = x.Error()
	}
	if e.dropped > 0 {
		lines = append(lines, fmt.Sprintf("… and %d more errors", e.dropped))
	}
	return strings.Join(lines, "\n")
}

// Unwrap makes errors.Is(err, ferry.ErrInvalidConfig) true.
func (e *Errors) Unwrap() error { return ferry.ErrInvalidConfig }

func (e *Errors) sort() {
	sort.SliceStable(e.List, func(i, j int) bool {
		a, b := e.List[i], e.List[j]
		if a.File != b.File {
			return e.order[a.File] < e.order[b.File]
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
}

func (e *Errors) err() error {
	if len(e.List) == 0 && len(e.fatal) == 0 {
		return nil
	}
	e.sort()
	if len(e.fatal) > 0 {
		e.List = append(e.fatal, e.List...)
		e.fatal = nil
	}
	return e
}
