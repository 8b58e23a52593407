package fleet

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

// BundleFormat is the format of a config bundle, its "format" member.
const BundleFormat = "ferry.bundle/v1"

// MainFile is the bundle file that is the main configuration file;
// SiteMainFile is where a site bundle's main file is staged when the
// gateway's bundle has one too (the loader merges its top-level keys under
// the gateway's: see config.LoadFleet).
const (
	MainFile     = "ferry.yaml"
	SiteMainFile = ".site-ferry.yaml"
)

// Bounds of a bundle besides its byte size.
const (
	maxFiles    = 256
	maxNameLen  = 128
	maxNameDeep = 4
)

// ErrBundle is returned when a bundle value cannot be used: not JSON of
// the bundle format, too large, a bad file name.
var ErrBundle = errors.New("bad bundle")

// Bundle is the value of a config key: the main file and the device files
// of one configuration, as a JSON document (configs/fleet-bundle.schema.json).
//
//	{"format": "ferry.bundle/v1", "revision": 7,
//	 "files": {"ferry.yaml": "devices_dir: devices.d\nrules: …", "devices.d/press.yaml": "devices: …"}}
//
// Revision is the bundle's own revision, set by whoever writes it (`ferry
// fleet push` writes the current one plus one): a gateway refuses a bundle
// whose revision is below the one it has applied, so that an old value
// written again (a replay) cannot take a gateway back.
type Bundle struct {
	Format   string            `json:"format"`
	Revision uint64            `json:"revision"`
	Comment  string            `json:"comment,omitempty"`
	Files    map[string]string `json:"files"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*\.ya?ml$`)
var dirRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

// DecodeBundle decodes and checks a bundle value of at most max bytes:
// strict JSON (an unknown member is an error), the format, a revision,
// and file names that stay inside the bundle.
func DecodeBundle(data []byte, max int64) (*Bundle, error) {
	if max > 0 && int64(len(data)) > max {
		return nil, fmt.Errorf("%w: %d bytes is over the limit of %d (fleet.max_bundle_bytes)", ErrBundle, len(data), max)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var b Bundle
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBundle, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON document", ErrBundle)
	}
	if b.Format != BundleFormat {
		return nil, fmt.Errorf("%w: format %q is not %q", ErrBundle, b.Format, BundleFormat)
	}
	if b.Revision == 0 {
		return nil, fmt.Errorf("%w: revision is required (1 or more)", ErrBundle)
	}
	if len(b.Files) == 0 {
		return nil, fmt.Errorf("%w: files is empty", ErrBundle)
	}
	if len(b.Files) > maxFiles {
		return nil, fmt.Errorf("%w: %d files, at most %d", ErrBundle, len(b.Files), maxFiles)
	}
	for name := range b.Files {
		if err := checkName(name); err != nil {
			return nil, fmt.Errorf("%w: file %q: %v", ErrBundle, name, err)
		}
	}
	return &b, nil
}

// checkName accepts relative slash-separated names of *.yaml / *.yml
// files inside the bundle: no "..", no absolute path, no hidden file.
func checkName(name string) error {
	if len(name) > maxNameLen {
		return fmt.Errorf("name longer than %d bytes", maxNameLen)
	}
	parts := strings.Split(name, "/")
	if len(parts) > maxNameDeep {
		return fmt.Errorf("more than %d levels deep", maxNameDeep)
	}
	for i, p := range parts {
		re := dirRE
		if i == len(parts)-1 {
			re = nameRE
		}
		if p == "." || p == ".." || !re.MatchString(p) {
			return errors.New(`must be a relative path of letters, digits, "_", "-" and ".", ending in .yaml or .yml, with no "." or ".." part`)
		}
	}
	return nil
}

// Encode returns the bundle's JSON value.
func (b *Bundle) Encode() ([]byte, error) { return json.Marshal(b) }

// Merged is what a gateway stages: its own bundle with the site-wide one
// under it.
type Merged struct {
	// Files by name; a site main file is at SiteMainFile.
	Files map[string]string
	// Revision and SiteRevision are the two bundles' revisions (0: none).
	Revision, SiteRevision uint64
	// Hash identifies the files: a hash of every name and content.
	Hash string
}

// Merge puts the site-wide bundle (nil: none) under the gateway's (nil:
// none). For a file name in both, the gateway's file wins; both main files
// are kept, the site's at SiteMainFile, and the loader merges them key by
// key at the top level, the gateway's keys winning. It returns nil when
// both are nil, and an error when the result has no main file.
func Merge(gw, site *Bundle) (*Merged, error) {
	if gw == nil && site == nil {
		return nil, nil
	}
	m := &Merged{Files: map[string]string{}}
	if site != nil {
		m.SiteRevision = site.Revision
		for n, f := range site.Files {
			m.Files[n] = f
		}
	}
	if gw != nil {
		m.Revision = gw.Revision
		if site != nil {
			if sm, ok := site.Files[MainFile]; ok {
				if _, ok := gw.Files[MainFile]; ok {
					m.Files[SiteMainFile] = sm
				}
			}
		}
		for n, f := range gw.Files {
			m.Files[n] = f
		}
	}
	if _, ok := m.Files[MainFile]; !ok {
		return nil, fmt.Errorf("%w: no %s in the gateway's or the site's bundle", ErrBundle, MainFile)
	}
	m.Hash = hashFiles(m.Files)
	return m, nil
}

func hashFiles(files map[string]string) string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%d\x00%s", n, len(files[n]), files[n])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
