// Package buffer is ferry's store-and-forward queue: every scan and alert
// the gateway accepts is kept in a bbolt file (DATA_DIR/buffer.db) until the
// upstream has acknowledged it.
//
// # Promises
//
//   - Accepted means durable. A scan's Done(nil) is called only after the
//     bbolt transaction holding it has committed, fsync included (NoSync is
//     never set). Whatever kill -9 or a power loss interrupts, a scan that
//     got Done(nil) is in the file afterwards, exactly once.
//   - Deleted only after Ack. Next hands records out; they stay stored, in
//     flight, until Ack deletes them or Release (or a restart) offers them
//     again, with the same ids.
//   - Ids never repeat. A record's id is "<gateway>-<lane>-<seq>"; sequences
//     grow per lane across restarts, also when a lane was emptied or the
//     file was lost (a floor file, buffer.seq, and the clock seed a new
//     file). A replay after a crash carries the ids of the first try, so
//     JetStream's duplicate window drops it.
//   - One cursor per upstream. With Options.Consumers each upstream drains
//     its own Cursor; a record is deleted once every consumer acknowledged
//     it (or a bound dropped it, counted per consumer that had not), and
//     each consumer's acknowledgements survive a restart (cursor.go).
//   - Alerts first. Next returns every ready alert before any telemetry.
//     Alerts have their own queue and are kept (and retried) while the disk
//     fails; the size bound drops an alert only when no telemetry is left.
//   - Bounded. max_size bounds the stored bytes (the oldest telemetry goes
//     first) and max_age the age of telemetry; the file stays within
//     max_size plus a documented slack, and is compacted after a drained
//     backlog. Every drop is counted by lane and reason and raises one
//     local alert per episode.
//   - Never blocks the drivers. AppendScan returns at once; when the
//     bounded queue in front of the writer is full the newest scan is
//     dropped, counted, and finished with ferry.ErrDropped.
//   - A damaged file costs data, not the daemon. Before bbolt maps a file,
//     Open walks it with plain reads and checks every page it reaches (the
//     checks of bbolt's Tx.Check and more). A file that fails is moved to
//     buffer.db.corrupt-<time>, every record and state entry that can
//     still be read (each record carries a CRC-32C) is copied into a fresh
//     file, and an alert is raised; Open then succeeds. A single record
//     that fails its checksum is dropped on its own.
//
// # How it works
//
// One writer goroutine takes what is queued (scans, alerts, acks,
// StateStore writes) and commits it in one transaction: the scans of one
// device in one commit become one telemetry record (or several, each at
// most Options.MaxRecordBytes), encoded by internal/codec; each alert is a
// record of its own. It lingers a moment (Options.Linger) after the first
// append into an idle queue, so that a lone sample is not delayed long and
// a stream of them shares an fsync. An in-memory index of each lane
// (sequence, time, size, state) serves Next, Ack, Release, the bounds and
// Stats without reading the file.
//
// The buffer is also a ferry.StateStore (the rule engine's active alerts):
// its state lives in the same file and rides on the same commits.
//
// # Caveats
//
//   - Open reads the whole file (to check it and build the index); bbolt
//     then walks its pages again to rebuild its free list, which is not
//     written with every commit. A 1 GiB buffer takes seconds to open on a
//     slow SD card.
//   - The index holds 24 bytes per stored record (about 12 MB for a full
//     1 GiB buffer of 2 KiB records); the dedupe keys about 32 bytes each.
//   - An Ack becomes durable with the next commit (within 10 ms when only
//     acks are waiting): a crash just before re-offers those records,
//     which the upstream's duplicate window drops.
//   - Records are written in the host's byte order by bbolt (little endian
//     on every platform ferry ships for); a file is not meant to move
//     between architectures.
//   - Damage found while running (a page bbolt cannot read) makes the
//     reads and commits fail with an error instead of crashing; the next
//     start checks the file and quarantines it.
package buffer
