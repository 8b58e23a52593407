//go:build !linux

package boltmap

// Supported reports whether Release does anything on this platform.
const Supported = false

func release(uintptr, int64) error { return nil }
