package config_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/ferry-edge/ferry/internal/config"
	"github.com/ferry-edge/ferry/internal/gateway"
)

var update = flag.Bool("update", false, "rewrite configs/ferry.schema.json from the Go types")

const configsDir = "../../configs"

// TestSchemaIsCurrent keeps configs/ferry.schema.json equal to config.Schema(gateway.Protocols).
// Run `go test ./internal/config -run TestSchemaIsCurrent -update` (or
// `make schema`) after changing a Config type.
func TestSchemaIsCurrent(t *testing.T) {
	want, err := config.Schema(gateway.Protocols)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(configsDir, "ferry.schema.json")
	if *update {
		if err := os.WriteFile(p, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("configs/ferry.schema.json is stale: run `make schema`")
	}
}

// TestConfigsDir loads every configuration in configs/ with the loader and
// checks it, and every device map it pulls in, against the JSON Schema.
func TestConfigsDir(t *testing.T) {
	sch := compileSchema(t)
	mains, _ := filepath.Glob(filepath.Join(configsDir, "*.yaml"))
	if len(mains) == 0 {
		t.Fatal("no configs")
	}
	for _, m := range mains {
		t.Run(filepath.Base(m), func(t *testing.T) {
			c, err := load(m)
			if err != nil {
				t.Fatalf("Load:\n%v", err)
			}
			for _, f := range c.Files {
				if err := sch.Validate(yamlToJSONValue(t, f)); err != nil {
					t.Errorf("%s does not match the schema: %v", f, err)
				}
			}
		})
	}
}

// TestSchemaRefusesUnknownKeys makes sure the schema is strict, like the
// loader.
func TestSchemaRefusesUnknownKeys(t *testing.T) {
	sch := compileSchema(t)
	p := filepath.Join(t.TempDir(), "x.yaml")
	os.WriteFile(p, []byte("gateway: {id: a}\nbuffer: {max_sise: 1GiB}\n"), 0o600)
	if err := sch.Validate(yamlToJSONValue(t, p)); err == nil {
		t.Fatal("schema accepted an unknown key")
	}
}

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	b, err := config.Schema(gateway.Protocols)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(config.SchemaID, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(config.SchemaID)
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

// yamlToJSONValue reads a YAML file into the generic values the schema
// validator expects.
func yamlToJSONValue(t *testing.T, path string) any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	return out
}
