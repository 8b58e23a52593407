package boltmap

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Supported reports whether Release does anything on this platform.
const Supported = true

func release(addr uintptr, size int64) error {
	if size <= 0 {
		return nil
	}
	// The raw call takes the mapping's address as it is: bbolt owns the
	// mapping, and a []byte over it would only be passed back as a
	// pointer.
	if _, _, e := unix.Syscall(unix.SYS_MADVISE, addr, uintptr(size), unix.MADV_DONTNEED); e != 0 {
		return fmt.Errorf("boltmap: madvise(MADV_DONTNEED) of %d bytes: %w", size, e)
	}
	return nil
}
