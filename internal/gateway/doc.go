// Package gateway is ferry's runtime: the one package that wires every
// part — drivers, the sample pipeline, the rule engine, the buffer, the
// uplink, the local alert sinks and the HTTP server — and runs them.
//
// New builds a Gateway from a loaded configuration (it opens the buffer and
// binds the HTTP listener, and starts nothing); Run starts every part and,
// when its context ends, shuts them down in pipeline order: drivers,
// pipeline, rules, buffer commit, uplink flush, sinks, buffer close, HTTP.
// Reload applies a new configuration as a table of prepare/commit stages:
// every changed part is built before any running part is touched, so a
// reload that cannot be applied changes nothing.
//
// Files:
//
//   - gateway.go: New, Run and the shutdown order.
//   - groups.go: the one place that knows the protocols — the Protocols
//     table the configuration loader decodes device entries with
//     (LoadConfig), grouping devices into drivers, building a group's
//     driver, forgetting what a removed device leaves behind. A new
//     protocol touches drivers/NAME and this file, nothing else.
//   - pipeline.go: scans from the drivers to the rules, then through the
//     reduction (internal/reduce: report by exception, aggregation) to the
//     buffer: one bounded queue with its drop counter.
//   - reload.go: Reload and its stages.
//   - alerts.go: where rule and buffer alerts go (buffer lane, sinks).
//   - web.go: what the HTTP server and the console are handed.
//   - runner.go: one part on its own goroutine, stopped with a bound.
package gateway
