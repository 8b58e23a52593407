// Package buffertest opens a real buffer for the tests of other packages
// (the command service, the gateway, the Sparkplug node): one place for
// the defaults, the open and the close. The buffer's own tests cannot use
// it (it imports the buffer).
package buffertest

import (
	"testing"

	"github.com/ferry-edge/ferry/buffer"
)

// Open opens a buffer in dir with the default configuration, changed by
// mod when it is not nil, and closes it when tb ends.
func Open(tb testing.TB, dir string, opts buffer.Options, mod func(*buffer.Config)) *buffer.Buffer {
	tb.Helper()
	var cfg buffer.Config
	cfg.SetDefaults()
	if mod != nil {
		mod(&cfg)
	}
	b, err := buffer.Open(dir, cfg, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	return b
}
