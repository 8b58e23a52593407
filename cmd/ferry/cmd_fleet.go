package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/fleet"
	"github.com/ferry-edge/ferry/internal/gateway"
	"github.com/ferry-edge/ferry/internal/setting"
	"github.com/ferry-edge/ferry/uplink"
)

// cmdFleet is `ferry fleet`: push, status, diff, rollback and watch the
// fleet's buckets (docs/fleet.md).
func cmdFleet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	subs := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"push": fleetPush, "status": fleetStatus, "diff": fleetDiff, "rollback": fleetRollback, "watch": fleetWatch,
	}
	if len(args) == 0 || subs[args[0]] == nil {
		fmt.Fprint(stderr, `Usage: ferry fleet COMMAND [flags]

  push -site S [-gateway G] [-expect REV] PATH   validate PATH (a ferry.yaml or a directory holding one and its device files) and write it as the bundle of S.G (or the site-wide key S), compare-and-set
  status [-site S]                               one line per gateway: state, revisions, lag, stale
  diff -site S G                                 desired bundle (config key) against the one the gateway runs
  rollback -site S G [REV]                       write again the bundle of key revision REV (default: the one before the current) as a new revision
  watch [-site S]                                print the config keys, then config and status changes as they happen

Every command takes the NATS options: -config FILE (a ferry.yaml: its uplink.nats connection and fleet block) or -server URLS [-creds FILE] [-user U -password P] [-tls-ca FILE -tls-cert FILE -tls-key FILE], and -domain / -api-prefix, -config-bucket, -status-bucket.
`)
		if len(args) == 0 {
			return usageError("want a fleet command")
		}
		if args[0] == "-h" || args[0] == "help" {
			return flag.ErrHelp
		}
		return usageError("unknown fleet command %q", args[0])
	}
	return subs[args[0]](ctx, args[1:], stdout, stderr)
}

// fleetConn holds the NATS options every fleet command takes.
type fleetConn struct {
	cfgPath, servers, creds, user, password, ca, cert, key, domain, apiPrefix string
	cfgBucket, stBucket                                                       string

	fleet fleet.Config
}

func (c *fleetConn) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.cfgPath, "config", "", "ferry configuration to take uplink.nats (servers, credentials, TLS) and the fleet block from")
	fs.StringVar(&c.servers, "server", "", "NATS server URL(s), comma-separated (instead of, or overriding, -config)")
	fs.StringVar(&c.creds, "creds", "", "NATS credentials file")
	fs.StringVar(&c.user, "user", "", "NATS user (with -password)")
	fs.StringVar(&c.password, "password", "", "NATS password")
	fs.StringVar(&c.ca, "tls-ca", "", "PEM file of the CAs of the server's certificate")
	fs.StringVar(&c.cert, "tls-cert", "", "PEM client certificate (with -tls-key)")
	fs.StringVar(&c.key, "tls-key", "", "PEM client key")
	fs.StringVar(&c.domain, "domain", "", "JetStream domain of the buckets")
	fs.StringVar(&c.apiPrefix, "api-prefix", "", "JetStream API prefix of the buckets (instead of -domain)")
	fs.StringVar(&c.cfgBucket, "config-bucket", "", "config bucket (default ferry_config, or the -config file's)")
	fs.StringVar(&c.stBucket, "status-bucket", "", "status bucket (default ferry_status, or the -config file's)")
}

// connect opens the connection and the JetStream context the options say.
func (c *fleetConn) connect(stderr io.Writer) (*nats.Conn, jetstream.JetStream, error) {
	nc := uplink.DefaultNATSConfig()
	c.fleet = fleet.DefaultConfig()
	if c.cfgPath != "" {
		cfg, err := gateway.LoadConfig(c.cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return nil, nil, &exitError{code: 1, err: fmt.Errorf("%s is not valid", c.cfgPath)}
		}
		if cfg.Uplink.NATS == nil {
			return nil, nil, &exitError{code: 1, err: fmt.Errorf("%s has no uplink.nats section", c.cfgPath)}
		}
		nc = *cfg.Uplink.NATS
		if cfg.Fleet != nil {
			c.fleet = *cfg.Fleet
		}
	}
	if c.servers != "" {
		nc.URLs = strings.Split(c.servers, ",")
	}
	if len(nc.URLs) == 0 {
		return nil, nil, usageError("give -server URL or -config FILE")
	}
	if c.creds != "" {
		nc.Creds = c.creds
	}
	if c.user != "" {
		nc.User, nc.Password = c.user, setting.Secret(c.password)
	}
	if c.ca != "" || c.cert != "" {
		nc.TLS = &uplink.TLSConfig{CA: c.ca, Cert: c.cert, Key: c.key}
	}
	if c.domain != "" {
		c.fleet.Domain, c.fleet.APIPrefix = c.domain, ""
	}
	if c.apiPrefix != "" {
		c.fleet.APIPrefix, c.fleet.Domain = c.apiPrefix, ""
	}
	if c.cfgBucket != "" {
		c.fleet.ConfigBucket = c.cfgBucket
	}
	if c.stBucket != "" {
		c.fleet.StatusBucket = c.stBucket
	}
	conn, err := uplink.Connect(nc, "ferry fleet", nats.MaxReconnects(0))
	if err != nil {
		return nil, nil, err
	}
	js, err := c.fleet.JetStream(conn)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, js, nil
}

