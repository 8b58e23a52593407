// Package console is ferry's local web console: one page, served from the
// HTTP listener at "/", that shows a technician at the line whether each
// machine is connected, its values now, the active alerts (with an
// Acknowledge button) and whether data is getting out or piling up. It
// works without any internet: the HTML, CSS and JavaScript are plain
// files embedded in the binary (no CDN, no build step): 36 KB of assets,
// about 150 KB of stripped binary in all.
//
// The JSON API behind the page (see README.md):
//
//	GET /api/devices          every device: state, last poll, errors by reason, points by quality
//	GET /api/points           current value, quality, source time and sparkline of every point (?device=NAME, ?spark=0)
//	GET /api/alerts/history   the last alert transitions since start, newest first
//	GET /api/health           buffer lanes, drops, uplink state, publish rate, ack latency, config, reload, version
//
// and, from internal/alertapi: GET /api/alerts, GET /api/alerts/stream
// (Server-Sent Events, the page's live alerts) and POST
// /api/alerts/{id}/ack (the only request that changes anything).
//
// Promises:
//
//   - Read-only except acknowledge. Authentication is the listener's: when
//     http.basic_auth is set every path but /healthz needs it, the page,
//     the API and acknowledge included. Responses forbid framing and
//     cross-origin scripts (Content-Security-Policy).
//   - Bounded memory. [Store] keeps, per configured point, the last
//     sample and a ring of DefaultSlots (60) buckets of DefaultStep (5 s),
//     each holding min, max and last as float32: 720 bytes per numeric
//     point plus about 250 bytes of bookkeeping, so about 10 MB for
//     10,000 points. The ring is allocated at a point's first numeric
//     sample; strings have none. [History] keeps DefaultHistory (100)
//     alert transitions.
//   - Cheap on the hot path: [Store.Observe] runs in the pipeline goroutine
//     for every scan: one lock, two map look-ups per sample, no
//     allocation in steady state.
//
// Caveats: values, sparklines and the history live in memory only; they
// start empty after a restart (the buffer and NATS hold the data). Rates on
// the health page are computed between successive reads of /api/health
// over up to a minute, so they show once the page has been open a few
// seconds.
package console
