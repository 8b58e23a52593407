package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferry-edge/ferry/drivers/opcua"
	"github.com/ferry-edge/ferry/internal/gateway"
	"github.com/ferry-edge/ferry/internal/setting"
)

// pkiFlags are the flags that locate the data directory (and so the PKI).
type pkiFlags struct {
	dataDir string
	cfgPath string
	appURI  string
}

func (p *pkiFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.dataDir, "data-dir", "", "data directory holding pki/ (default: data_dir of -config, else /var/lib/ferry)")
	fs.StringVar(&p.cfgPath, "config", "", "take data_dir and gateway.id from this configuration file")
	fs.StringVar(&p.appURI, "app-uri", "", `application URI for a new certificate (default "urn:ferry:<gateway id>")`)
}

// resolve returns the data directory and gateway id to use.
func (p *pkiFlags) resolve() (dataDir, gatewayID string, err error) {
	dataDir = "/var/lib/ferry"
	if p.cfgPath != "" {
		c, err := gateway.LoadConfig(p.cfgPath)
		if err != nil {
			return "", "", err
		}
		dataDir, gatewayID = c.DataDir, c.Gateway.ID
	}
	if p.dataDir != "" {
		dataDir = p.dataDir
	}
	return dataDir, gatewayID, nil
}

func cmdOPCUA(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "browse" {
		fmt.Fprintf(stderr, "Usage: ferry opcua browse [flags] ENDPOINT [NODE]\n")
		if len(args) == 0 {
			return usageError("want a subcommand: browse")
		}
		if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			return flag.ErrHelp
		}
		return usageError("unknown subcommand %q (want browse)", args[0])
	}
	return cmdOPCUABrowse(ctx, args[1:], stdout, stderr)
}

func cmdOPCUABrowse(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("opcua browse", stderr)
	var (
		pf           pkiFlags
		policy       = fs.String("security-policy", "", "None, Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss (default: the strongest offered)")
		mode         = fs.String("security-mode", "SignAndEncrypt", "Sign or SignAndEncrypt")
		allow        = fs.Bool("allow-insecure", false, "permit security policy None")
		user         = fs.String("username", "", "log in with this user name")
		passwordFile = fs.String("password-file", "", "file holding the password (or set FERRY_OPCUA_PASSWORD)")
		certFile     = fs.String("user-cert", "", "log in with this X.509 user certificate (absolute path)")
		keyFile      = fs.String("user-key", "", "private key of -user-cert (absolute path)")
		timeout      = fs.Duration("timeout", 10*time.Second, "connect and request timeout")
		asYAML       = fs.Bool("yaml", false, "print a device map (YAML) of the variables instead of the table")
		depth        = fs.Int("depth", 1, "levels of objects and folders below NODE to follow (max 10)")
		devName      = fs.String("name", "device", "-yaml: the device's name")
	)
	pf.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: ferry opcua browse [flags] ENDPOINT [NODE]

Connects to ENDPOINT (opc.tcp://host:port) with the same security and trust
store as the daemon and lists the children of NODE (default: the Objects
folder, i=85) with node id, browse name, data type and value. NODE takes
the forms of a device map: ns=2;s=Line1, nsu=urn:plc;s=Line1, i=85, g=…, b=….

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		fs.Usage()
		return usageError("want ENDPOINT [NODE]")
	}
	if *depth < 1 || *depth > 10 {
		return usageError("-depth %d: want 1..10", *depth)
	}
	dataDir, gateway, err := pf.resolve()
	if err != nil {
		return err
	}
	var c opcua.Config
	c.SetDefaults()
	c.Endpoint = fs.Arg(0)
	c.SecurityPolicy, c.SecurityMode, c.AllowInsecure = *policy, *mode, *allow
	if *policy == "None" {
		c.SecurityMode = "None"
	}
	c.Timeouts.Connect, c.Timeouts.Request = *timeout, *timeout
	c.Auth = opcua.Auth{Username: *user, CertFile: *certFile, KeyFile: *keyFile}
	if *user != "" {
		pw := os.Getenv("FERRY_OPCUA_PASSWORD")
		if *passwordFile != "" {
			b, err := os.ReadFile(*passwordFile)
			if err != nil {
				return err
			}
			pw = strings.TrimRight(string(b), "\r\n")
		}
		c.Auth.Password = setting.Secret(pw)
	}
	node := ""
	if fs.NArg() == 2 {
		node = fs.Arg(1)
	}
	ctx, cancel := context.WithTimeout(ctx, 3**timeout)
	defer cancel()
	res, err := opcua.Browse(ctx, opcua.BrowseOptions{Config: c, Node: node, Depth: *depth, DataDir: dataDir, ApplicationURI: pf.appURI, Gateway: gateway})
	if err != nil {
		var fe *setting.FieldError
		if errors.As(err, &fe) {
			return usageError("%v", err)
		}
		if errors.Is(err, opcua.ErrInsecure) {
			return fmt.Errorf("%w (flags: -security-policy None -allow-insecure)", err)
		}
		return err
	}
	if *asYAML {
		return writeDeviceMap(stdout, *devName, c, node, res)
	}
	fmt.Fprintf(stdout, "%s (%s)\n\nnamespaces:\n", c.Endpoint, res.Endpoint)
	for i, ns := range res.Namespaces {
		fmt.Fprintf(stdout, "  ns=%d  %s\n", i, ns)
	}
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE ID\tCLASS\tBROWSE NAME\tDATA TYPE\tVALUE")
	for _, e := range res.Entries {
		name := e.BrowseName
		if len(e.Path) > 0 {
			name = strings.Join(e.Path, "/") + "/" + name
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.NodeID, e.NodeClass, name, e.DataType, e.Value)
	}
	tw.Flush()
	if len(res.Entries) == 0 {
		fmt.Fprintln(stdout, "(no child nodes)")
	}
	fmt.Fprintln(stdout, "\nIn a device map prefer node: \"nsu=<namespace URI>;s=…\": namespace indexes may change when the server restarts.")
	return nil
}

