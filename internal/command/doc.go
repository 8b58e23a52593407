// Package command is ferry's one command path (issue 19, DESIGN promise 8:
// never write without leave). Every way in — the NATS request subject, the
// HTTP API and console, the CLI through the API — hands the request's JSON
// to Service.Handle, which
//
//  1. parses it (malformed JSON, a missing or overlong id: refused);
//  2. refuses everything while commands.enabled is false;
//  3. answers a repeat of a known id with its stored reply, writing nothing
//     (a repeat that arrives while the first is still being written waits
//     for it);
//  4. checks, in order: device and point known, point writable (a `write:`
//     block), the value's type, the limits (min/max, allowed), the
//     deadline, the point's rate limit and its interlock (an expression in
//     the rules' language over current point values);
//  5. stores the id durably (fsync'd) with the command's "accepted" audit
//     event, in one commit;
//  6. writes through the device's driver (ferry.Writer), which reads the
//     point back and compares;
//  7. stores the reply with its audit event, in one commit, and replies.
//
// A refusal is stored too (with its audit event), so that a retry of the
// same id gets the same answer. A command found accepted but without a
// reply when the gateway starts (it was killed during the write) gets the
// reply "unknown" and is never retried: at most once on the machine.
//
// Audit events are ferry.Alerts of rule "command" that go into the
// buffer's alerts lane in the same transaction as the state they report,
// so each is shipped upstream exactly once, ahead of telemetry; they are
// also handed to the local sinks and logged. See docs/commands.md.
package command
