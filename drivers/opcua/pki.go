package opcua

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gopcua/opcua/ua"
)

// The PKI layout under <data_dir>/pki.
const (
	ownDir      = "own"
	trustedDir  = "trusted"
	rejectedDir = "rejected"
	ownCertFile = "cert.der"
	ownKeyFile  = "key.pem"
)

// ownValidity is the lifetime of a generated application certificate.
const ownValidity = 10 * 365 * 24 * time.Hour

// PKI is ferry's certificate store for OPC UA, a directory (normally
// <data_dir>/pki) holding
//
//	own/cert.der, own/key.pem   the gateway's application instance certificate and key
//	trusted/                    server certificates (or their CAs) ferry accepts
//	rejected/                   server certificates ferry refused, for review
//
// A server certificate is accepted when it is in trusted/ or was issued
// by a CA certificate in trusted/. Files in trusted/ may be DER or PEM.
// The store is read again on every connect, so a certificate trusted
// with [PKI.Trust] (`ferry pki trust`) is used at the next retry without a
// restart.
type PKI struct {
	Dir string
	// Now is the clock for validity checks (nil: time.Now).
	Now func() time.Time
}

// NewPKI returns the store of dataDir (<dataDir>/pki). It does no I/O.
func NewPKI(dataDir string) *PKI { return &PKI{Dir: filepath.Join(dataDir, "pki")} }

func (p *PKI) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// Identity is the gateway's application instance certificate.
type Identity struct {
	Cert []byte // DER
	Key  *rsa.PrivateKey
	// ApplicationURI is the URI in the certificate's SAN, which ferry
	// sends as its application URI.
	ApplicationURI string
	NotAfter       time.Time
	Path           string
}

// ownMu serialises certificate generation between the drivers of one
// process; the directory rename below does so between processes.
var ownMu sync.Mutex

