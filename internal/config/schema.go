package config

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"

	"github.com/ferry-edge/ferry/internal/setting"
)

// SchemaID is the $id of the generated JSON Schema.
const SchemaID = "https://github.com/ferry-edge/ferry/configs/ferry.schema.json"

// Schema returns the JSON Schema (draft 2020-12) of a ferry configuration
// file, generated from the same Go types the loader decodes into, so the
// two cannot drift. Editors use it to complete and check keys; the loader
// stays the authority (it also checks references, ranges and names).
// A device entry may hold the block of any of protocols, and its points
// take the form of one of them.
// configs/ferry.schema.json is this output for internal/gateway's
// Protocols; a test keeps it current.
func Schema(protocols []Protocol) ([]byte, error) {
	g := &schemaGen{defs: map[string]any{}, protocols: protocols}
	root := g.of(reflect.TypeOf(Config{}), "")
	root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	root["$id"] = SchemaID
	root["title"] = "ferry configuration"
	root["description"] = "ferry edge gateway configuration (the main file, or a devices_dir file holding `devices:`)"
	root["$defs"] = g.defs
	b, err := json.MarshalIndent(root, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

type schemaGen struct {
	defs      map[string]any
	protocols []Protocol
}

var (
	sizeType = reflect.TypeOf(setting.Size(0))
	envRef   = map[string]any{"type": "string", "pattern": `\$\{`, "description": "an ${ENV} reference"}
)

func (g *schemaGen) of(t reflect.Type, doc string) map[string]any {
	s := g.base(t)
	if doc != "" {
		s["description"] = doc
	}
	return s
}

func (g *schemaGen) base(t reflect.Type) map[string]any {
	switch {
	case t == durationType:
		return map[string]any{"type": "string", "pattern": `^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`, "examples": []string{"500ms", "10s", "5m"}}
	case t == sizeType:
		return map[string]any{"anyOf": []any{
			map[string]any{"type": "integer", "minimum": 0},
			map[string]any{"type": "string", "pattern": `^[0-9.]+\s*(B|K|M|G|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?$`},
		}, "examples": []string{"512MiB", "1GiB"}}
	case t == secretType:
		return map[string]any{"type": "string", "description": "secret; prefer the *_file form or ${ENV}"}
	case t == nodeType:
		// A device's points take the form of its protocol.
		forms := make([]any, 0, len(g.protocols))
		for _, p := range g.protocols {
			forms = append(forms, g.base(reflect.TypeOf(p.Points()).Elem().Elem()))
		}
		return map[string]any{"type": "array", "items": map[string]any{"anyOf": forms}}
	case reflect.PointerTo(t).Implements(textUnmarshalerType):
		return map[string]any{"type": "string"}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return g.base(t.Elem())
	case reflect.Struct:
		// A section with a list form takes either form.
		if lf, ok := reflect.New(t).Interface().(listFormer); ok {
			return map[string]any{"anyOf": []any{g.ref(t), g.base(reflect.TypeOf(lf.ListForm()).Elem())}}
		}
		return g.ref(t)
	case reflect.Slice:
		return map[string]any{"type": "array", "items": g.base(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.base(t.Elem())}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"anyOf": []any{map[string]any{"type": "boolean"}, envRef}}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		lo, hi := intRange(t.Bits())
		return map[string]any{"anyOf": []any{map[string]any{"type": "integer", "minimum": lo, "maximum": hi}, envRef}}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n := map[string]any{"type": "integer", "minimum": 0}
		if t.Bits() < 64 {
			n["maximum"] = uint64(math.MaxUint64) >> (64 - t.Bits())
		}
		return map[string]any{"anyOf": []any{n, envRef}}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"anyOf": []any{map[string]any{"type": "number"}, envRef}}
	}
	return map[string]any{}
}

// ref returns a $ref to the definition of struct t, creating it.
func (g *schemaGen) ref(t reflect.Type) map[string]any {
	name := strings.ReplaceAll(t.String(), "*", "")
	if _, ok := g.defs[name]; !ok {
		g.defs[name] = nil // placeholder against recursion
		g.defs[name] = g.object(t)
	}
	return map[string]any{"$ref": "#/$defs/" + name}
}

func (g *schemaGen) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	g.fields(t, props)
	if t == deviceType {
		// A device entry's protocol blocks are not fields of Device.
		for _, p := range g.protocols {
			props[p.Name] = g.of(reflect.TypeOf(p.Block()), "")
		}
	}
	return map[string]any{"type": "object", "additionalProperties": false, "properties": props}
}

func (g *schemaGen) fields(t reflect.Type, props map[string]any) {
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag, ok := sf.Tag.Lookup("yaml")
		if !ok || tag == "-" || !sf.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(opts, "inline") {
			g.fields(sf.Type, props)
			continue
		}
		s := g.of(sf.Type, sf.Tag.Get("doc"))
		if e := sf.Tag.Get("enum"); e != "" {
			s = map[string]any{"enum": strings.Split(e, ",")}
			if d := sf.Tag.Get("doc"); d != "" {
				s["description"] = d
			}
		}
		props[name] = s
		if sf.Type == secretType {
			props[name+"_file"] = map[string]any{"type": "string", "description": "file holding " + name}
		}
	}
}