// bucket opens a bucket; create makes it when missing.
// open connects and opens the config and status buckets, creating them
// when create is set (push). The caller closes the connection.
func (c *fleetConn) open(ctx context.Context, stderr io.Writer, create bool) (conn *nats.Conn, cfgKV, stKV jetstream.KeyValue, err error) {
	conn, js, err := c.connect(stderr)
	if err != nil {
		return nil, nil, nil, err
	}
	if cfgKV, err = c.bucket(ctx, js, c.fleet.ConfigBucket, create); err == nil {
		stKV, err = c.bucket(ctx, js, c.fleet.StatusBucket, create)
	}
	if err != nil {
		conn.Close()
		return nil, nil, nil, err
	}
	return conn, cfgKV, stKV, nil
}

func (c *fleetConn) bucket(ctx context.Context, js jetstream.JetStream, name string, create bool) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) && create {
		cfg := jetstream.KeyValueConfig{Bucket: name, Description: "ferry fleet"}
		if name == c.fleet.ConfigBucket {
			cfg.History, cfg.MaxValueSize = 32, int32(c.fleet.MaxBundleBytes)
		}
		kv, err = js.CreateKeyValue(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", name, err)
	}
	return kv, nil
}

// readBundleFiles reads PATH: a main file, or a directory holding
// ferry.yaml and the device files under it.
func readBundleFiles(path string) (map[string]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	files := map[string]string{}
	if !fi.IsDir() {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		files[fleet.MainFile] = string(b)
		return files, nil
	}
	err = filepath.WalkDir(path, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := e.Name()
		if e.IsDir() {
			if p != path && strings.HasPrefix(name, ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasPrefix(name, ".") || !(strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) {
			return nil
		}
		rel, err := filepath.Rel(path, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	return files, err
}

// validateBundle loads the bundle merged as the gateway would, with a
// stand-in local file for site and gw, with the code of `ferry validate`.
func validateBundle(gw, site *fleet.Bundle, siteName, gwName string) error {
	m, err := fleet.Merge(gw, site)
	if err != nil || m == nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "ferry-fleet-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	store, err := fleet.OpenStore(tmp)
	if err != nil {
		return err
	}
	dir, err := store.Stage(m)
	if err != nil {
		return err
	}
	localPath := filepath.Join(tmp, "local.yaml")
	local := fmt.Sprintf("gateway: {id: %s, site: %s}\ndata_dir: %s\nuplink: {nats: {urls: [\"nats://127.0.0.1:4222\"]}}\nfleet: {}\n", gwName, siteName, tmp)
	if err := os.WriteFile(localPath, []byte(local), 0o600); err != nil {
		return err
	}
	lc, err := gateway.LoadConfig(localPath)
	if err != nil {
		return err
	}
	_, err = config.LoadFleet(dir, lc, gateway.Protocols)
	return err
}

func fleetPush(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fleet push", stderr)
	var c fleetConn
	c.flags(fs)
	site := fs.String("site", "", "site of the gateway (required)")
	gw := fs.String("gateway", "", "gateway id (omit to push the site-wide bundle)")
	expect := fs.Uint64("expect", 0, "key revision the key must still be at (from status, diff or a previous push); 0: the one read just before writing")
	comment := fs.String("m", "", "comment stored with the bundle")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *site == "" {
		return usageError("usage: ferry fleet push -site S [-gateway G] PATH")
	}
	files, err := readBundleFiles(fs.Arg(0))
	if err != nil {
		return err
	}
	conn, kv, _, err := c.open(ctx, stderr, true)
	if err != nil {
		return err
	}
	defer conn.Close()
	key := fleet.SiteKey(*site)
	if *gw != "" {
		key = fleet.Key(*site, *gw)
	}
	cur, err := kv.Get(ctx, key)
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	b := &fleet.Bundle{Format: fleet.BundleFormat, Revision: 1, Comment: *comment, Files: files}
	var kvRev uint64
	if cur != nil {
		kvRev = cur.Revision()
		if old, err := fleet.DecodeBundle(cur.Value(), 0); err == nil {
			b.Revision = old.Revision + 1
		}
	}
	if *expect != 0 && *expect != kvRev {
		return &exitError{code: 1, err: fmt.Errorf("%s is at key revision %d, not %d: someone pushed meanwhile (see ferry fleet diff)", key, kvRev, *expect)}
	}
	// Validate locally first, merged with the other key as the gateway
	// will merge it.
	var gwB, siteB *fleet.Bundle = b, nil
	other := fleet.SiteKey(*site)
	if *gw == "" {
		gwB, siteB = nil, b
	}
	if *gw != "" {
		if e, err := kv.Get(ctx, other); err == nil {
			siteB, _ = fleet.DecodeBundle(e.Value(), 0)
		}
	}
	name := *gw
	if name == "" {
		name = "site-check"
	}
	if _, hasMain := files[fleet.MainFile]; hasMain || *gw != "" {
		if err := validateBundle(gwB, siteB, *site, name); err != nil {
			fmt.Fprintln(stderr, err)
			return &exitError{code: 1, err: fmt.Errorf("%s is not valid: nothing pushed", fs.Arg(0))}
		}
	}
	v, err := b.Encode()
	if err != nil {
		return err
	}
	if int64(len(v)) > int64(c.fleet.MaxBundleBytes) {
		return &exitError{code: 1, err: fmt.Errorf("bundle is %d bytes, over max_bundle_bytes %d: nothing pushed", len(v), c.fleet.MaxBundleBytes)}
	}
	var rev uint64
	if cur == nil {
		rev, err = kv.Create(ctx, key, v)
	} else {
		rev, err = kv.Update(ctx, key, v, kvRev)
	}
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("write %s (compare-and-set on key revision %d): %w", key, kvRev, err)}
	}
	fmt.Fprintf(stdout, "pushed %s: bundle revision %d, key revision %d, %d files\n", key, b.Revision, rev, len(files))
	return nil
}

// statuses reads every status of the bucket (of site, when set).
func statuses(ctx context.Context, kv jetstream.KeyValue, site string) ([]fleet.Status, error) {
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []fleet.Status
	for _, k := range keys {
		if site != "" && !strings.HasPrefix(k, site+".") {
			continue
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // deleted meanwhile
		}
		var st fleet.Status
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			st = fleet.Status{Gateway: k, Last: fleet.Applied{State: "unreadable", Reason: err.Error()}}
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Site+"."+out[i].Gateway < out[j].Site+"."+out[j].Gateway })
	return out, nil
}

func fleetStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fleet status", stderr)
	var c fleetConn
	c.flags(fs)
	site := fs.String("site", "", "only this site's gateways")
	asJSON := fs.Bool("json", false, "print the status values as JSON, one per line")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	conn, cfgKV, kv, err := c.open(ctx, stderr, false)
	if err != nil {
		return err
	}
	defer conn.Close()
	sts, err := statuses(ctx, kv, *site)
	if err != nil {
		return err
	}
	if *asJSON {
		for _, st := range sts {
			b, _ := json.Marshal(st)
			fmt.Fprintf(stdout, "%s\n", b)
		}
		return nil
	}
	now := time.Now()
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SITE\tGATEWAY\tSTATE\tDESIRED\tRUNNING\tDEVICES\tBACKLOG\tLAG\tUPLINK\tALERTS\tSEEN\tSTALE\tREASON")
	for _, st := range sts {
		desired := "-"
		if e, err := cfgKV.Get(ctx, fleet.Key(st.Site, st.Gateway)); err == nil {
			if b, err := fleet.DecodeBundle(e.Value(), 0); err == nil {
				desired = strconv.FormatUint(b.Revision, 10)
			} else {
				desired = "bad"
			}
		}
		running := "local"
		if st.Running != nil {
			running = strconv.FormatUint(st.Running.Revision, 10)
			if st.Running.SiteRevision > 0 {
				running += "+site" + strconv.FormatUint(st.Running.SiteRevision, 10)
			}
		}
		up := "off"
		if st.Uplink.Configured {
			up = map[bool]string{true: "up", false: "down"}[st.Uplink.Connected]
		}
		stale := map[bool]string{true: "yes", false: "no"}[st.Stale(now)]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s ago\t%s\t%s\n",
			st.Site, st.Gateway, st.Last.State, desired, running, deviceCounts(st.Devices), st.Backlog,
			(time.Duration(st.Uplink.Lag) * time.Second).String(), up, st.AlertsActive,
			now.Sub(st.Time).Round(time.Second), stale, st.Last.Reason)
	}
	return tw.Flush()
}

