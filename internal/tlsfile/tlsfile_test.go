package tlsfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-edge/ferry/internal/testutil"
)

func TestClient(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, "ferry test CA")
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	tc, err := Client(Files{CA: caFile, ServerName: "broker"})
	if err != nil {
		t.Fatal(err)
	}
	if tc.RootCAs == nil || tc.ServerName != "broker" || tc.MinVersion == 0 {
		t.Fatalf("config %+v", tc)
	}
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		f    Files
		want string
	}{
		{Files{CA: filepath.Join(dir, "missing.pem")}, "missing.pem"},
		{Files{CA: junk}, "holds no PEM certificate"},
		{Files{Cert: junk, Key: junk}, "cert " + junk},
		{Files{Key: junk}, "cert  / key"},
	} {
		if _, err := Client(c.f); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Client(%+v) = %v, want an error with %q", c.f, err, c.want)
		}
	}
}
