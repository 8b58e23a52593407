package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Store keeps the staged bundles and the fleet state under
// data_dir/fleet:
//
//	bundles/HASH/…      one staged bundle's files, complete or absent
//	state.json          the last-known-good bundle and the last result
//
// A bundle is written into a temporary directory, synced, and renamed to
// bundles/HASH; state.json is replaced the same way. A kill -9 at any point
// leaves the old state or the new one, each naming a complete bundle:
// never a mix of two bundles' files.
type Store struct {
	dir string
}

// Applied names a bundle and what came of it.
type Applied struct {
	Hash         string    `json:"hash"`
	Revision     uint64    `json:"revision"`
	SiteRevision uint64    `json:"site_revision,omitempty"`
	State        string    `json:"state,omitempty"`
	Reason       string    `json:"reason,omitempty"`
	Time         time.Time `json:"time"`
}

// State is what survives restarts: the last-known-good bundle, which the
// gateway boots on, and the last bundle tried, so that a refused or
// rolled-back one is not tried again at every restart.
type State struct {
	LKG  *Applied `json:"lkg,omitempty"`
	Last *Applied `json:"last,omitempty"`
}

// Apply states.
const (
	StateApplied    = "applied"
	StateRefused    = "refused"
	StateRolledBack = "rolled_back"
	StateApplying   = "applying"
	// StateLocal: no bundle yet; the gateway runs its local file.
	StateLocal = "local"
)

// OpenStore opens (creating) the store under dataDir.
func OpenStore(dataDir string) (*Store, error) {
	s := &Store{dir: filepath.Join(dataDir, "fleet")}
	if err := os.MkdirAll(filepath.Join(s.dir, "bundles"), 0o750); err != nil {
		return nil, fmt.Errorf("fleet store: %w", err)
	}
	return s, nil
}

// Dir is the directory of a staged bundle.
func (s *Store) Dir(hash string) string { return filepath.Join(s.dir, "bundles", hash) }

// Stage writes m's files under bundles/HASH, atomically, and returns that
// directory. A bundle already staged is not written again.
func (s *Store) Stage(m *Merged) (string, error) {
	dst := s.Dir(m.Hash)
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	bundles := filepath.Join(s.dir, "bundles")
	tmp, err := os.MkdirTemp(bundles, ".tmp-")
	if err != nil {
		return "", fmt.Errorf("stage bundle %s: %w", m.Hash, err)
	}
	fail := func(err error) (string, error) {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("stage bundle %s: %w", m.Hash, err)
	}
	dirs := map[string]bool{tmp: true}
	for name, text := range m.Files {
		p := filepath.Join(tmp, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			return fail(err)
		}
		dirs[filepath.Dir(p)] = true
		if err := writeSync(p, []byte(text)); err != nil {
			return fail(err)
		}
	}
	for d := range dirs {
		if err := syncDir(d); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fail(err)
	}
	if err := syncDir(bundles); err != nil {
		return "", fmt.Errorf("stage bundle %s: %w", m.Hash, err)
	}
	return dst, nil
}

// State reads the state; a store never written has the zero State.
func (s *Store) State() (State, error) {
	var st State
	b, err := os.ReadFile(filepath.Join(s.dir, "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("fleet state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("fleet state %s: %w", filepath.Join(s.dir, "state.json"), err)
	}
	return st, nil
}

// SaveState replaces the state atomically, then removes the staged
// bundles it no longer names.
func (s *Store) SaveState(st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(s.dir, "state.json")
	tmp := p + ".tmp"
	if err := writeSync(tmp, b); err != nil {
		return fmt.Errorf("fleet state: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("fleet state: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("fleet state: %w", err)
	}
	s.prune(st)
	return nil
}

// prune removes staged bundles st does not name and leftovers of stages
// a crash interrupted. A failure costs disk space only: it is retried at
// the next save.
func (s *Store) prune(st State) {
	keep := map[string]bool{}
	for _, a := range []*Applied{st.LKG, st.Last} {
		if a != nil {
			keep[a.Hash] = true
		}
	}
	entries, err := os.ReadDir(filepath.Join(s.dir, "bundles"))
	if err != nil {
		return
	}
	bundles := filepath.Join(s.dir, "bundles")
	for _, e := range entries {
		p := filepath.Join(bundles, e.Name())
		switch {
		case strings.HasPrefix(e.Name(), ".tmp-"):
			os.RemoveAll(p)
		case !keep[e.Name()]:
			// Renamed out of the way first: a removal cut short by a
			// crash must not leave a partial bundles/HASH that a later
			// Stage of the same bundle would take as whole.
			gone := filepath.Join(bundles, ".tmp-gone-"+e.Name())
			if os.Rename(p, gone) == nil {
				os.RemoveAll(gone)
			}
		}
	}
}

func writeSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
