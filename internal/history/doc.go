// Package history is the gateway's own small historian: per point, raw
// samples for a day and per-minute rollups (min, max, mean, last, count,
// worst quality) for a month, and every alert transition (raised,
// acknowledged with who, cleared), in DATA_DIR/history.db.
//
// It is a bbolt file of its own, apart from the forward buffer: an
// upstream acknowledgement never deletes history, and history never holds
// up the buffer.
//
// Promises:
//
//   - Add and Alert never block on the disk: they copy what they need
//     into memory; Run commits every commit_interval in one transaction:
//     the samples since the last commit appended to a journal, and the
//     alerts. About once a minute a commit folds instead: every sample
//     since the last fold goes into the raw hours and the minute rollups
//     it changes, and the journal is emptied, in the same transaction
//     (journal.go). Open replays the journal into memory; queries merge
//     memory and file. Pending data is bounded (maxPending samples until
//     the fold, maxPendingAlerts alerts); beyond it Add drops and counts
//     (ferry_history_dropped_samples_total).
//   - A minute is never lost or counted twice across a restart: a
//     committed sample is on disk exactly once, in the journal or folded,
//     and a fold merges what arrived for a minute into the stored rollup.
//     A crash loses at most the last commit_interval, in raw and rollups
//     alike.
//   - Bounded: raw samples live in one bucket per hour, rollups in one
//     bucket per day; partitions older than their retention are dropped,
//     and when the file's pages in use (estimated from the bytes stored
//     and the ratio of pages to bytes measured after each commit) pass
//     max_size less a quarter, the oldest raw hour (while raw holds more
//     than half the bytes) or else the oldest rollup day is dropped
//     (ferry_history_evicted_partitions_total).
//     Alerts are bounded by count (max_alerts).
//
// Caveats: only numbers and bools are kept (a bool as 0 or 1); strings
// are skipped and counted. A sample with no value (a Bad read) is kept as
// a gap with its quality. The file never shrinks: it grows to about
// max_size and then reuses its pages.
package history
