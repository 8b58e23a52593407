// Package scripts holds the tests of the shell scripts in this folder:
// install.sh into a temporary root, from the source tree and from a
// release archive built by dist.sh.
package scripts

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildDir  string
)

// ferryBinary builds cmd/ferry once for the tests of this package.
func ferryBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "ferry-install-test-")
		if buildErr != nil {
			return
		}
		builtBin = filepath.Join(buildDir, "ferry")
		cmd := exec.Command(goTool(), "build", "-o", builtBin, "./cmd/ferry")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func goTool() string {
	if p := filepath.Join(build.Default.GOROOT, "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// run runs a script and returns its combined output and error.
func run(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{name}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(t, nil, name, args...)
	if err != nil {
		t.Fatalf("sh %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// newRoot returns a directory with the minimal /etc a user can be
// created in.
func newRoot(t *testing.T) string {
	t.Helper()
	r := t.TempDir()
	os.MkdirAll(filepath.Join(r, "etc"), 0o755)
	files := map[string]string{
		"etc/passwd":  "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":   "root:x:0:\ndialout:x:20:\n",
		"etc/shadow":  "root:*:19000:0:99999:7:::\n",
		"etc/gshadow": "root:*::\ndialout:*::\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(r, name), []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

type wantFile struct {
	path string
	mode os.FileMode
	same string // source file it must equal, relative to the repository
}

var installed = []wantFile{
	{"usr/bin/ferry", 0o755, ""},
	{"lib/systemd/system/ferry.service", 0o644, "systemd/ferry.service"},
	{"usr/lib/sysusers.d/ferry.conf", 0o644, "systemd/ferry.sysusers"},
	{"etc/ferry/ferry.yaml", 0o640, "configs/ferry.yaml"},
	{"etc/ferry/devices.d", 0o750 | os.ModeDir, ""},
	{"var/lib/ferry", 0o750 | os.ModeDir, ""},
	{"usr/share/doc/ferry/operations.md", 0o644, "docs/operations.md"},
	{"usr/share/doc/ferry/examples/ferry.yaml", 0o644, "configs/ferry.yaml"},
	{"usr/share/doc/ferry/examples/example.yaml", 0o644, "configs/example.yaml"},
	{"usr/share/doc/ferry/examples/devices.d/boiler.yaml", 0o644, "configs/devices.d/boiler.yaml"},
}

func checkInstalled(t *testing.T, root, binary string) {
	t.Helper()
	for _, w := range installed {
		fi, err := os.Stat(filepath.Join(root, w.path))
		if err != nil {
			t.Errorf("%s: %v", w.path, err)
			continue
		}
		if fi.Mode()&(os.ModeDir|os.ModePerm) != w.mode {
			t.Errorf("%s: mode %v, want %v", w.path, fi.Mode(), w.mode)
		}
		if w.same != "" {
			sameContent(t, filepath.Join(root, w.path), filepath.Join("..", w.same))
		}
	}
	sameContent(t, filepath.Join(root, "usr/bin/ferry"), binary)
	if os.Geteuid() != 0 {
		return
	}
	// As root, the maintainer scripts ran: the user and the owners.
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	group, _ := os.ReadFile(filepath.Join(root, "etc/group"))
	if n := strings.Count(string(passwd), "\nferry:"); n != 1 {
		t.Errorf("user ferry appears %d times in etc/passwd:\n%s", n, passwd)
	}
	if !strings.Contains(string(group), "dialout:x:20:ferry") {
		t.Errorf("ferry is not in dialout:\n%s", group)
	}
	uid, gid := ids(t, string(passwd), "ferry")
	for _, c := range []struct {
		path     string
		uid, gid uint32
	}{{"var/lib/ferry", uid, gid}, {"etc/ferry", 0, gid}, {"etc/ferry/ferry.yaml", 0, gid}, {"usr/bin/ferry", 0, 0}} {
		fi, err := os.Stat(filepath.Join(root, c.path))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != c.uid || st.Gid != c.gid {
			t.Errorf("%s owned by %d:%d, want %d:%d", c.path, st.Uid, st.Gid, c.uid, c.gid)
		}
	}
	if _, err := exec.LookPath("systemctl"); err == nil {
		if _, err := os.Lstat(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/ferry.service")); err != nil {
			t.Errorf("ferry.service not enabled: %v", err)
		}
	}
}

func ids(t *testing.T, passwd, user string) (uid, gid uint32) {
	t.Helper()
	for _, line := range strings.Split(passwd, "\n") {
		f := strings.Split(line, ":")
		if len(f) > 3 && f[0] == user {
			fmt.Sscan(f[2], &uid)
			fmt.Sscan(f[3], &gid)
			return uid, gid
		}
	}
	t.Fatalf("no user %s", user)
	return
}

func sameContent(t *testing.T, got, want string) {
	t.Helper()
	a, err := os.ReadFile(got)
	if err != nil {
		t.Error(err)
		return
	}
	b, err := os.ReadFile(want)
	if err != nil {
		t.Error(err)
		return
	}
	if !bytes.Equal(a, b) {
		t.Errorf("%s differs from %s", got, want)
	}
}

// TestInstallFromSource installs from the source tree into a temporary
// root, again (an upgrade keeps an edited configuration), then uninstalls
// and purges.
func TestInstallFromSource(t *testing.T) {
	bin := ferryBinary(t)
	root := newRoot(t)
	out := mustRun(t, "install.sh", "--root", root, "--binary", bin, "--no-start")
	if !strings.Contains(out, "ferry installed: ferry ") {
		t.Errorf("first run output:\n%s", out)
	}
	checkInstalled(t, root, bin)

	conf := filepath.Join(root, "etc/ferry/ferry.yaml")
	edited := []byte("gateway: {id: press-line-3}\ndevices_dir: devices.d\n")
	os.WriteFile(conf, edited, 0o640)
	os.WriteFile(filepath.Join(root, "var/lib/ferry/buffer.db"), []byte("unsent data"), 0o640)
	out = mustRun(t, "install.sh", "--root", root, "--binary", bin, "--no-start")
	if !strings.Contains(out, "ferry upgraded") || !strings.Contains(out, "kept "+conf) {
		t.Errorf("second run output:\n%s", out)
	}
	if got, _ := os.ReadFile(conf); !bytes.Equal(got, edited) {
		t.Errorf("the upgrade replaced the edited configuration:\n%s", got)
	}
	os.WriteFile(conf, mustRead(t, "../configs/ferry.yaml"), 0o640)
	checkInstalled(t, root, bin)

	mustRun(t, "install.sh", "--uninstall", "--root", root)
	for _, gone := range []string{"usr/bin/ferry", "lib/systemd/system/ferry.service", "usr/lib/sysusers.d/ferry.conf", "usr/share/doc/ferry"} {
		if fileExists(filepath.Join(root, gone)) {
			t.Errorf("--uninstall left %s", gone)
		}
	}
	for _, kept := range []string{"etc/ferry/ferry.yaml", "var/lib/ferry/buffer.db"} {
		if !fileExists(filepath.Join(root, kept)) {
			t.Errorf("--uninstall removed %s", kept)
		}
	}
	mustRun(t, "install.sh", "--uninstall", "--purge", "--root", root)
	for _, gone := range []string{"etc/ferry", "var/lib/ferry"} {
		if fileExists(filepath.Join(root, gone)) {
			t.Errorf("--purge left %s", gone)
		}
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestInstallFromArchive builds a release archive with dist.sh, checks it
// and its checksums, unpacks it and installs from it.
func TestInstallFromArchive(t *testing.T) {
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("tar not installed")
	}
	bin := ferryBinary(t)
	dist := t.TempDir()
	arch := map[string]string{"amd64": "amd64", "arm64": "arm64", "arm": "armv7"}[runtime.GOARCH]
	if arch == "" {
		t.Skipf("no release archive for %s", runtime.GOARCH)
	}
	if err := os.WriteFile(filepath.Join(dist, "ferry-linux-"+arch), mustRead(t, bin), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, []string{"DIST=" + dist, "SOURCE_DATE_EPOCH=1700000000"}, "dist.sh", "v9.9.9")
	if err != nil {
		t.Fatalf("dist.sh: %v\n%s", err, out)
	}
	name := "ferry-v9.9.9-linux-" + arch
	archive := filepath.Join(dist, name+".tar.gz")

	tarList := exec.Command("tar", "-tvzf", archive)
	tarList.Env = append(os.Environ(), "TZ=UTC")
	list, err := tarList.CombinedOutput()
	if err != nil {
		t.Fatalf("tar: %v\n%s", err, list)
	}
	for _, want := range []string{"/ferry", "/install.sh", "/ferry.service", "/ferry.sysusers", "/ferry.yaml",
		"/maint/postinst", "/maint/prerm", "/maint/postrm", "/doc/operations.md", "/doc/examples/devices.d/boiler.yaml"} {
		if !strings.Contains(string(list), name+want+"\n") {
			t.Errorf("archive lacks %s:\n%s", name+want, list)
		}
	}
	if strings.Count(string(list), " 0/0 ") != strings.Count(string(list), "\n") || !strings.Contains(string(list), "2023-11-14 22:13") {
		t.Errorf("archive entries are not root-owned with the SOURCE_DATE_EPOCH time:\n%s", list)
	}
	sums := string(mustRead(t, filepath.Join(dist, "SHA256SUMS")))
	for _, f := range []string{"ferry-linux-" + arch, name + ".tar.gz"} {
		want := fmt.Sprintf("%x  %s\n", sha256.Sum256(mustRead(t, filepath.Join(dist, f))), f)
		if !strings.Contains(sums, want) {
			t.Errorf("SHA256SUMS lacks %q:\n%s", want, sums)
		}
	}

	unpack := t.TempDir()
	if out, err := exec.Command("tar", "-xzf", archive, "-C", unpack).CombinedOutput(); err != nil {
		t.Fatalf("untar: %v\n%s", err, out)
	}
	root := newRoot(t)
	out, err = run(t, nil, filepath.Join(unpack, name, "install.sh"), "--root", root, "--no-start")
	if err != nil {
		t.Fatalf("install.sh from the archive: %v\n%s", err, out)
	}
	checkInstalled(t, root, bin)
}

func TestInstallRefuses(t *testing.T) {
	root := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"purge alone", []string{"--purge", "--root", root}, "--purge goes with --uninstall"},
		{"unknown argument", []string{"--prefix", "/opt"}, "unknown argument --prefix"},
		{"root not a directory", []string{"--root", filepath.Join(root, "none")}, "is not a directory"},
		{"missing binary", []string{"--root", root, "--binary", filepath.Join(root, "nope")}, "no ferry binary at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := run(t, nil, "install.sh", tt.args...)
			if err == nil || !strings.Contains(out, tt.want) {
				t.Fatalf("err %v, output %q; want a failure saying %q", err, out, tt.want)
			}
		})
	}
}

// TestInstallRefusesNonRoot: without --root, a normal user is told to use
// sudo, and nothing is touched.
func TestInstallRefusesNonRoot(t *testing.T) {
	dir, err := os.MkdirTemp("", "ferry-install-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	script := filepath.Join(dir, "install.sh")
	os.WriteFile(script, mustRead(t, "install.sh"), 0o755)

	var cmd *exec.Cmd
	switch {
	case os.Geteuid() != 0:
		cmd = exec.Command("sh", script)
	default:
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Skip("running as root without setpriv to drop privileges")
		}
		cmd = exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "sh", script)
	}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "must run as root") {
		t.Fatalf("err %v, output %q; want a refusal", err, out)
	}
}
