// Copyright 2018-2020 opcua authors. All rights reserved.
// Use of this source code is governed by a MIT-style license that can be
// found in the LICENSE file.

// This file is part of ferry's hardening patch of gopcua v0.9.1 (see
// ../README.ferry.md): it bounds the nesting depth of a decoded message.

package ua

// MaxDecodeDepth bounds the nesting of structures, arrays, Variants,
// DataValues, DiagnosticInfos and ExtensionObjects in one decoded message.
// Without it a peer can send a message of a few megabytes that nests a
// Variant (one byte a level) or a DiagnosticInfo deeply enough to overflow
// the goroutine stack, which is fatal and cannot be recovered.
var MaxDecodeDepth = 100

// preallocMax is the most elements an array decoder allocates before it
// has decoded them.
const preallocMax = 1024

// depthDecoder is implemented by the types whose values nest other values:
// they decode their children one level deeper.
type depthDecoder interface {
	decodeDepth(b []byte, depth int) (int, error)
}

// checkDepth returns StatusBadEncodingLimitsExceeded when depth is too deep.
func checkDepth(depth int) error {
	if depth > MaxDecodeDepth {
		return StatusBadEncodingLimitsExceeded
	}
	return nil
}

// readDepth decodes v from the buffer at the given depth (ReadStruct for
// the types that nest).
func (b *Buffer) readDepth(v interface{}, depth int) {
	if b.err != nil {
		return
	}
	var n int
	var err error
	if d, ok := v.(depthDecoder); ok {
		n, err = d.decodeDepth(b.buf[b.pos:], depth)
	} else {
		n, err = decodeAt(b.buf[b.pos:], v, depth)
	}
	if err != nil {
		b.err = err
		return
	}
	b.pos += n
}