// Own loads the gateway's certificate, creating it on first use with
// appURI in its subject alternative name. When an existing certificate
// carries another URI, that URI is kept (the servers trust that
// certificate); the caller compares and warns.
func (p *PKI) Own(appURI, gateway string) (*Identity, error) {
	ownMu.Lock()
	defer ownMu.Unlock()
	dir := filepath.Join(p.Dir, ownDir)
	id, err := loadOwn(dir)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return id, err
	}
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create pki directory: %w", err)
	}
	tmp, err := os.MkdirTemp(p.Dir, ".own-")
	if err != nil {
		return nil, fmt.Errorf("create pki directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	cert, key, err := generateCert(appURI, gateway, p.now())
	if err != nil {
		return nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := writeFileSync(filepath.Join(tmp, ownKeyFile), keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeFileSync(filepath.Join(tmp, ownCertFile), cert, 0o644); err != nil {
		return nil, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another process made it first: use theirs.
		if id, lerr := loadOwn(dir); lerr == nil {
			return id, nil
		}
		return nil, fmt.Errorf("install %s: %w", dir, err)
	}
	return loadOwn(dir)
}

func loadOwn(dir string) (*Identity, error) {
	certPath := filepath.Join(dir, ownCertFile)
	der, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	keyPath := filepath.Join(dir, ownKeyFile)
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s exists but its key %s is missing; remove %s to make a new certificate", certPath, keyPath, dir)
		}
		return nil, err
	}
	certs, err := parseCerts(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	key, err := parseRSAKey(kb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	pub, ok := certs[0].PublicKey.(*rsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("%s does not belong to %s; remove %s to make a new certificate", keyPath, certPath, dir)
	}
	id := &Identity{Cert: certs[0].Raw, Key: key, NotAfter: certs[0].NotAfter, Path: certPath}
	if len(certs[0].URIs) > 0 {
		id.ApplicationURI = certs[0].URIs[0].String()
	}
	return id, nil
}

func generateCert(appURI, gateway string, now time.Time) ([]byte, *rsa.PrivateKey, error) {
	u, err := url.Parse(appURI)
	if err != nil || u.Scheme == "" {
		return nil, nil, fmt.Errorf("application URI %q is not a URI", appURI)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	cn := "ferry"
	if gateway != "" {
		cn = "ferry " + gateway
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"ferry"}},
		NotBefore:    now.Add(-time.Hour), // tolerate a server clock slightly behind
		NotAfter:     now.Add(ownValidity),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment |
			x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
	}
	if host != "" {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	return der, key, nil
}

// CertificateError is returned when a server certificate is refused. It
// unwraps to the OPC UA status (ua.StatusBadCertificateUntrusted,
// ua.StatusBadCertificateTimeInvalid or ua.StatusBadCertificateInvalid).
type CertificateError struct {
	Status     ua.StatusCode
	Subject    string
	Thumbprint string // SHA-1, hex, as OPC UA tools show it
	NotBefore  time.Time
	NotAfter   time.Time
	// Rejected is where an untrusted certificate was saved.
	Rejected string
	// TrustedDir is the directory of trusted certificates.
	TrustedDir string
	Err        error
}

func (e *CertificateError) Error() string {
	switch e.Status {
	case ua.StatusBadCertificateUntrusted:
		return fmt.Sprintf("server certificate %q (thumbprint %s) is not trusted (BadCertificateUntrusted); "+
			"it was saved as %s: if it is this server's certificate, trust it with `ferry pki trust %s` "+
			"(or move the file into %s); ferry retries on its own",
			e.Subject, e.Thumbprint, e.Rejected, e.Rejected, e.TrustedDir)
	case ua.StatusBadCertificateTimeInvalid:
		return fmt.Sprintf("server certificate %q (thumbprint %s) is valid from %s to %s, not now (BadCertificateTimeInvalid); "+
			"renew it on the server or check the clocks",
			e.Subject, e.Thumbprint, e.NotBefore.Format(time.DateOnly), e.NotAfter.Format(time.DateOnly))
	}
	return fmt.Sprintf("server certificate is invalid (%s): %v", StatusName(e.Status), e.Err)
}

// Unwrap returns the OPC UA status.
func (e *CertificateError) Unwrap() error { return e.Status }

// Check accepts or refuses a server certificate (DER, possibly followed
// by its chain). A refused certificate that is merely unknown is copied
// to rejected/ and the error says how to trust it.
func (p *PKI) Check(serverCert []byte) error {
	certs, err := parseCerts(serverCert)
	if err != nil {
		return &CertificateError{Status: ua.StatusBadCertificateInvalid, Err: err}
	}
	leaf := certs[0]
	ce := &CertificateError{
		Subject: subjectName(leaf), Thumbprint: Thumbprint(leaf.Raw),
		NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
		TrustedDir: filepath.Join(p.Dir, trustedDir),
	}
	trusted, err := p.trusted()
	if err != nil {
		return err
	}
	now := p.now()
	for _, t := range trusted {
		if bytes.Equal(t.Raw, leaf.Raw) {
			if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
				ce.Status = ua.StatusBadCertificateTimeInvalid
				return ce
			}
			return nil
		}
	}
	roots := x509.NewCertPool()
	cas := 0
	for _, t := range trusted {
		if t.IsCA {
			roots.AddCert(t)
			cas++
		}
	}
	if cas > 0 {
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err == nil {
			return nil
		}
		var ie x509.CertificateInvalidError
		if errors.As(err, &ie) && ie.Reason == x509.Expired {
			ce.Status = ua.StatusBadCertificateTimeInvalid
			return ce
		}
	}
	ce.Status = ua.StatusBadCertificateUntrusted
	path, err := p.reject(leaf)
	if err != nil {
		return fmt.Errorf("server certificate %q is not trusted, and saving it failed: %w", ce.Subject, err)
	}
	ce.Rejected = path
	return ce
}

// reject saves c in rejected/ (once) and returns its path.
func (p *PKI) reject(c *x509.Certificate) (string, error) {
	dir := filepath.Join(p.Dir, rejectedDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, certFileName(c))
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, c.Raw) {
		return path, nil
	}
	return path, writeFileSync(path, c.Raw, 0o644)
}

// trusted returns every certificate in trusted/.
func (p *PKI) trusted() ([]*x509.Certificate, error) {
	entries, err := p.read(trustedDir)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for _, e := range entries {
		if e.Err == nil {
			out = append(out, e.certs...)
		}
	}
	return out, nil
}

// CertInfo describes one certificate file of the store.
type CertInfo struct {
	Path           string
	Subject        string
	ApplicationURI string
	Thumbprint     string
	NotAfter       time.Time
	IsCA           bool
	// Err is set when the file is not a certificate.
	Err   error
	certs []*x509.Certificate
}

func (p *PKI) read(sub string) ([]CertInfo, error) {
	dir := filepath.Join(p.Dir, sub)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []CertInfo
	for _, e := range ents {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		ci := CertInfo{Path: path}
		b, err := os.ReadFile(path)
		if err == nil {
			ci.certs, err = parseCerts(b)
		}
		if err != nil {
			ci.Err = err
		} else {
			c := ci.certs[0]
			ci.Subject, ci.Thumbprint, ci.NotAfter, ci.IsCA = subjectName(c), Thumbprint(c.Raw), c.NotAfter, c.IsCA
			if len(c.URIs) > 0 {
				ci.ApplicationURI = c.URIs[0].String()
			}
		}
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// Listing is the content of the store.
type Listing struct {
	Own      *CertInfo
	Trusted  []CertInfo
	Rejected []CertInfo
}

// List reads the store.
func (p *PKI) List() (Listing, error) {
	var l Listing
	var err error
	own, err := p.read(ownDir)
	if err != nil {
		return l, err
	}
	for i := range own {
		if filepath.Base(own[i].Path) == ownCertFile {
			l.Own = &own[i]
		}
	}
	if l.Trusted, err = p.read(trustedDir); err != nil {
		return l, err
	}
	l.Rejected, err = p.read(rejectedDir)
	return l, err
}

// Trust copies the certificate in file (DER or PEM; typically one from
// rejected/) into trusted/ and removes it from rejected/. It returns the
// path written. This is what `ferry pki trust FILE` runs.
func (p *PKI) Trust(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	certs, err := parseCerts(b)
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	dir := filepath.Join(p.Dir, trustedDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, certFileName(certs[0]))
	if err := writeFileSync(dst, certs[0].Raw, 0o644); err != nil {
		return "", err
	}
	// A file from rejected/ is moved, not copied.
	rej, _ := filepath.Abs(filepath.Join(p.Dir, rejectedDir))
	if abs, err := filepath.Abs(file); err == nil && filepath.Dir(abs) == rej {
		if err := os.Remove(abs); err != nil {
			return dst, err
		}
	}
	return dst, nil
}

// Thumbprint returns the SHA-1 thumbprint of a DER certificate in hex,
// the form OPC UA tools display.
func Thumbprint(der []byte) string {
	s := sha1.Sum(der)
	return hex.EncodeToString(s[:])
}

func subjectName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return c.Subject.String()
}

// certFileName is "<common name>_<thumbprint>.der" with the name reduced
// to characters safe in a shell.
func certFileName(c *x509.Certificate) string {
	var b strings.Builder
	for _, r := range subjectName(c) {
		if b.Len() >= 48 {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		b.WriteString("cert")
	}
	return b.String() + "_" + Thumbprint(c.Raw) + ".der"
}

// parseCerts reads one or more certificates, DER (concatenated) or PEM.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	if bytes.Contains(b, []byte("-----BEGIN")) {
		var der []byte
		rest := b
		for {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			if blk.Type == "CERTIFICATE" {
				der = append(der, blk.Bytes...)
			}
		}
		if der == nil {
			return nil, errors.New("no CERTIFICATE block in PEM data")
		}
		b = der
	}
	certs, err := x509.ParseCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("not a certificate: %w", err)
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	return certs, nil
}

// parseRSAKey reads an RSA private key, PEM (PKCS#1 or PKCS#8) or DER.
func parseRSAKey(b []byte) (*rsa.PrivateKey, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		b = blk.Bytes
	}
	if k, err := x509.ParsePKCS1PrivateKey(b); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(b)
	if err != nil {
		return nil, errors.New("not an RSA private key (PKCS#1 or PKCS#8, PEM or DER)")
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T; OPC UA needs RSA", k)
	}
	return rk, nil
}

// writeFileSync writes a file atomically (temp file, fsync, rename).
func writeFileSync(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
