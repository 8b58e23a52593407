// Package boltmap lets go of the pages of a bbolt file that a process has
// read through bbolt's memory map.
//
// bbolt reads its file through a read-only shared mapping and writes it
// with pwrite. Every page a transaction reads stays mapped into the
// process until bbolt maps the file again (when the file grows past the
// mapping) or closes it, so a file whose records are each read once (the
// buffer's queue: the uplink reads a record to send it, the retention
// copies it when it is acknowledged; the history's fold) ends up counted
// whole in the process's RSS: 41 MiB of an 85 MB buffer.db after seven
// minutes at 10,000 samples/s, and still growing once the file had
// stopped growing (README, "Memory at 10k tags"). Those pages are clean
// page cache: dropping them from the mapping loses nothing, the next read
// of a page maps it again from the cache (a minor fault), and the kernel
// can reclaim what is no longer mapped without first unmapping it.
package boltmap

import (
	bolt "go.etcd.io/bbolt"
)

// Release drops db's mapped pages from this process (madvise
// MADV_DONTNEED on the mapping, Linux only; elsewhere it does nothing).
// It runs inside a read transaction, which holds bbolt's mapping in place
// (a remap waits for every read transaction), and covers the file's pages
// up to its high water mark, the only ones bbolt reads. Transactions
// running meanwhile are not disturbed: the mapping is read-only and
// shared, so a page they touch next is the file's page, read again from
// the page cache.
func Release(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		return release(db.Info().Data, tx.Size())
	})
}
