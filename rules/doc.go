// Package rules is ferry's rule engine: it turns samples into alerts on
// the gateway itself, so that a plant is told about an overheating press
// even when the uplink is down.
//
// A rule checks one thing about one or more points: a `when` expression
// (with an optional `clear` expression for hysteresis), a `rate` of
// change, a `stale` point (no Good sample for a while), a `quality`
// problem (Bad or Uncertain for a while), a `flatline` (a stuck sensor) or
// a statistical `anomaly` (rolling z-score or EWMA chart). Any rule may
// add an on-delay (`for`) and an off-delay (`clear_for`).
//
// Promises:
//
//   - Each alert has one stable id from raise to clear; each transition
//     (raised, acknowledged, cleared) is emitted exactly once, in order.
//   - Active alerts are kept in a ferry.StateStore: after a restart they
//     are still active, are not raised again, and clear normally.
//   - Only the rules that read a point run when a sample of it arrives;
//     time-based conditions run on a ticker. Evaluating a rule does not
//     allocate in steady state: expressions are compiled to Go closures
//     (see README.md for what falls back to expr's VM, which does).
//   - Non-Good samples never feed a value rule: a dead device is the job
//     of stale and quality rules.
//
// Caveats: durations are measured on the engine's clock when it sees a
// sample, not on the device's timestamps; the resolution of every delay
// is the tick (Options.Tick). Alert state is written by Run's goroutine
// shortly after each transition: a crash in that window may re-raise an
// alert (with a new id) or clear one twice.
package rules