func deviceCounts(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, s := range []string{"connected", "connecting", "lost", "not_running"} {
		if m[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", m[s], s))
		}
	}
	return strings.Join(parts, ", ")
}

// gatewayArg reads the G argument and -site: "G" with -site S, or "S.G".
func gatewayArg(fs *flag.FlagSet, site string, n int) (string, string, error) {
	if fs.NArg() < 1 || fs.NArg() > n {
		return "", "", usageError("want a gateway (G with -site S, or S.G)")
	}
	g := fs.Arg(0)
	if s, rest, ok := strings.Cut(g, "."); ok && site == "" {
		return s, rest, nil
	}
	if site == "" {
		return "", "", usageError("give -site S, or name the gateway S.G")
	}
	return site, g, nil
}

func fleetDiff(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fleet diff", stderr)
	var c fleetConn
	c.flags(fs)
	siteF := fs.String("site", "", "site of the gateway")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	site, gw, err := gatewayArg(fs, *siteF, 1)
	if err != nil {
		return err
	}
	conn, cfgKV, stKV, err := c.open(ctx, stderr, false)
	if err != nil {
		return err
	}
	defer conn.Close()
	key := fleet.Key(site, gw)
	desired, err := cfgKV.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("desired %s: %w", key, err)
	}
	want, err := fleet.DecodeBundle(desired.Value(), 0)
	if err != nil {
		return fmt.Errorf("desired %s (key revision %d): %w", key, desired.Revision(), err)
	}
	var st fleet.Status
	if e, err := stKV.Get(ctx, key); err == nil {
		_ = json.Unmarshal(e.Value(), &st)
	}
	fmt.Fprintf(stdout, "desired: bundle revision %d (key revision %d)\n", want.Revision, desired.Revision())
	if st.Running == nil {
		fmt.Fprintf(stdout, "running: the local file (no bundle applied); last result %s %s\n", st.Last.State, st.Last.Reason)
		return nil
	}
	fmt.Fprintf(stdout, "running: bundle revision %d (hash %s); last result %s %s\n", st.Running.Revision, st.Running.Hash, st.Last.State, st.Last.Reason)
	if st.Running.Revision == want.Revision {
		fmt.Fprintln(stdout, "in step")
		return nil
	}
	hist, err := cfgKV.History(ctx, key)
	if err != nil {
		return err
	}
	var have *fleet.Bundle
	for _, e := range hist {
		if b, err := fleet.DecodeBundle(e.Value(), 0); err == nil && b.Revision == st.Running.Revision {
			have = b
		}
	}
	if have == nil {
		fmt.Fprintf(stdout, "revision %d is no longer in the key's history: no file diff\n", st.Running.Revision)
		return nil
	}
	diffBundles(stdout, have, want)
	return nil
}

