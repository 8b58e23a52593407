package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/drivers/modbus"
	"github.com/ferry-edge/ferry/drivers/mqtt"
	"github.com/ferry-edge/ferry/drivers/opcua"
	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/gateway"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// load loads path with every protocol ferry speaks, as ferry does: these
// tests hold the loader to the real protocol table, so the golden errors,
// configs/ and the schema are checked against what ferry runs.
func load(path string) (*config.Config, error) {
	return config.Load(path, gateway.Protocols)
}

// TestGolden loads every testdata/*.good.yaml (must load) and
// testdata/*.bad.yaml (must fail with exactly the text of the matching
// .bad.err file, when one exists).
func TestGolden(t *testing.T) {
	t.Setenv("FERRY_TEST_HOST", "10.1.2.3")
	t.Chdir("testdata")
	goods, _ := filepath.Glob("*.good.yaml")
	bads, _ := filepath.Glob("*.bad.yaml")
	if len(goods) == 0 || len(bads) == 0 {
		t.Fatal("no golden files")
	}
	for _, f := range goods {
		t.Run(f, func(t *testing.T) {
			if _, err := load(f); err != nil {
				t.Fatalf("Load: %v", err)
			}
		})
	}
	for _, f := range bads {
		t.Run(f, func(t *testing.T) {
			_, err := load(f)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if !errors.Is(err, ferry.ErrInvalidConfig) {
				t.Errorf("error does not wrap ErrInvalidConfig: %v", err)
			}
			want, rerr := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".err")
			if rerr != nil {
				t.Fatalf("missing expected-error file: %v", rerr)
			}
			if got := err.Error(); got != strings.TrimRight(string(want), "\n") {
				t.Errorf("errors differ\n got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestFullConfigValues(t *testing.T) {
	t.Setenv("FERRY_TEST_HOST", "10.1.2.3")
	c, err := load("testdata/full.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	modbusDevs, opcuaDevs := config.DevicesOf[modbus.Device](c), config.DevicesOf[opcua.Device](c)
	if got := modbusDevs[0].Config.URL; got != "tcp://10.1.2.3:502" {
		t.Errorf("${ENV:-default} expansion: url = %q", got)
	}
	if got := config.DevicesOf[mqtt.Device](c)[0].Config.Password.Reveal(); got != "s3cret" {
		t.Errorf("password_file: got %q", got)
	}
	if r := c.Reduce; r.Defaults == nil || r.Defaults.MaxSilence != 5*time.Minute || r.Defaults.Gap != time.Minute ||
		len(r.Points) != 2 || *r.Points[0].Deadband != 0.5 || *r.Points[0].Gap != 0 || r.Points[0].MaxSilence != nil ||
		r.Points[1].Aggregate == nil || r.Points[1].Aggregate.Window != time.Minute || len(r.Points[1].Aggregate.Functions) != 3 {
		t.Errorf("reduce section: %+v", r)
	}
	if got := c.Buffer.MaxSize; got != 512<<20 {
		t.Errorf("max_size = %d", got)
	}
	if len(opcuaDevs) != 1 || opcuaDevs[0].Name != "boiler" || c.Devices[2].File != "devices.d/boiler.yaml" {
		t.Errorf("device from devices_dir not loaded: %+v", opcuaDevs)
	}
	if len(c.Files) != 2 || len(c.Points) != 4 || c.Version == "" {
		t.Errorf("files %v, %d points, version %q", c.Files, len(c.Points), c.Version)
	}
	if c.Points[0].Device != "press3" || c.Points[0].Protocol != "modbus" {
		t.Errorf("point info %+v", c.Points[0])
	}
	// Defaults survive for keys the file omits.
	if modbusDevs[0].Config.Unit != 1 || opcuaDevs[0].Config.Mode != "subscribe" || c.Log.Level != "debug" {
		t.Errorf("defaults/values: %+v %+v %+v", modbusDevs[0].Config, opcuaDevs[0].Config, c.Log)
	}
	if got := c.Summary(); !strings.HasPrefix(got, "3 devices, 4 points, 1 rules") {
		t.Errorf("Summary() = %q", got)
	}
}

func TestVersionChangesWithContent(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.yaml")
	os.WriteFile(p, []byte("gateway: {id: a}\n"), 0o600)
	c1, err := load(p)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p, []byte("gateway: {id: b}\n"), 0o600)
	c2, _ := load(p)
	if c1.Version == c2.Version {
		t.Fatal("version did not change with the file")
	}
}

// TestAliasBombRefused feeds a ~1 MB file whose merge keys would expand to
// 10^9 nodes: it must be refused with the expansion bound, not decoded.
func TestAliasBombRefused(t *testing.T) {
	var b strings.Builder
	b.WriteString("l0: &l0 {unit: 1}\n")
	for i := 1; i <= 9; i++ {
		b.WriteString("l" + itoa(i) + ": &l" + itoa(i) + " {<<: [")
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*l" + itoa(i-1))
		}
		b.WriteString("]}\n")
	}
	b.WriteString("gateway: {id: gw}\ndevices:\n  - name: d\n    modbus: {url: tcp://h:1, <<: *l9}\n")
	for b.Len() < 1<<20 {
		b.WriteString("# padding to a megabyte ..........................................\n")
	}
	p := filepath.Join(t.TempDir(), "bomb.yaml")
	os.WriteFile(p, []byte(b.String()), 0o600)
	_, err := load(p)
	if err == nil || !strings.Contains(err.Error(), "expands to more than") {
		t.Fatalf("want the expansion bound, got %v", err)
	}
}

// TestAliasBombOfDevicesSaysSo: aliases of one large device expand past
// the bound inside devices, where the partial decode also yields hundreds
// of duplicate-name errors; the bound must be the first error shown, not
// one left out by the cap on the list.
func TestAliasBombOfDevicesSaysSo(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bomb.yaml")
	os.WriteFile(p, []byte(testutil.AliasBombYAML()), 0o600)
	_, err := load(p)
	if err == nil {
		t.Fatal("loaded")
	}
	first, _, _ := strings.Cut(err.Error(), "\n")
	if !strings.Contains(first, "expands to more than") {
		t.Fatalf("first error %q; want the expansion bound", first)
	}
}

func TestHostileFilesRefused(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		data string
		want string
	}{
		{"huge", "gateway: {id: gw}\n" + strings.Repeat("#", config.MaxFileSize), "larger than"},
		{"deep", "gateway: {id: gw}\nalerts: " + strings.Repeat("[", 5000) + strings.Repeat("]", 5000), "expected a mapping"},
		{"flow_limit", strings.Repeat("[", 20000), "exceeded max depth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name+".yaml")
			os.WriteFile(p, []byte(tt.data), 0o600)
			_, err := load(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want error containing %q, got %v", tt.want, err)
			}
		})
	}
}

func itoa(i int) string { return string(rune('0' + i)) }

func FuzzLoad(f *testing.F) {
	for _, g := range []string{"testdata/full.good.yaml", "testdata/wrong_types.bad.yaml", "testdata/duplicates.bad.yaml"} {
		b, _ := os.ReadFile(g)
		f.Add(b)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "fuzz.yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Skip()
		}
		c, err := load(p)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
		if err != nil && !errors.Is(err, ferry.ErrInvalidConfig) {
			t.Fatalf("error does not wrap ErrInvalidConfig: %v", err)
		}
	})
}

