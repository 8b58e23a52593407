// Package web is ferry's one HTTP server: the local listener and
// everything served on it. It is built from an [Options] struct of funcs
// and small interfaces (after Prometheus' web.Handler, which takes its
// Options, not the engine): it knows nothing of the configuration file,
// the rule engine, the alert sinks or the drivers, only what they show.
// internal/gateway fills the Options from the running parts.
//
// Routes:
//
//	GET  /healthz                 the process is alive ("ok"); never authenticated
//	GET  /readyz                  every readiness check passes (200), or which one fails and why (503); ?format=json, ?verbose
//	GET  /metrics                 Prometheus text and OpenMetrics
//	GET  /                        the web console (see README.md): one page, its files under /assets/
//	GET  /api/devices             every device: state, current failure reason, last poll, errors by reason, points by quality
//	GET  /api/points              current value, quality, source time and sparkline of every point (?device=NAME, ?spark=0)
//	GET  /api/devices/{device}    one device, with its driver's request plan (Options.Plan; points_device.go)
//	GET  /api/search              devices and points matching every word of ?q= (name, unit, description, source), best first (points_search.go)
//	GET  /api/alerts/history      alert transitions, newest first: persisted and filtered with a Historian (historyapi.go), else the last since start
//	GET  /api/history             one or more points' local history (?device=&point=&from=&to=&step=&format=csv; needs a Historian)
//	GET  /api/health              buffer lanes, drops, uplink state, publish rate, ack latency, config, reload, version
//	GET  /api/status              a summary for scripts: version, gateway, config, buffer, uplink
//	GET  /api/alerts              the active alerts, oldest first (JSON array of ferry.AlertJSON)
//	GET  /api/alerts/stream       Server-Sent Events: the active alerts ("active" events), then every transition ("alert")
//	POST /api/alerts/{id}/ack     acknowledge; body (optional) {"by": "name"} (the only request that changes anything)
//	GET  /debug/pprof/…           Go's profiles, only with http.pprof: true (?seconds ≤ 60)
//
// What it takes: [Config] (the `http:` section, which internal/config
// embeds), a prometheus Gatherer and Registerer, the configured devices
// and points ([Catalog]), and funcs and interfaces that report the running
// parts: Devices (the drivers' status), [Alerts] (the rule engine's active
// alerts and acknowledge), Stream (the alert sinks' SSE hub, an
// [AlertStream]; a func because a reload rebuilds the sinks), Status (the
// gateway's own facts) and the readiness [Check]s. The console's own state
// is fed by [Server.Observe] (every scan) and [Server.Alert] (every alert
// transition), and [Server.SetCatalog] on a reload.
//
// Promises:
//
//   - Loopback by default (127.0.0.1:9440); "off" disables the listener and
//     Run then only waits for its context.
//   - Optional TLS (certificate re-read when its files change, optional
//     client certificates) and basic auth with a bcrypt hash. /healthz is
//     never authenticated: it says only "ok" and liveness probes must not
//     need a password. Every other path, /metrics, /readyz, the console
//     and acknowledge included, requires the password when basic_auth is
//     set.
//   - A request whose Host is not an IP address, localhost, the listen
//     host or one of http.allowed_hosts is answered 421 before any
//     handler runs (DNS rebinding; host.go).
//   - Wrong basic-auth passwords back a client off: after 5, it is
//     answered 429 for a delay that doubles up to 5 minutes (authlimit.go).
//   - A non-loopback bind without authentication, or with basic auth but
//     without TLS, is allowed and logged as a warning at start.
//   - Slow or hostile clients cannot pin the server: header, read and idle
//     timeouts, a header size limit, a request body limit, and a cap on
//     concurrent bcrypt checks.
//   - The console is read-only except acknowledge, which is refused to
//     cross-origin browser requests. Its responses forbid framing and
//     cross-origin scripts (Content-Security-Policy).
//   - Bounded memory. [Store] keeps, per configured point, the last
//     sample and a ring of buckets of DefaultStep (5 s) covering
//     http.sparklines (5 minutes, 60 buckets, by default), each holding
//     min, max and last as float32: 720 bytes per numeric point plus about
//     150 bytes for the last sample (one slice of slots per device that
//     points at the configuration's point info), so about 9 MB for 10,000
//     points with sparklines and 1.5 MB without. The ring
//     is allocated at a point's first numeric sample after its device's
//     sparklines were first asked for (a gateway nobody watches has
//     none); strings have none.
//     [History] keeps DefaultHistory (100) alert transitions.
//   - Cheap on the hot path: [Server.Observe] runs in the pipeline
//     goroutine for every scan: one lock, a device map look-up per scan
//     and, per sample, one name comparison (samples come in configuration
//     order) or a binary search; no allocation in steady state.
//   - Run shuts down gracefully: it stops accepting, cancels the requests'
//     context (ending event streams) and waits at most
//     Options.ShutdownTimeout for handlers to return.
//
// Caveats: readiness checks and the Options' funcs run in the request
// goroutine; each must return promptly (report a state the part already
// knows, do not dial). Values, sparklines and the history live in memory
// only; they start empty after a restart (the buffer and NATS hold the
// data). Rates on the health page are computed between successive reads
// of /api/health over up to a minute, so they show once the page has been
// open a few seconds.
package web
