package config

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ferry-edge/ferry/internal/fleet"
)

// Local-only settings: what a fleet bundle may not set, because it must
// never come from the network. The local file keeps them. commands is one:
// whether a gateway may write to its machines at all is decided at the
// gateway (DESIGN promise 8, "never write without leave"), not by whoever
// can write to the config bucket; the points' write: blocks may come from a
// bundle, and act only where the local file enables commands.
var (
	localOnlyTop = []string{"gateway", "data_dir", "http", "fleet", "commands"}
	// localOnlyNATS are the connection keys of uplink.nats.
	localOnlyNATS = []string{"urls", "creds", "nkey", "token", "token_file", "user", "password", "password_file", "tls"}
)

// LoadFleet loads the bundle staged in dir (fleet.MainFile and the device
// files of its devices_dir, with a site bundle's main file at
// fleet.SiteMainFile merged under it) as the configuration of the gateway
// whose local file is local. It is Load, the code of `ferry validate`, with
// two differences: a bundle that sets a local-only setting (gateway,
// data_dir, http, fleet, commands, the uplink's servers, credentials and TLS) or a
// devices_dir outside the bundle is refused with the position of the key;
// and the local-only settings are then taken from local. A bundle without
// an uplink section runs local's.
//
// The site's main file is merged key by key at its top level: a key the
// gateway's main file has wins whole. Errors in a key taken from the site
// file show its line in the site's file.
func LoadFleet(dir string, local *Config, protocols []Protocol) (*Config, error) {
	l := &loader{errs: &Errors{order: map[string]int{}}, decs: map[string]*decoder{}, protocols: protocols,
		overlay: &overlay{local: local, siteMain: filepath.Join(dir, fleet.SiteMainFile)}}
	c := l.load(filepath.Join(dir, fleet.MainFile))
	if err := l.errs.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// overlay is what LoadFleet adds to the loader.
type overlay struct {
	local     *Config
	siteMain  string
	hasUplink bool
}

// patch checks the bundle's main document for local-only keys and merges
// the site's main file under it.
func (o *overlay) patch(l *loader, d *decoder, root *yaml.Node, h io.Writer) {
	if data, err := readLimited(o.siteMain); err == nil {
		fmt.Fprintf(h, "%s\x00%d\x00", fleet.SiteMainFile, len(data))
		h.Write(data)
		var site yaml.Node
		if err := yaml.Unmarshal(data, &site); err != nil {
			l.errs.add(parseError("site "+fleet.MainFile, data, err))
		} else if len(site.Content) > 0 && site.Content[0].Kind == yaml.MappingNode {
			sd := newDecoder("site "+fleet.MainFile, l.errs)
			o.check(sd, site.Content[0])
			if root.Kind == 0 || len(root.Content) == 0 || isNull(root.Content[0]) {
				*root = site
			} else if top := root.Content[0]; top.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(site.Content[0].Content); i += 2 {
					k := site.Content[0].Content[i]
					if mapValue(top, k.Value) == nil {
						top.Content = append(top.Content, k, site.Content[0].Content[i+1])
					}
				}
			}
		}
	} else if !os.IsNotExist(err) {
		l.errs.add(&Error{Pos: Pos{File: "site " + fleet.MainFile}, Msg: err.Error()})
	}
	if root.Kind == 0 || len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return
	}
	top := root.Content[0]
	o.check(d, top)
	o.hasUplink = mapValue(top, "uplink") != nil
}

// check reports the local-only keys of a bundle's main mapping, and a
// devices_dir that leaves the bundle.
func (o *overlay) check(d *decoder, top *yaml.Node) {
	const msg = "is local-only: it stays in the gateway's own file and may not come from a fleet bundle"
	for i := 0; i+1 < len(top.Content); i += 2 {
		k := top.Content[i]
		for _, lo := range localOnlyTop {
			if k.Value == lo {
				d.errorf(k, lo, "%s", msg)
			}
		}
	}
	if dd := mapValue(top, "devices_dir"); dd != nil && dd.Kind == yaml.ScalarNode {
		v := filepath.ToSlash(dd.Value)
		if filepath.IsAbs(dd.Value) || v == ".." || strings.HasPrefix(v, "../") || strings.Contains(v, "/../") || strings.HasSuffix(v, "/..") {
			d.errorf(dd, "devices_dir", "%q leaves the bundle: a bundle's devices_dir is a directory inside it", dd.Value)
		}
	}
	up := mapValue(top, "uplink")
	if up == nil || up.Kind != yaml.MappingNode {
		return
	}
	nats := mapValue(up, "nats")
	if nats == nil || nats.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(nats.Content); i += 2 {
		k := nats.Content[i]
		for _, lo := range localOnlyNATS {
			if k.Value == lo {
				d.errorf(k, "uplink.nats."+lo, "%s (the connection and its credentials)", msg)
			}
		}
	}
}

// mapValue returns the value of key in mapping m, or nil.
func mapValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// applyOverlay sets the local-only settings of a bundle's configuration
// from the local file's.
func (l *loader) applyOverlay(c *Config) {
	o := l.overlay
	if o == nil {
		return
	}
	lc := o.local
	c.Gateway, c.DataDir, c.HTTP, c.Fleet, c.Commands = lc.Gateway, lc.DataDir, lc.HTTP, lc.Fleet, lc.Commands
	switch {
	case !o.hasUplink:
		c.Uplink = lc.Uplink
	case c.Uplink.NATS != nil && lc.Uplink.NATS != nil:
		n, ln := c.Uplink.NATS, lc.Uplink.NATS
		n.URLs, n.Creds, n.NKey, n.Token, n.User, n.Password, n.TLS = ln.URLs, ln.Creds, ln.NKey, ln.Token, ln.User, ln.Password, ln.TLS
	}
}

// checkFleet validates the fleet block: fleet mode reaches the buckets
// with the uplink's connection settings, so it needs uplink.nats.
func (l *loader) checkFleet(c *Config, d *decoder) {
	if c.Fleet == nil {
		return
	}
	l.validate(d, "fleet", c.Fleet.Validate())
	if c.Uplink.NATS == nil {
		l.at(d, "fleet", "needs uplink.nats: the fleet agent connects with the uplink's servers, credentials and TLS")
	}
	if err := fleet.CheckIdentity(c.Gateway.Site, c.Gateway.ID); err != nil && c.Gateway.ID != "" {
		l.at(d, "gateway.site", err.Error())
	}
}