// writeTree writes files (name → content) under a new directory and
// returns the path of its ferry.yaml.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "ferry.yaml")
}

// TestEmptyDeviceFileLoads: a device map emptied or commented out whole
// (a machine taken out of service) holds no devices; it is not an error
// that stops ferry from starting.
func TestEmptyDeviceFileLoads(t *testing.T) {
	for name, data := range map[string]string{"empty": "", "comments": "# press 4 is out of service\n# devices:\n#   - name: press4\n"} {
		t.Run(name, func(t *testing.T) {
			p := writeTree(t, map[string]string{
				"ferry.yaml":        "gateway: {id: gw}\ndevices_dir: devices.d\n",
				"devices.d/a.yaml":  "devices:\n  - name: a\n    opcua: {endpoint: \"opc.tcp://h:4840\"}\n",
				"devices.d/p4.yaml": data,
			})
			c, err := load(p)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(c.Devices) != 1 || len(c.Files) != 3 {
				t.Fatalf("%d devices from %v; want 1 from 3 files", len(c.Devices), c.Files)
			}
		})
	}
	// An empty main file is missing its required keys, nothing else.
	_, err := load(writeTree(t, map[string]string{"ferry.yaml": "# nothing yet\n"}))
	if err == nil || strings.Contains(err.Error(), "expected a mapping") || !strings.Contains(err.Error(), "gateway.id: is required") {
		t.Fatalf("empty main file: %v", err)
	}
}