// diffBundles prints the files that differ, as line diffs from a (running)
// to b (desired).
func diffBundles(w io.Writer, a, b *fleet.Bundle) {
	names := map[string]bool{}
	for n := range a.Files {
		names[n] = true
	}
	for n := range b.Files {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		if a.Files[n] == b.Files[n] {
			continue
		}
		fmt.Fprintf(w, "--- running/%s\n+++ desired/%s\n", n, n)
		for _, l := range lineDiff(splitLines(a.Files[n]), splitLines(b.Files[n])) {
			fmt.Fprintln(w, l)
		}
	}
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// lineDiff is a longest-common-subsequence diff: lines of a only
// prefixed "-", of b only "+", common " ". Bundles are small.
func lineDiff(a, b []string) []string {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < n && j < m {
		switch {
		case a[i] == b[j]:
			out = append(out, " "+a[i])
			i++
			j++
		case lcs[i+1][j] >= lcs[i][j+1]:
			out = append(out, "-"+a[i])
			i++
		default:
			out = append(out, "+"+b[j])
			j++
		}
	}
	for ; i < n; i++ {
		out = append(out, "-"+a[i])
	}
	for ; j < m; j++ {
		out = append(out, "+"+b[j])
	}
	return out
}

func fleetRollback(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fleet rollback", stderr)
	var c fleetConn
	c.flags(fs)
	siteF := fs.String("site", "", "site of the gateway")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	site, gw, err := gatewayArg(fs, *siteF, 2)
	if err != nil {
		return err
	}
	var to uint64
	if fs.NArg() == 2 {
		if to, err = strconv.ParseUint(fs.Arg(1), 10, 64); err != nil || to == 0 {
			return usageError("REV %q: want a key revision (see ferry fleet diff / watch)", fs.Arg(1))
		}
	}
	conn, kv, _, err := c.open(ctx, stderr, false)
	if err != nil {
		return err
	}
	defer conn.Close()
	key := fleet.Key(site, gw)
	hist, err := kv.History(ctx, key)
	if err != nil {
		return fmt.Errorf("history of %s: %w", key, err)
	}
	cur := hist[len(hist)-1]
	var from jetstream.KeyValueEntry
	for i := len(hist) - 1; i >= 0; i-- {
		e := hist[i]
		if e.Operation() != jetstream.KeyValuePut {
			continue
		}
		if (to == 0 && e.Revision() < cur.Revision()) || e.Revision() == to {
			from = e
			break
		}
	}
	if from == nil {
		if to == 0 {
			return &exitError{code: 1, err: fmt.Errorf("%s has no earlier revision in its history", key)}
		}
		return &exitError{code: 1, err: fmt.Errorf("key revision %d of %s is not in its history", to, key)}
	}
	old, err := fleet.DecodeBundle(from.Value(), 0)
	if err != nil {
		return fmt.Errorf("key revision %d: %w", from.Revision(), err)
	}
	next := old.Revision + 1
	if c, err := fleet.DecodeBundle(cur.Value(), 0); err == nil && cur.Operation() == jetstream.KeyValuePut {
		next = c.Revision + 1
	}
	b := &fleet.Bundle{Format: fleet.BundleFormat, Revision: next, Files: old.Files,
		Comment: fmt.Sprintf("rollback to key revision %d (bundle revision %d)", from.Revision(), old.Revision)}
	v, err := b.Encode()
	if err != nil {
		return err
	}
	rev, err := kv.Update(ctx, key, v, cur.Revision())
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("write %s (compare-and-set on key revision %d): %w", key, cur.Revision(), err)}
	}
	fmt.Fprintf(stdout, "rolled %s back to the files of key revision %d: bundle revision %d, key revision %d\n", key, from.Revision(), next, rev)
	return nil
}

func fleetWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fleet watch", stderr)
	var c fleetConn
	c.flags(fs)
	site := fs.String("site", "", "only this site's keys")
	count := fs.Int("n", 0, "exit after this many changes (0: until interrupted)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	conn, cfgKV, stKV, err := c.open(ctx, stderr, false)
	if err != nil {
		return err
	}
	defer conn.Close()
	filter := ">"
	if *site != "" {
		filter = *site + ".>"
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cw, err := cfgKV.Watch(wctx, filter)
	if err != nil {
		return err
	}
	sw, err := stKV.Watch(wctx, filter, jetstream.UpdatesOnly())
	if err != nil {
		return err
	}
	var lastState = map[string]string{}
	for n := 0; *count == 0 || n < *count; {
		select {
		case <-ctx.Done():
			return nil
		case e := <-cw.Updates():
			if e == nil {
				continue
			}
			line := fmt.Sprintf("%s config %s key revision %d %s", e.Created().UTC().Format(time.RFC3339), e.Key(), e.Revision(), opName(e.Operation()))
			if b, err := fleet.DecodeBundle(e.Value(), 0); err == nil {
				line += fmt.Sprintf(" bundle revision %d %s", b.Revision, b.Comment)
			}
			fmt.Fprintln(stdout, strings.TrimSpace(line))
			n++
		case e := <-sw.Updates():
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var st fleet.Status
			if json.Unmarshal(e.Value(), &st) != nil {
				continue
			}
			// A heartbeat that changes nothing is not a change.
			sum := fmt.Sprintf("%s %d %s %s %v", st.Last.State, st.Last.Revision, st.Last.Reason, deviceCounts(st.Devices), st.Uplink.Connected)
			if lastState[e.Key()] == sum {
				continue
			}
			lastState[e.Key()] = sum
			fmt.Fprintf(stdout, "%s status %s %s revision %d devices %s uplink %v %s\n", st.Time.UTC().Format(time.RFC3339), e.Key(), st.Last.State, st.Last.Revision, deviceCounts(st.Devices), st.Uplink.Connected, st.Last.Reason)
			n++
		}
	}
	return nil
}

func opName(op jetstream.KeyValueOp) string {
	switch op {
	case jetstream.KeyValuePut:
		return "put"
	case jetstream.KeyValueDelete:
		return "delete"
	case jetstream.KeyValuePurge:
		return "purge"
	}
	return op.String()
}
