// Package uplink forwards what ferry's buffer holds to a NATS JetStream
// stream, exactly once, alerts first.
//
// An [Uplink] takes records from a [Source] (the buffer), turns each into a
// JSON message on a subject made from the configured templates, and
// publishes it asynchronously with Nats-Msg-Id set to the record's id
// ("<gateway>-<lane>-<seq>"). Only after the stream's PubAck does it ask
// the Source to delete the record; a duplicate PubAck (the stream already
// held the id) counts as delivered. The catalog — what every configured
// point is — is published at start, after every reconnect and whenever
// [Uplink.SetCatalog] is called.
//
// Telemetry travels in batches: consecutive records in one message (kind
// batch, up to batch.max_bytes, compressed as compression says), whose id
// ("<first record id>-b") and records are sealed in the Source's
// [ferry.StateStore] before the first publish, so that a batch sent again
// after a failure or a crash is the same message and the stream drops it.
// Readers use [DecodeAll] to get each record of a batch as its own
// [Message].
//
// # Promises
//
//   - Nothing is lost: a record leaves the Source only after its PubAck.
//     A failed, unanswered or interrupted publish goes back to the Source
//     and is sent again with the same id. Connection and stream problems are
//     retried forever with backoff; meanwhile the Source keeps buffering and
//     [Uplink.Err] says what is wrong.
//   - Nothing is stored twice: a record sent again within the stream's
//     duplicate window is dropped by the stream. After an outage longer than
//     that window, records whose publish went unanswered are looked up in
//     the stream before they are sent again. After a crash of the process,
//     ferry relies on the window alone; it warns at start when the stream's
//     window is shorter than duplicate_window.
//   - Alerts first: the Source hands out every pending alert before any
//     telemetry, and the uplink asks it again for each batch, so an alert
//     raised while a backlog drains overtakes the backlog.
//   - Bounded: at most max_inflight records are out of the Source at once
//     (published and not yet acknowledged, or acknowledged and not yet
//     deleted), and at most max_inflight_bytes of messages are outstanding.
//   - Shutdown: when Run's context ends, outstanding publishes get
//     flush_timeout to be acknowledged; the rest goes back to the Source.
//     When Run returns, no record is in flight.
//
// # Live data and backlogs
//
// The Source serves each lane oldest first, so telemetry that arrives while
// a backlog drains queues behind it: its delay is the backlog divided by
// the drain rate minus the ingest rate, and it falls back to normal once
// the backlog is through (ferry_uplink_lag_seconds shows it). Draining in
// order keeps every subject's messages in time order in the stream.
//
// # Caveats
//
// Within a lane, order in the stream follows the Source's order, except
// that a record whose publish failed may land after records published
// after it. Consumers that need strict order sort by the scans' times. A
// record larger than the server's max_payload is sent in parts
// ("<id>-p1", "<id>-p2", …); a single sample larger than that is sent as a
// Bad sample without its value. A record that cannot be decoded is dropped,
// logged and counted (reason "corrupt"), since keeping it would stall every
// record behind it.
package uplink
