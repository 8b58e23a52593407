package config

import (
	"errors"
	"os"
	"reflect"
	"strconv"
	"testing"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/setting"
)

// A protocol this package has never heard of, to show that the loader
// takes every protocol from the table it is given.
type fakeConfig struct {
	URL     string `yaml:"url"`
	Retries int    `yaml:"retries"`
}

func (c *fakeConfig) SetDefaults() { c.Retries = 3 }

type fakePoint struct {
	Name     string `yaml:"name"`
	Register uint16 `yaml:"register"`
}

func (p *fakePoint) Info() ferry.PointInfo {
	return ferry.PointInfo{Point: p.Name, Protocol: "fake", Source: "register " + strconv.Itoa(int(p.Register))}
}

type fakeDevice struct {
	Name   string
	Config fakeConfig
	Points []fakePoint
}

func (d *fakeDevice) Validate() error {
	var errs setting.Errors
	if d.Config.URL == "" {
		errs.Add("fake.url", "is required")
	}
	return errs.Err()
}

var fakeProtocols = []Protocol{
	NewProtocol("fake", func(name string, c fakeConfig, points []fakePoint) fakeDevice {
		return fakeDevice{Name: name, Config: c, Points: points}
	}),
	NewProtocol("other", func(name string, c fakeConfig, points []fakePoint) fakeDevice {
		return fakeDevice{Name: "other:" + name, Config: c, Points: points}
	}),
}

func loadFake(t *testing.T, protocols []Protocol, yaml string) (*Config, error) {
	t.Helper()
	t.Chdir(t.TempDir())
	if err := os.WriteFile("ferry.yaml", []byte("gateway: {id: gw}\n"+yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load("ferry.yaml", protocols)
	if err != nil && !errors.Is(err, ferry.ErrInvalidConfig) {
		t.Fatalf("error does not wrap ErrInvalidConfig: %v", err)
	}
	return c, err
}

func TestProtocolTableBuildsDevices(t *testing.T) {
	_, err := loadFake(t, fakeProtocols, `devices:
  - name: a
    fake: {url: "tcp://h:1"}
    fake: {retries: 1}
`)
	if want := `ferry.yaml:5:5: devices[0].fake: duplicate key "fake" (first at line 4)`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}

	c, err := loadFake(t, fakeProtocols, `devices:
  - name: a
    description: the only point's description
    fake: {url: "tcp://h:1"}
    points: [{name: p, register: 7}]
  - &b
    name: b
    other: {url: "tcp://h:2", retries: 9}
  - <<: *b
    name: c
    other: {retries: 1}
`)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		protocol string
		spec     fakeDevice
	}{
		{"fake", fakeDevice{Name: "a", Config: fakeConfig{URL: "tcp://h:1", Retries: 3}, Points: []fakePoint{{Name: "p", Register: 7}}}},
		{"other", fakeDevice{Name: "other:b", Config: fakeConfig{URL: "tcp://h:2", Retries: 9}}},
		// The merge key's block, then the entry's own over it.
		{"other", fakeDevice{Name: "other:c", Config: fakeConfig{URL: "tcp://h:2", Retries: 1}}},
	}
	if len(c.Devices) != len(want) {
		t.Fatalf("%d devices", len(c.Devices))
	}
	for i, w := range want {
		dev := c.Devices[i]
		spec, ok := dev.Spec.(fakeDevice)
		if dev.Protocol != w.protocol || !ok || spec.Name != w.spec.Name || spec.Config != w.spec.Config ||
			len(spec.Points) != len(w.spec.Points) || len(spec.Points) > 0 && spec.Points[0] != w.spec.Points[0] {
			t.Errorf("device %d: protocol %q spec %+v; want %q %+v", i, dev.Protocol, dev.Spec, w.protocol, w.spec)
		}
		if dev.blocks != nil || dev.Points.Kind != 0 {
			t.Errorf("device %d keeps its decoding leftovers", i)
		}
	}
	if got := DevicesOf[fakeDevice](c); len(got) != 3 || got[2].Name != "other:c" {
		t.Errorf("DevicesOf: %+v", got)
	}
	if len(c.Points) != 1 || c.Points[0] != (ferry.PointInfo{Device: "a", Point: "p", Protocol: "fake", Source: "register 7", Description: "the only point's description"}) {
		t.Errorf("points %+v", c.Points)
	}
}

