package opcua

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
)

func TestOwnCertificate(t *testing.T) {
	p := NewPKI(t.TempDir())
	var wg sync.WaitGroup
	ids := make([]*Identity, 4)
	errs := make([]error, 4)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i], errs[i] = p.Own("urn:ferry:gw1", "gw1")
		}()
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if string(ids[i].Cert) != string(ids[0].Cert) {
			t.Fatal("concurrent first starts made different certificates")
		}
	}
	id := ids[0]
	c, err := x509.ParseCertificate(id.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "urn:ferry:gw1" || id.ApplicationURI != "urn:ferry:gw1" {
		t.Errorf("URIs %v", c.URIs)
	}
	if c.Subject.CommonName != "ferry gw1" || c.PublicKey.(interface{ Size() int }).Size() != 256 {
		t.Errorf("subject %q", c.Subject)
	}
	if c.KeyUsage&x509.KeyUsageDataEncipherment == 0 || c.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		t.Errorf("key usage %v", c.KeyUsage)
	}
	st, err := os.Stat(filepath.Join(p.Dir, "own", "key.pem"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v %v", st.Mode(), err)
	}
	// Kept on the next start, also when the configured URI changed.
	again, err := p.Own("urn:ferry:renamed", "renamed")
	if err != nil || string(again.Cert) != string(id.Cert) || again.ApplicationURI != "urn:ferry:gw1" {
		t.Errorf("second load: %v %q", err, again.ApplicationURI)
	}
	// A key that does not match the certificate is an error, not a silent
	// new identity.
	other, _ := selfSigned(t, "x", "", false, nil, nil, time.Now().Add(time.Hour))
	os.WriteFile(filepath.Join(p.Dir, "own", "cert.der"), other, 0o644)
	if _, err := NewPKI(filepath.Dir(p.Dir)).Own("urn:ferry:gw1", ""); err == nil {
		t.Error("mismatched key accepted")
	}
}

func TestCheckServerCertificate(t *testing.T) {
	exact, _ := selfSigned(t, "plc", "urn:plc", false, nil, nil, time.Now().Add(time.Hour))
	expired, _ := selfSigned(t, "old plc", "urn:old", false, nil, nil, time.Now().Add(-time.Minute))
	caDER, caKey := selfSigned(t, "plant CA", "", true, nil, nil, time.Now().Add(time.Hour))
	ca, _ := x509.ParseCertificate(caDER)
	issued, _ := selfSigned(t, "issued plc", "urn:issued", false, ca, caKey, time.Now().Add(time.Hour))
	stranger, _ := selfSigned(t, "stranger", "urn:stranger", false, nil, nil, time.Now().Add(time.Hour))

	dir := t.TempDir()
	p := NewPKI(dir)
	trusted := filepath.Join(p.Dir, "trusted")
	os.MkdirAll(trusted, 0o755)
	os.WriteFile(filepath.Join(trusted, "plc.der"), exact, 0o644)
	os.WriteFile(filepath.Join(trusted, "old.der"), expired, 0o644)
	os.WriteFile(filepath.Join(trusted, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	os.WriteFile(filepath.Join(trusted, "notes.txt"), []byte("not a certificate"), 0o644)

	tests := []struct {
		name       string
		cert       []byte
		wantStatus error
	}{
		{"trusted", exact, nil},
		{"issued by a trusted CA", issued, nil},
		{"issued with its chain", append(append([]byte{}, issued...), caDER...), nil},
		{"expired", expired, ua.StatusBadCertificateTimeInvalid},
		{"unknown", stranger, ua.StatusBadCertificateUntrusted},
		{"garbage", []byte("nope"), ua.StatusBadCertificateInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.Check(tt.cert)
			if !errors.Is(err, tt.wantStatus) || (tt.wantStatus == nil) != (err == nil) {
				t.Fatalf("Check: %v, want %v", err, tt.wantStatus)
			}
		})
	}
	var ce *CertificateError
	if err := p.Check(stranger); !errors.As(err, &ce) || ce.Rejected == "" {
		t.Fatalf("no rejected path: %v", err)
	}
	b, err := os.ReadFile(ce.Rejected)
	if err != nil || string(b) != string(stranger) {
		t.Fatalf("rejected file: %v", err)
	}
	if filepath.Base(ce.Rejected) != "stranger_"+Thumbprint(stranger)+".der" {
		t.Errorf("rejected name %s", ce.Rejected)
	}
	l, err := p.List()
	if err != nil || len(l.Trusted) != 4 || len(l.Rejected) != 1 || l.Own != nil {
		t.Fatalf("List: %+v %v", l, err)
	}
	// Trusting it moves it from rejected/ to trusted/.
	if _, err := p.Trust(ce.Rejected); err != nil {
		t.Fatal(err)
	}
	if err := p.Check(stranger); err != nil {
		t.Errorf("after Trust: %v", err)
	}
	if l, _ := p.List(); len(l.Rejected) != 0 {
		t.Errorf("still rejected: %+v", l.Rejected)
	}
}
