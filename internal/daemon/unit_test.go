package daemon

import (
	"bufio"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/config"
)

const unitPath = "../../systemd/ferry.service"

// unitFile is a systemd unit: section → key → values in order.
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, `\`) {
				t.Fatalf("%s:%d: unexpected line %q", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// last is the effective value of a key that is not a list.
func (u unitFile) last(section, key string) (string, bool) {
	vs, ok := u[section][key]
	if !ok {
		return "", false
	}
	return vs[len(vs)-1], true
}

// TestUnitFile checks the lines of systemd/ferry.service that the daemon
// and the packages rely on.
func TestUnitFile(t *testing.T) {
	u := parseUnit(t, unitPath)
	want := []struct{ section, key, value string }{
		{"Service", "Type", "notify"},
		{"Service", "NotifyAccess", "main"},
		{"Service", "ExecStart", "/usr/bin/ferry run -config " + config.DefaultPath},
		{"Service", "ExecReload", "/bin/kill -HUP $MAINPID"},
		{"Service", "Restart", "on-failure"},
		{"Service", "User", "ferry"},
		{"Service", "Group", "ferry"},
		{"Service", "SupplementaryGroups", "dialout"},
		{"Service", "StateDirectory", "ferry"},
		{"Service", "WorkingDirectory", "/var/lib/ferry"},
		{"Service", "UMask", "0027"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Service", "CapabilityBoundingSet", ""},
		{"Service", "AmbientCapabilities", ""},
		{"Service", "ProtectSystem", "strict"},
		{"Service", "ProtectHome", "yes"},
		{"Service", "PrivateTmp", "yes"},
		{"Service", "DevicePolicy", "closed"},
		{"Service", "MemoryDenyWriteExecute", "yes"},
		{"Service", "SystemCallArchitectures", "native"},
		{"Install", "WantedBy", "multi-user.target"},
	}
	for _, w := range want {
		got, ok := u.last(w.section, w.key)
		if !ok || got != w.value {
			t.Errorf("[%s] %s=%q (set: %v), want %q", w.section, w.key, got, ok, w.value)
		}
	}

	// The data directory the unit makes writable is the configuration's default.
	var c config.Config
	c.SetDefaults()
	if sd, _ := u.last("Service", "StateDirectory"); "/var/lib/"+sd != c.DataDir {
		t.Errorf("StateDirectory=%s but data_dir defaults to %s", sd, c.DataDir)
	}

	wd, _ := u.last("Service", "WatchdogSec")
	d, err := time.ParseDuration(wd)
	if err != nil || d < 10*time.Second {
		t.Errorf("WatchdogSec=%q: want a duration of at least 10s (%v)", wd, err)
	}
	if v, _ := u.last("Service", "PrivateDevices"); v == "yes" || v == "true" {
		t.Error("PrivateDevices=yes hides the serial ports")
	}
	allowed := strings.Join(u["Service"]["DeviceAllow"], ",")
	for _, dev := range []string{"char-ttyS rw", "char-ttyUSB rw", "char-ttyACM rw"} {
		if !strings.Contains(allowed, dev) {
			t.Errorf("DeviceAllow lacks %q (have %s)", dev, allowed)
		}
	}
	families, _ := u.last("Service", "RestrictAddressFamilies")
	for _, f := range []string{"AF_INET", "AF_INET6", "AF_UNIX"} {
		if !strings.Contains(" "+families+" ", " "+f+" ") {
			t.Errorf("RestrictAddressFamilies=%s lacks %s (NATS, Modbus TCP, sd_notify)", families, f)
		}
	}
	if sc := u["Service"]["SystemCallFilter"]; len(sc) == 0 || sc[0] != "@system-service" {
		t.Errorf("SystemCallFilter=%v, want @system-service first", sc)
	}
}

// TestUnitSecurityRating runs `systemd-analyze security` where it exists
// (CI runs it too) and wants an exposure of at most 1.5.
func TestUnitSecurityRating(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	out, err := exec.Command("systemd-analyze", "security", "--offline=yes", "--no-pager", unitPath).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "Overall exposure level") {
		t.Skipf("systemd-analyze security --offline unsupported here: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for ferry\.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	level, _ := strconv.ParseFloat(string(m[1]), 64)
	if level > 1.5 {
		t.Fatalf("exposure %.1f > 1.5:\n%s", level, out)
	}
	t.Logf("systemd-analyze security: exposure %.1f", level)
}