// TestEnvErrorDoesNotShowSecret: a secret holding a literal "${" must not
// be printed by the error that refuses it (ferry validate's output and
// the journal are read by people who must not see it).
func TestEnvErrorDoesNotShowSecret(t *testing.T) {
	for _, secret := range []string{"Xk9${q7Lp", "Xk9${q7-Lp}"} {
		p := writeTree(t, map[string]string{"ferry.yaml": "gateway: {id: gw, site: s}\nuplink:\n  nats:\n    urls: [\"nats://h:4222\"]\n    token: \"" + secret + "\"\n"})
		_, err := load(p)
		if err == nil {
			t.Fatalf("%q: loaded", secret)
		}
		if strings.Contains(err.Error(), "q7") {
			t.Errorf("error shows the secret: %v", err)
		}
		if !strings.Contains(err.Error(), "uplink.nats.token: ") {
			t.Errorf("error does not name the field: %v", err)
		}
	}
}

// TestSecretFileErrors: a *_file that cannot be read is an error, not an
// empty secret (which would connect without authentication, or fail at
// run time far from the cause).
func TestSecretFileErrors(t *testing.T) {
	tests := []struct {
		name, file, want string
	}{
		{"directory", "dir", "uplink.nats.token_file: read "},
		{"missing", "nope.txt", "uplink.nats.token_file: open "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeTree(t, map[string]string{
				"ferry.yaml": "gateway: {id: gw, site: s}\nuplink:\n  nats:\n    urls: [\"nats://h:4222\"]\n    token_file: " + tt.file + "\n",
				"dir/.keep":  "",
			})
			_, err := load(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want an error containing %q, got %v", tt.want, err)
			}
		})
	}
}

// TestSecretAndFileInEitherOrder: `token_file` before `token` gets the
// same "set either" error as the other order, not a "duplicate key" one
// naming a key written once.
func TestSecretAndFileInEitherOrder(t *testing.T) {
	p := writeTree(t, map[string]string{
		"ferry.yaml": "gateway: {id: gw, site: s}\nuplink:\n  nats:\n    urls: [\"nats://h:4222\"]\n    token_file: t.txt\n    token: x\n",
		"t.txt":      "y\n",
	})
	_, err := load(p)
	if err == nil || !strings.Contains(err.Error(), "uplink.nats.token: set either token or token_file, not both") {
		t.Fatalf("got %v", err)
	}
}

// devices_dir may be the main file's own directory: the main file is read
// once, as the main file, and the device maps beside it are loaded.
func TestDevicesDirHoldsTheMainFile(t *testing.T) {
	for _, dir := range []string{".", "", "abs"} {
		t.Run("devices_dir="+dir, func(t *testing.T) {
			files := map[string]string{
				"a.yaml": "devices:\n  - name: a\n    opcua: {endpoint: \"opc.tcp://h:4840\"}\n",
			}
			files["ferry.yaml"] = "gateway: {id: gw}\ndevices_dir: DIR\ndevices:\n  - name: m\n    opcua: {endpoint: \"opc.tcp://h:4840\"}\n"
			p := writeTree(t, files)
			d := dir
			switch dir {
			case "":
				d = filepath.Dir(p) + "/"
			case "abs":
				d = filepath.Dir(p)
			}
			if err := os.WriteFile(p, []byte(strings.Replace(files["ferry.yaml"], "DIR", d, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := load(p)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(c.Devices) != 2 {
				t.Fatalf("%d devices, want m and a", len(c.Devices))
			}
		})
	}
}

// TestVersionIgnoresPathSpelling: the configuration's version depends on
// what the files hold, not on how the path to them was written.
func TestVersionIgnoresPathSpelling(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "etc")
	if err := os.MkdirAll(filepath.Join(sub, "devices.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(sub, "ferry.yaml"), []byte("gateway: {id: gw1}\ndata_dir: /tmp/x\ndevices_dir: devices.d\n"), 0o644)
	os.WriteFile(filepath.Join(sub, "devices.d", "plc.yaml"), []byte("devices:\n  - name: plc\n    modbus: {url: \"tcp://127.0.0.1:502\"}\n    points:\n      - {name: a, ref: \"40001\"}\n"), 0o644)
	var versions []string
	for _, p := range []string{filepath.Join(sub, "ferry.yaml"), filepath.Join(dir, "etc", "..", "etc", "ferry.yaml"), sub + "//ferry.yaml"} {
		c, err := load(p)
		if err != nil {
			t.Fatal(err)
		}
		versions = append(versions, c.Version)
	}
	if versions[0] != versions[1] || versions[1] != versions[2] {
		t.Errorf("versions differ by path spelling: %v", versions)
	}
	os.WriteFile(filepath.Join(sub, "devices.d", "plc.yaml"), []byte("devices:\n  - name: plc\n    modbus: {url: \"tcp://127.0.0.1:503\"}\n    points:\n      - {name: a, ref: \"40001\"}\n"), 0o644)
	c, err := load(filepath.Join(sub, "ferry.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Version == versions[0] {
		t.Error("a changed device file left the version as it was")
	}
}