func cmdPKI(_ context.Context, args []string, stdout, stderr io.Writer) error {
	usage := func() {
		fmt.Fprintf(stderr, `Usage:
  ferry pki list [flags]         show ferry's certificate and the trusted and rejected server certificates
  ferry pki trust [flags] FILE   trust a server certificate (typically one from pki/rejected)
  ferry pki own [flags]          create ferry's certificate now (if missing) and show where it is,
                                 to give it to the server's administrator before the first connect
`)
	}
	if len(args) == 0 {
		usage()
		return usageError("want a subcommand: list, trust or own")
	}
	sub := args[0]
	fs := newFlags("pki "+sub, stderr)
	var pf pkiFlags
	pf.register(fs)
	fs.Usage = func() { usage(); fmt.Fprintf(stderr, "\nFlags:\n"); fs.PrintDefaults() }
	switch sub {
	case "list", "trust", "own":
	case "-h", "--help", "help":
		usage()
		return flag.ErrHelp
	default:
		usage()
		return usageError("unknown subcommand %q (want list, trust or own)", sub)
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	dataDir, gateway, err := pf.resolve()
	if err != nil {
		return err
	}
	p := opcua.NewPKI(dataDir)
	switch sub {
	case "trust":
		if fs.NArg() != 1 {
			return usageError("want one FILE")
		}
		dst, err := p.Trust(fs.Arg(0))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "trusted: %s\nferry uses it at its next connection attempt (no restart needed).\n", dst)
		return nil
	case "own":
		if fs.NArg() != 0 {
			return usageError("want no arguments")
		}
		uri := pf.appURI
		if uri == "" {
			uri = "urn:ferry:" + gateway
			if gateway == "" {
				h, _ := os.Hostname()
				uri = "urn:ferry:" + h
			}
		}
		id, err := p.Own(uri, gateway)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n  application URI %s, thumbprint %s, valid until %s\n",
			id.Path, id.ApplicationURI, opcua.Thumbprint(id.Cert), id.NotAfter.Format(time.DateOnly))
		return nil
	}
	if fs.NArg() != 0 {
		return usageError("want no arguments")
	}
	l, err := p.List()
	if err != nil {
		return err
	}
	if l.Own == nil {
		fmt.Fprintf(stdout, "own certificate: none yet in %s (made at the first secure connection, or by `ferry pki own`)\n",
			filepath.Join(p.Dir, "own"))
	} else {
		fmt.Fprintf(stdout, "own certificate:\n")
		printCerts(stdout, []opcua.CertInfo{*l.Own})
	}
	fmt.Fprintf(stdout, "\ntrusted (%s):\n", filepath.Join(p.Dir, "trusted"))
	printCerts(stdout, l.Trusted)
	fmt.Fprintf(stdout, "\nrejected (%s):\n", filepath.Join(p.Dir, "rejected"))
	printCerts(stdout, l.Rejected)
	if len(l.Rejected) > 0 {
		fmt.Fprintf(stdout, "\nCheck a rejected certificate's thumbprint against the server's, then: ferry pki trust FILE\n")
	}
	return nil
}

func printCerts(w io.Writer, certs []opcua.CertInfo) {
	if len(certs) == 0 {
		fmt.Fprintln(w, "  (none)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range certs {
		if c.Err != nil {
			fmt.Fprintf(tw, "  %s\t(%v)\n", c.Path, c.Err)
			continue
		}
		ca := ""
		if c.IsCA {
			ca = " (CA)"
		}
		fmt.Fprintf(tw, "  %s\t%q%s\t%s\tthumbprint %s\tuntil %s\n", c.Path, c.Subject, ca, c.ApplicationURI, c.Thumbprint, c.NotAfter.Format(time.DateOnly))
	}
	tw.Flush()
}
