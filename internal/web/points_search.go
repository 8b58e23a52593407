package web

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ferry-edge/ferry"
)

// The console's search box asks the server (GET /api/search?q=&limit=)
// rather than filtering a list it downloaded: on a gateway with 10,000
// points the whole list is 1.3 MB of JSON to fetch and keep per tab,
// while a search over the index below takes 0.1 to 2.6 ms on a shared
// 2-core VM (BenchmarkSearch10k) and sends only the rows the box shows.

// Search bounds.
const (
	DefaultSearchLimit = 50
	MaxSearchLimit     = 500
)

// SearchHit is one point of a search's answer.
type SearchHit struct {
	Device      string `json:"device"`
	Point       string `json:"point"`
	Protocol    string `json:"protocol,omitempty"`
	Unit        string `json:"unit,omitempty"`
	Type        string `json:"type,omitempty"`
	Description string `json:"description,omitempty"`
	Source      string `json:"source,omitempty"`
}

// SearchDevice is one device of a search's answer.
type SearchDevice struct {
	Device      string `json:"device"`
	Protocol    string `json:"protocol,omitempty"`
	Description string `json:"description,omitempty"`
}

// SearchResult is the GET /api/search body: the matching devices and
// points (at most limit of each, best first) and how many points matched
// in all.
type SearchResult struct {
	Query   string         `json:"q"`
	Devices []SearchDevice `json:"devices"`
	Points  []SearchHit    `json:"points"`
	Total   int            `json:"total"`
}

// searchIndex is the catalog as the search reads it: per entry, its
// searchable text lowercased once. It is replaced whole on a reload. A
// point refers to the catalog's PointInfo (the configuration's, kept by
// the store too) rather than holding a copy of its fields, and its
// lowercased device.point is a part of its text: 145 bytes a point
// instead of 267 (TestSearchIndexBytesPerPoint, issue 20).
//
// The index is built on the first search after a set, not by set: a
// gateway nobody searches (most run headless) does not carry 1.4 MB of
// lowercased text at 10k points, and the first search pays the time
// to build it (7.4 ms, BenchmarkSearchFirst10k).
type searchIndex struct{ p atomic.Pointer[searchEntry] }

// searchEntry is one catalog's index, built once, on first use.
type searchEntry struct {
	once sync.Once
	cat  Catalog // the catalog's slices, not a copy
	data *searchData
}

type searchData struct {
	devices []searchDev
	points  []searchPoint
}

type searchDev struct {
	info SearchDevice
	name string // lowercased name
	text string // lowercased name, protocol, description
}

type searchPoint struct {
	info *ferry.PointInfo // the catalog's entry
	name string           // lowercased point name
	full string           // lowercased device.point (within text when it can be)
	text string           // lowercased device, point, device.point, unit, type, description, source, protocol
}

// set replaces the catalog; its index is built by the next search.
func (x *searchIndex) set(cat Catalog) { x.p.Store(&searchEntry{cat: cat}) }

// data returns the index of the current catalog, building it on the
// first call after set; nil before any set.
func (x *searchIndex) data() *searchData {
	e := x.p.Load()
	if e == nil {
		return nil
	}
	e.once.Do(func() { e.data = buildSearch(e.cat) })
	return e.data
}

func buildSearch(cat Catalog) *searchData {
	d := &searchData{points: make([]searchPoint, 0, len(cat.Points))}
	seen := map[string]bool{}
	addDev := func(name, protocol, desc string) {
		if seen[name] {
			return
		}
		seen[name] = true
		d.devices = append(d.devices, searchDev{
			info: SearchDevice{Device: name, Protocol: protocol, Description: desc},
			name: strings.ToLower(name),
			text: strings.ToLower(name + "\x00" + protocol + "\x00" + desc),
		})
	}
	for _, dev := range cat.Devices {
		addDev(dev.Name, dev.Protocol, dev.Description)
	}
	for i := range cat.Points {
		p := &cat.Points[i]
		addDev(p.Device, p.Protocol, "")
		text := strings.ToLower(strings.Join([]string{p.Device, p.Point, p.Device + "." + p.Point, p.Unit, p.Type, p.Description, p.Source, p.Protocol}, "\x00"))
		full := strings.ToLower(p.Device + "." + p.Point)
		if j := strings.Index(text, "\x00"+full+"\x00"); j >= 0 {
			full = text[j+1 : j+1+len(full)] // shares text's bytes
		}
		d.points = append(d.points, searchPoint{info: p, name: strings.ToLower(p.Point), full: full, text: text})
	}
	return d
}

func pointHit(p ferry.PointInfo) SearchHit {
	return SearchHit{Device: p.Device, Point: p.Point, Protocol: p.Protocol, Unit: p.Unit, Type: p.Type, Description: p.Description, Source: p.Source}
}

// rank orders matches by the best word: one that is the name itself,
// then one the name starts with, then one the name holds, then a match
// elsewhere only (device, unit, description, source). Lower is better.
func rank(name string, words []string) int {
	best := 3
	for _, w := range words {
		switch {
		case name == w:
			return 0
		case strings.HasPrefix(name, w):
			best = min(best, 1)
		case strings.Contains(name, w):
			best = min(best, 2)
		}
	}
	return best
}

// search returns what matches every word of q (case-insensitive
// substrings of a point's device, name, unit, type, description or
// source), at most limit devices and limit points.
func (x *searchIndex) search(q string, limit int) SearchResult {
	res := SearchResult{Query: q, Devices: []SearchDevice{}, Points: []SearchHit{}}
	words := strings.Fields(strings.ToLower(q))
	if len(words) == 0 {
		return res
	}
	d := x.data()
	if d == nil {
		return res
	}
	match := func(text string) bool {
		for _, w := range words {
			if !strings.Contains(text, w) {
				return false
			}
		}
		return true
	}
	type ranked struct{ r, i int }
	var devs []ranked
	for i := range d.devices {
		if match(d.devices[i].text) {
			devs = append(devs, ranked{rank(d.devices[i].name, words), i})
		}
	}
	// Keep the best limit points as they come (a bounded, sorted slice:
	// no sort of every match).
	best := make([]ranked, 0, min(limit, 64))
	for i := range d.points {
		p := &d.points[i]
		if !match(p.text) {
			continue
		}
		res.Total++
		r := min(rank(p.name, words), rank(p.full, words))
		if len(best) == limit && r >= best[len(best)-1].r {
			continue
		}
		at, _ := slices.BinarySearchFunc(best, r, func(e ranked, r int) int {
			if e.r <= r {
				return -1
			}
			return 1
		})
		if len(best) == limit {
			best = best[:limit-1]
		}
		best = slices.Insert(best, at, ranked{r, i})
	}
	slices.SortStableFunc(devs, func(a, b ranked) int { return a.r - b.r })
	for _, e := range devs[:min(len(devs), limit)] {
		res.Devices = append(res.Devices, d.devices[e.i].info)
	}
	for _, e := range best {
		res.Points = append(res.Points, pointHit(*d.points[e.i].info))
	}
	return res
}

// serveSearch is GET /api/search?q=&limit=.
func (s *Server) serveSearch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := DefaultSearchLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeJSON(w, http.StatusBadRequest, errorBody{"limit: want a number from 1 to " + strconv.Itoa(MaxSearchLimit)})
			return
		}
		limit = min(n, MaxSearchLimit)
	}
	text := q.Get("q")
	if len(text) > 200 {
		writeJSON(w, http.StatusBadRequest, errorBody{"q: at most 200 bytes"})
		return
	}
	writeJSON(w, http.StatusOK, s.search.search(text, limit))
}
