package testutil

import (
	"fmt"
	"strings"
)

// AliasBombYAML is a small ferry configuration whose YAML aliases expand
// to millions of nodes where the loader decodes them: one device with 2000
// points, listed again by alias 300 times. The loader must refuse it with
// its expansion bound, quickly, and without the memory the expansion would
// take.
func AliasBombYAML() string {
	var b strings.Builder
	b.WriteString("gateway: {id: gw}\ndata_dir: /tmp/x\ndevices:\n  - &big\n    name: d0\n    modbus: {url: \"tcp://127.0.0.1:502\"}\n    points:\n")
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&b, "      - {name: p%d, table: holding, address: %d}\n", i, i)
	}
	for i := 0; i < 300; i++ {
		b.WriteString("  - *big\n")
	}
	return b.String()
}