func TestDropPointSpecs(t *testing.T) {
	c, err := loadFake(t, fakeProtocols, `devices:
  - name: a
    fake: {url: "tcp://h:1"}
    points: [{name: p, register: 7}, {name: q, register: 8}]
  - name: b
    other: {url: "tcp://h:2", retries: 9}
    points: [{name: r, register: 1}]
`)
	if err != nil {
		t.Fatal(err)
	}
	points := append([]ferry.PointInfo(nil), c.Points...)
	c.DropPointSpecs()
	want := []fakeDevice{
		{Name: "a", Config: fakeConfig{URL: "tcp://h:1", Retries: 3}},
		{Name: "other:b", Config: fakeConfig{URL: "tcp://h:2", Retries: 9}},
	}
	if got := DevicesOf[fakeDevice](c); !reflect.DeepEqual(got, want) {
		t.Errorf("specs after DropPointSpecs: %+v, want %+v", got, want)
	}
	if !reflect.DeepEqual(c.Points, points) {
		t.Errorf("the catalog changed: %+v, want %+v", c.Points, points)
	}
	c.DropPointSpecs() // again: nothing left to drop
	if got := DevicesOf[fakeDevice](c); !reflect.DeepEqual(got, want) {
		t.Errorf("specs after a second DropPointSpecs: %+v", got)
	}
}

func TestNewProtocolNeedsAPointsField(t *testing.T) {
	defer func() {
		if r := recover(); r == nil {
			t.Error("NewProtocol accepted a device type that holds its points nowhere DropPointSpecs can drop them")
		}
	}()
	NewProtocol("pointless", func(name string, c fakeConfig, points []fakePoint) pointlessDevice {
		return pointlessDevice{Name: name, Count: len(points)}
	})
}

// pointlessDevice keeps no points: NewProtocol refuses it.
type pointlessDevice struct {
	Name  string
	Count int
}

func (*pointlessDevice) Validate() error { return nil }

func TestProtocolTableErrors(t *testing.T) {
	tests := []struct {
		name      string
		protocols []Protocol
		devices   string
		want      string
	}{
		{"none of two", fakeProtocols, "  - name: a\n",
			"ferry.yaml:3:5: devices[0]: needs one protocol block: fake or other"},
		{"none of one", fakeProtocols[:1], "  - name: a\n",
			"ferry.yaml:3:5: devices[0]: needs one protocol block: fake"},
		{"null block", fakeProtocols, "  - name: a\n    fake: null\n",
			"ferry.yaml:3:5: devices[0]: needs one protocol block: fake or other"},
		{"two blocks, table order", fakeProtocols, "  - name: a\n    other: {url: x}\n    fake: {url: y}\n",
			"ferry.yaml:3:5: devices[0]: has several protocol blocks (fake, other); a device speaks one"},
		{"not in the table", fakeProtocols[1:], "  - name: a\n    fake: {url: x}\n",
			"ferry.yaml:3:5: devices[0]: needs one protocol block: other\n" +
				`ferry.yaml:4:5: devices[0].fake: unknown field "fake" (did you mean "name"?)`},
		{"suggests a protocol", fakeProtocols, "  - name: a\n    othr: {url: x}\n",
			"ferry.yaml:3:5: devices[0]: needs one protocol block: fake or other\n" +
				`ferry.yaml:4:5: devices[0].othr: unknown field "othr" (did you mean "other"?)`},
		{"strict block", fakeProtocols, "  - name: a\n    fake: {url: x, retris: 2}\n",
			`ferry.yaml:4:20: devices[0].fake.retris: unknown field "retris" (did you mean "retries"?)`},
		{"validation path", fakeProtocols, "  - name: a\n    fake: {retries: 2}\n",
			"ferry.yaml:4:11: devices[0].fake.url: is required"},
		{"points in the protocol's form", fakeProtocols, "  - name: a\n    fake: {url: x}\n    points: [{name: p, register: 70000}]\n",
			"ferry.yaml:5:34: devices[0].points[0].register: 70000 is out of range 0..65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadFake(t, tt.protocols, "devices:\n"+tt.devices)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("got %v\nwant %s", err, tt.want)
			}
		})
	}
}

func TestExpandEnv(t *testing.T) {
	env := map[string]string{"A": "x", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"plain", "plain", false},
		{"${A}/${A}", "x/x", false},
		{"$$A costs $5", "$A costs $5", false},
		{"${B:-def}", "def", false},
		{"${EMPTY:-def}", "def", false},
		{"${EMPTY}", "", false},
		{"${B}", "", true},
		{"${A", "", true},
		{"${1A}", "", true},
	}
	for _, tt := range tests {
		got, err := expandEnv(tt.in, lookup)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("expandEnv(%q) = %q, %v; want %q, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
